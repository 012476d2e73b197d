"""Plan scripts (Image Streamer ``/rest/plan-scripts``): guestfish command lists that build plans
run in order against an OS volume. The custom attributes a script needs are not declared: they
are the ``@Token@`` names found in its content (``plans.tokens.names``), recomputed on every read
so that they always match the text."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from appliance.models import BuildPlan, PlanScript
from appliance.query import CollectionQuery
from appliance.repositories.base import Page
from appliance.repositories.build_plans import BuildPlanRepository
from appliance.repositories.plan_scripts import PlanScriptRepository
from plans import tokens

CATEGORY = "plan-scripts"
PATH = "/rest/plan-scripts"
PLAN_TYPES = ("deploy", "capture", "general")
#: Which plan scripts a build plan of each ``oeBuildPlanType`` may run.
SCRIPT_TYPES_FOR_PLAN: dict[str, tuple[str, ...]] = {"deploy": ("deploy", "general"), "capture": ("capture", "general")}
MAX_CONTENT = 1 << 20  # characters; HPE's largest published script is about 30 kB


def plan_script_uri(script_id: str) -> str:
    return f"{PATH}/{script_id}"


def script_id_from_uri(uri: str) -> str:
    """``/rest/plan-scripts/<id>`` (or a bare id) → ``<id>``; anything else is refused."""
    text = uri.strip().rstrip("/")
    if text.startswith(PATH + "/"):
        text = text[len(PATH) + 1:]
    if not text or "/" in text:
        raise InvalidInput(reason=f"{uri!r} is not a plan script URI ({PATH}/<id>)")
    return text


def attribute_names(script: PlanScript) -> list[str]:
    """The custom attributes the script uses, sorted (``ManagementNIC`` for ``@ManagementNIC.mac@``)."""
    return tokens.names(script.content)


@dataclass(frozen=True)
class PlanScriptDraft:
    """What a client may set on a plan script."""

    name: str
    description: str
    plan_type: str
    content: str


class PlanScriptService:
    def __init__(self, db: Session, clock: Clock = system_clock) -> None:
        self.scripts = PlanScriptRepository(db)
        self.clock = clock

    def list(self, query: CollectionQuery) -> Page[PlanScript]:
        return self.scripts.page(query)

    def get(self, script_id: str) -> PlanScript:
        script = self.scripts.get(script_id)
        if script is None:
            raise NotFound(kind="plan script", ident=script_id)
        return script

    def create(self, draft: PlanScriptDraft, owner: str) -> PlanScript:
        draft = self._checked(draft)
        self._ensure_name_free(draft.name)
        return self.scripts.add(PlanScript(
            name=draft.name, description=draft.description, plan_type=draft.plan_type, content=draft.content,
            hp_provided=False, created_by=owner,
        ))

    def update(self, script_id: str, draft: PlanScriptDraft) -> PlanScript:
        script = self.get(script_id)
        draft = self._checked(draft)
        self._ensure_name_free(draft.name, keep=script.id)
        if draft.plan_type != script.plan_type:
            self._check_type_change(script, draft.plan_type)
        script.name, script.description = draft.name, draft.description
        script.plan_type, script.content = draft.plan_type, draft.content
        script.modified = self.clock()
        return script

    def delete(self, script_id: str) -> None:
        """Refused (409, naming them) while build plans run the script."""
        script = self.get(script_id)
        users = self.used_by(script.id)
        if users:
            raise Conflict(reason=f"the plan script {script.name} is used by the build plans "
                                  f"{', '.join(p.name for p in users)}")
        self.scripts.delete(script)

    def used_by(self, script_id: str) -> Sequence[BuildPlan]:
        return BuildPlanRepository(self.scripts.db).using_script(self.get(script_id).id)

    def differences(self, script_id: str, content: str) -> dict[str, Any]:
        """What would change if ``content`` replaced the script's: a unified diff, and the custom
        attributes added and removed."""
        script = self.get(script_id)
        diff = difflib.unified_diff(script.content.splitlines(), content.splitlines(),
                                    f"{script.name} (current)", f"{script.name} (new)", lineterm="")
        before, after = set(attribute_names(script)), set(tokens.names(content))
        return {
            "uri": plan_script_uri(script.id),
            "name": script.name,
            "changed": script.content != content,
            "differences": "\n".join(diff),
            "addedCustomAttributes": sorted(after - before),
            "removedCustomAttributes": sorted(before - after),
        }

    # --- rules ---------------------------------------------------------------------------------
    def _checked(self, draft: PlanScriptDraft) -> PlanScriptDraft:
        name = draft.name.strip()
        if not name:
            raise InvalidInput(reason="a plan script needs a name")
        plan_type = draft.plan_type.strip().lower()
        if plan_type not in PLAN_TYPES:
            raise InvalidInput(reason=f"planType {draft.plan_type!r} is not one of {', '.join(PLAN_TYPES)}",
                               nested=[("planType", f"must be one of {', '.join(PLAN_TYPES)}")])
        if len(draft.content) > MAX_CONTENT:
            raise InvalidInput(reason=f"the content is longer than {MAX_CONTENT} characters")
        if "\x00" in draft.content:
            raise InvalidInput(reason="the content contains a NUL character")
        return PlanScriptDraft(name, draft.description, plan_type, draft.content)

    def _ensure_name_free(self, name: str, keep: str | None = None) -> None:
        existing = self.scripts.by_name(name)
        if existing is not None and existing.id != keep:
            raise AlreadyExists(kind="plan script", name=name)

    def _check_type_change(self, script: PlanScript, new_type: str) -> None:
        """A script may not become unfit for a build plan that runs it (deploy scripts in capture
        plans and the reverse)."""
        misfits = [p.name for p in self.used_by(script.id) if new_type not in SCRIPT_TYPES_FOR_PLAN[p.plan_type]]
        if misfits:
            raise Conflict(reason=f"the plan script {script.name} cannot become a {new_type} script: the "
                                  f"{', '.join(misfits)} build plan(s) of another type use it")
