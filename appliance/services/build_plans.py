"""OS build plans (Image Streamer ``/rest/build-plans``): plan-script steps, run in
``serialNumber`` order, and the custom attribute definitions (type, constraints, default) that
deployment plans and server profiles fill in.

Password attributes: a default value is sealed with the appliance's SecretBox and kept apart
from the definitions (``sealed_values``); no response carries it. A set password reads back as
:data:`plans.tokens.MASK`, and that placeholder sent back (the SDK's update GETs, merges and PUTs
the whole object) keeps the stored value; an empty value clears it.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from appliance.models import BuildPlan
from appliance.query import CollectionQuery
from appliance.repositories.base import Page
from appliance.repositories.build_plans import BuildPlanRepository
from appliance.repositories.deployment_plans import DeploymentPlanRepository
from appliance.repositories.plan_scripts import PlanScriptRepository
from appliance.secretbox import SecretBox
from appliance.services.plan_scripts import SCRIPT_TYPES_FOR_PLAN, plan_script_uri, script_id_from_uri
from plans.attributes import CustomAttribute, is_secret, parse_attributes, validate_all
from plans.tokens import MASK

CATEGORY = "build-plans"
PATH = "/rest/build-plans"
PLAN_TYPES = tuple(SCRIPT_TYPES_FOR_PLAN)
MAX_STEPS = 200
MAX_ATTRIBUTES = 200


def build_plan_uri(plan_id: str) -> str:
    return f"{PATH}/{plan_id}"


def build_plan_id_from_uri(uri: str) -> str:
    """``/rest/build-plans/<id>`` (or a bare id) → ``<id>``; anything else is refused."""
    text = uri.strip().rstrip("/")
    if text.startswith(PATH + "/"):
        text = text[len(PATH) + 1:]
    if not text or "/" in text:
        raise InvalidInput(reason=f"{uri!r} is not a build plan URI ({PATH}/<id>)")
    return text


@dataclass(frozen=True)
class BuildStepDraft:
    serial_number: object  # HPE sends "1"; numbers are accepted too
    plan_script_uri: str
    parameters: str = ""


@dataclass(frozen=True)
class BuildPlanDraft:
    """What a client may set on a build plan."""

    name: str
    description: str
    plan_type: str
    steps: Sequence[BuildStepDraft] = ()
    custom_attributes: Sequence[Mapping[str, Any]] = ()


def seal_secrets(attributes: Sequence[CustomAttribute], given: Mapping[str, object], kept: Mapping[str, str],
                 secrets: SecretBox) -> tuple[dict[str, object], dict[str, str]]:
    """Split the password values out of ``given`` ({name: value}).

    Returns ``given`` with every password's plaintext (:data:`MASK` replaced by the kept value,
    decrypted, so that it can be validated) and the sealed values to store: a kept value stays
    as it was sealed, a new one is sealed, an empty one is dropped.
    """
    plain = dict(given)
    sealed: dict[str, str] = {}
    for attribute in attributes:
        if not is_secret(attribute) or attribute.name not in given:
            continue
        value = given[attribute.name]
        if value == MASK:
            if attribute.name in kept:
                plain[attribute.name] = secrets.open(kept[attribute.name])
                sealed[attribute.name] = kept[attribute.name]
            else:
                plain[attribute.name] = ""
        elif value is not None and value != "":
            sealed[attribute.name] = secrets.seal(str(value))
    return plain, sealed


def stored_definitions(attributes: Sequence[CustomAttribute]) -> list[dict[str, Any]]:
    """The definitions as stored: HPE's shape, a password's value always null."""
    return [{**a.to_hpe(), "value": None} if is_secret(a) else a.to_hpe() for a in attributes]


def definitions(plan: BuildPlan) -> list[CustomAttribute]:
    """The plan's attribute definitions (stored, so already valid), password values left empty."""
    return parse_attributes(plan.custom_attributes)


class BuildPlanService:
    def __init__(self, db: Session, secrets: SecretBox, clock: Clock = system_clock) -> None:
        self.plans = BuildPlanRepository(db)
        self.scripts = PlanScriptRepository(db)
        self.secrets = secrets
        self.clock = clock

    def list(self, query: CollectionQuery) -> Page[BuildPlan]:
        return self.plans.page(query)

    def get(self, plan_id: str) -> BuildPlan:
        plan = self.plans.get(plan_id)
        if plan is None:
            raise NotFound(kind="build plan", ident=plan_id)
        return plan

    def script_names(self, plan: BuildPlan) -> dict[str, str]:
        """{plan script id: name} for the plan's steps (``buildStep[].planScriptName``)."""
        return {i: s.name for i, s in self.scripts.many(step["planScriptId"] for step in plan.steps).items()}

    def create(self, draft: BuildPlanDraft, owner: str) -> BuildPlan:
        name, plan_type = self._checked(draft)
        self._ensure_name_free(name)
        steps = self._steps(draft.steps, plan_type)
        attributes, sealed = self._attributes(draft.custom_attributes, {})
        return self.plans.add(BuildPlan(
            name=name, description=draft.description, plan_type=plan_type, hp_provided=False, steps=steps,
            custom_attributes=attributes, sealed_values=sealed, created_by=owner,
        ))

    def update(self, plan_id: str, draft: BuildPlanDraft) -> BuildPlan:
        plan = self.get(plan_id)
        name, plan_type = self._checked(draft)
        self._ensure_name_free(name, keep=plan.id)
        if plan_type != plan.plan_type:
            users = DeploymentPlanRepository(self.plans.db).names_using_build_plan(plan.id)
            if users:
                raise Conflict(reason=f"the build plan {plan.name} cannot become a {plan_type} build plan: the "
                                      f"deployment plans {', '.join(users)} use it")
        steps = self._steps(draft.steps, plan_type)
        attributes, sealed = self._attributes(draft.custom_attributes, plan.sealed_values)
        plan.name, plan.description, plan.plan_type, plan.steps = name, draft.description, plan_type, steps
        plan.custom_attributes, plan.sealed_values, plan.modified = attributes, sealed, self.clock()
        return plan

    def delete(self, plan_id: str) -> None:
        """Refused (409, naming them) while deployment plans use the build plan."""
        plan = self.get(plan_id)
        users = DeploymentPlanRepository(self.plans.db).names_using_build_plan(plan.id)
        if users:
            raise Conflict(reason=f"the build plan {plan.name} is used by the deployment plans {', '.join(users)}")
        self.plans.delete(plan)

    # --- rules ---------------------------------------------------------------------------------
    def _checked(self, draft: BuildPlanDraft) -> tuple[str, str]:
        name = draft.name.strip()
        if not name:
            raise InvalidInput(reason="a build plan needs a name")
        plan_type = draft.plan_type.strip().lower()
        if plan_type not in PLAN_TYPES:
            raise InvalidInput(reason=f"oeBuildPlanType {draft.plan_type!r} is not one of {', '.join(PLAN_TYPES)}",
                               nested=[("oeBuildPlanType", f"must be one of {', '.join(PLAN_TYPES)}")])
        return name, plan_type

    def _ensure_name_free(self, name: str, keep: str | None = None) -> None:
        existing = self.plans.by_name(name)
        if existing is not None and existing.id != keep:
            raise AlreadyExists(kind="build plan", name=name)

    def _steps(self, drafts: Sequence[BuildStepDraft], plan_type: str) -> builtins.list[dict[str, Any]]:
        """The steps in serialNumber order; every problem is reported at once."""
        if len(drafts) > MAX_STEPS:
            raise InvalidInput(reason=f"a build plan has at most {MAX_STEPS} steps")
        errors: list[tuple[str, str]] = []
        parsed: list[tuple[int, str, str]] = []
        seen: set[int] = set()
        for index, step in enumerate(drafts):
            where = f"buildStep[{index}]"
            serial = _serial(step.serial_number)
            if serial is None:
                errors.append((f"{where}.serialNumber",
                               f"serialNumber {step.serial_number!r} is not a positive whole number"))
            elif serial in seen:
                errors.append((f"{where}.serialNumber", f"serialNumber {serial} is used by more than one step"))
            else:
                seen.add(serial)
            try:
                script_id = script_id_from_uri(step.plan_script_uri)
            except InvalidInput as exc:
                errors.append((f"{where}.planScriptUri", exc.message))
                continue
            if serial is not None:
                parsed.append((serial, script_id, step.parameters))
        scripts = self.scripts.many(script_id for _, script_id, _ in parsed)
        allowed = SCRIPT_TYPES_FOR_PLAN[plan_type]
        for serial, script_id, _ in parsed:
            script = scripts.get(script_id)
            where = f"buildStep {serial}"
            if script is None:
                errors.append((where, f"the plan script {plan_script_uri(script_id)} does not exist"))
            elif script.plan_type not in allowed:
                errors.append((where, f"the plan script {script.name} is a {script.plan_type} script; a {plan_type} "
                                      f"build plan runs only {' and '.join(allowed)} scripts"))
        if errors:
            raise InvalidInput(reason="; ".join(f"{where}: {why}" for where, why in errors), nested=errors)
        return [{"serialNumber": serial, "planScriptId": script_id, "parameters": parameters}
                for serial, script_id, parameters in sorted(parsed)]

    def _attributes(self, raw: Sequence[Mapping[str, Any]],
                    kept: Mapping[str, str]) -> tuple[builtins.list[dict[str, Any]], dict[str, str]]:
        if len(raw) > MAX_ATTRIBUTES:
            raise InvalidInput(reason=f"a build plan has at most {MAX_ATTRIBUTES} custom attributes")
        attributes = parse_attributes(raw)
        defaults = {a.name: a.value for a in attributes if is_secret(a)}
        plain, sealed = seal_secrets(attributes, defaults, kept, self.secrets)
        checked = [dataclasses.replace(a, value=str(plain[a.name])) if a.name in plain else a for a in attributes]
        validate_all(checked, {})  # the defaults must fit their own constraints
        return stored_definitions(attributes), sealed


def _serial(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    text = str(raw).strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        return None
    return int(text)
