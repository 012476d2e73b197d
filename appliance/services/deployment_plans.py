"""Deployment plans (Image Streamer ``/rest/deployment-plans``): a deploy build plan, an optional
golden image (none for installer-based or empty-volume plans) and per-attribute overrides.

Each attribute of the build plan appears on the deployment plan with a ``value`` (the override,
else the build plan's default), ``visible`` (shown in OneView's server profile) and ``editable``
(a profile may change it), both true unless the plan says otherwise. Override values are checked
against the build plan's definitions (``plans.attributes.validate_all``). Password overrides are
sealed apart, as the build plan's defaults are (see appliance/services/build_plans.py).
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from appliance.models import BuildPlan, DeploymentPlan, GoldenImage, ServerProfile
from appliance.query import CollectionQuery
from appliance.repositories.base import Page
from appliance.repositories.build_plans import BuildPlanRepository
from appliance.repositories.deployment_plans import DeploymentPlanRepository
from appliance.repositories.golden_images import GoldenImageRepository
from appliance.secretbox import SecretBox
from appliance.services.build_plans import build_plan_id_from_uri, definitions, seal_secrets
from plans.attributes import CustomAttribute, is_secret, validate_all
from plans.installer import InstallerSpecError, parse_installer
from plans.tokens import MASK

CATEGORY = "deployment-plans"
PATH = "/rest/deployment-plans"
OSDP_CATEGORY = "os-deployment-plans"
OSDP_PATH = "/rest/os-deployment-plans"
GOLDEN_IMAGES = "/rest/golden-images"


def deployment_plan_uri(plan_id: str) -> str:
    return f"{PATH}/{plan_id}"


def osdp_uri(plan_id: str) -> str:
    """OneView's mirror of the deployment plan shares its id."""
    return f"{OSDP_PATH}/{plan_id}"


def attribute_id(plan_id: str, name: str) -> str:
    """A stable ``id`` for a deployment plan's attribute (HPE gives each one)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{deployment_plan_uri(plan_id)}#{name}"))


@dataclass(frozen=True)
class DeploymentPlanDraft:
    """What a client may set on a deployment plan."""

    name: str
    description: str
    build_plan_uri: str
    golden_image_uri: str | None = None
    custom_attributes: Sequence[Any] = ()
    installer: object = None  # the client's ``installer`` object, None for none
    installer_given: bool = True  # False: an update keeps the plan's installer (a client that never heard of it)


@dataclass(frozen=True)
class PlanAttribute:
    """One attribute as the deployment plan presents it."""

    id: str
    definition: CustomAttribute
    value: str  # a password's is MASK when set, else ""
    visible: bool
    editable: bool


class DeploymentPlanService:
    def __init__(self, db: Session, secrets: SecretBox, clock: Clock = system_clock) -> None:
        self.db = db
        self.plans = DeploymentPlanRepository(db)
        self.build_plans = BuildPlanRepository(db)
        self.images = GoldenImageRepository(db)
        self.secrets = secrets
        self.clock = clock

    def list(self, query: CollectionQuery) -> Page[DeploymentPlan]:
        return self.plans.page(query)

    def get(self, plan_id: str) -> DeploymentPlan:
        plan = self.plans.get(plan_id)
        if plan is None:
            raise NotFound(kind="deployment plan", ident=plan_id)
        return plan

    def build_plan(self, plan: DeploymentPlan) -> BuildPlan:
        build_plan = self.build_plans.get(plan.build_plan_id)
        if build_plan is None:  # pragma: no cover - the foreign key forbids it
            raise NotFound(kind="build plan", ident=plan.build_plan_id)
        return build_plan

    def golden_image(self, plan: DeploymentPlan) -> GoldenImage | None:
        return self.images.get(plan.golden_image_id) if plan.golden_image_id else None

    def attributes(self, plan: DeploymentPlan, build_plan: BuildPlan | None = None) -> builtins.list[PlanAttribute]:
        """The build plan's attributes with this plan's overrides and flags applied."""
        build_plan = build_plan or self.build_plan(plan)
        overrides = {o["name"]: o for o in plan.custom_attributes}
        out = []
        for definition in definitions(build_plan):
            override = overrides.get(definition.name, {})
            if is_secret(definition):
                is_set = definition.name in plan.sealed_values or definition.name in build_plan.sealed_values
                value = MASK if is_set else ""
            elif override.get("value") is not None:
                value = str(override["value"])
            else:
                value = definition.value or ""
            out.append(PlanAttribute(attribute_id(plan.id, definition.name), definition, value,
                                     bool(override.get("visible", True)), bool(override.get("editable", True))))
        return out

    def create(self, draft: DeploymentPlanDraft, owner: str) -> DeploymentPlan:
        name = self._name(draft.name)
        self._ensure_name_free(name)
        build_plan = self._build_plan(draft.build_plan_uri)
        golden_image_id = self._golden_image(draft.golden_image_uri)
        installer = self._installer(draft.installer, golden_image_id)
        overrides, sealed = self._overrides(draft.custom_attributes, build_plan, {})
        return self.plans.add(DeploymentPlan(
            name=name, description=draft.description, build_plan_id=build_plan.id, golden_image_id=golden_image_id,
            installer=installer, hp_provided=False, custom_attributes=overrides, sealed_values=sealed,
            created_by=owner,
        ))

    def update(self, plan_id: str, draft: DeploymentPlanDraft) -> DeploymentPlan:
        plan = self.get(plan_id)
        name = self._name(draft.name)
        self._ensure_name_free(name, keep=plan.id)
        build_plan = self._build_plan(draft.build_plan_uri)
        golden_image_id = self._golden_image(draft.golden_image_uri)
        installer = self._installer(draft.installer if draft.installer_given else plan.installer, golden_image_id)
        # Kept passwords stay only while the plan keeps its build plan.
        kept = plan.sealed_values if build_plan.id == plan.build_plan_id else {}
        overrides, sealed = self._overrides(draft.custom_attributes, build_plan, kept)
        plan.name, plan.description, plan.build_plan_id = name, draft.description, build_plan.id
        plan.golden_image_id, plan.custom_attributes, plan.sealed_values = golden_image_id, overrides, sealed
        plan.installer = installer
        plan.modified = self.clock()
        return plan

    def delete(self, plan_id: str) -> None:
        plan = self.get(plan_id)
        users = self.used_by(plan.id)
        if users:
            raise Conflict(reason=f"the deployment plan {plan.name} is used by the server profiles "
                                  f"{', '.join(p.name for p in users)}")
        self.plans.delete(plan)

    def used_by(self, plan_id: str) -> builtins.list[ServerProfile]:
        return list(self.db.scalars(select(ServerProfile).where(ServerProfile.deployment_plan_id == plan_id)
                                    .order_by(ServerProfile.name)))

    # --- rules ---------------------------------------------------------------------------------
    @staticmethod
    def _name(raw: str) -> str:
        name = raw.strip()
        if not name:
            raise InvalidInput(reason="a deployment plan needs a name")
        return name

    def _ensure_name_free(self, name: str, keep: str | None = None) -> None:
        existing = self.plans.by_name(name)
        if existing is not None and existing.id != keep:
            raise AlreadyExists(kind="deployment plan", name=name)

    def _build_plan(self, uri: str) -> BuildPlan:
        if not uri.strip():
            raise InvalidInput(reason="oeBuildPlanURI is required", nested=[("oeBuildPlanURI", "is required")])
        build_plan = self.build_plans.get(build_plan_id_from_uri(uri))
        if build_plan is None:
            raise InvalidInput(reason=f"oeBuildPlanURI: the build plan {uri} does not exist",
                               nested=[("oeBuildPlanURI", "no such build plan")])
        if build_plan.plan_type != "deploy":
            raise InvalidInput(reason=f"oeBuildPlanURI: {build_plan.name} is a {build_plan.plan_type} build plan; a "
                                      "deployment plan needs a deploy build plan")
        return build_plan

    def _golden_image(self, uri: str | None) -> str | None:
        text = (uri or "").strip().rstrip("/")
        if not text:
            return None  # an installer-based or empty-volume plan
        image_id = text[len(GOLDEN_IMAGES) + 1:] if text.startswith(GOLDEN_IMAGES + "/") else text
        if "/" in image_id or self.images.get(image_id) is None:
            raise InvalidInput(reason=f"goldenImageURI: the golden image {uri} does not exist",
                               nested=[("goldenImageURI", "no such golden image")])
        return image_id

    @staticmethod
    def _installer(raw: object, golden_image_id: str | None) -> dict[str, Any] | None:
        """The installer as stored (checked and normalised), or None; a plan deploys an image or runs an
        installer, never both."""
        if raw is None:
            return None
        if golden_image_id is not None:
            raise InvalidInput(reason="a deployment plan deploys a golden image or runs an installer, not both: send "
                                      "goldenImageURI or installer", nested=[("installer", "not with goldenImageURI")])
        try:
            return parse_installer(raw).public()
        except InstallerSpecError as exc:
            raise InvalidInput(reason=str(exc), nested=[(exc.field, exc.message)]) from None

    def _overrides(self, raw: Sequence[Any], build_plan: BuildPlan,
                   kept: Mapping[str, str]) -> tuple[builtins.list[dict[str, Any]], dict[str, str]]:
        defined = definitions(build_plan)
        by_name = {a.name: a for a in defined}
        errors: list[tuple[str, str]] = []
        entries: dict[str, Mapping[str, Any]] = {}
        for index, entry in enumerate(raw):
            where = f"customAttributes[{index}]"
            name = entry.get("name") if isinstance(entry, Mapping) else None
            if not isinstance(entry, Mapping) or not isinstance(name, str) or not name:
                errors.append((where, "expected an object with a name"))
            elif name not in by_name:
                errors.append((name, f"the build plan {build_plan.name} has no custom attribute of this name"))
            elif name in entries:
                errors.append((name, "given twice"))
            else:
                flags = [(flag, entry.get(flag, True)) for flag in ("visible", "editable")]
                bad = [flag for flag, v in flags if _flag(v) is None]
                if bad:
                    errors.append((name, f"{' and '.join(bad)} must be true or false"))
                entries[name] = entry
        if errors:
            raise InvalidInput(reason="; ".join(f"{where}: {why}" for where, why in errors), nested=errors)
        given = {name: e["value"] for name, e in entries.items() if e.get("value") is not None}
        plain, sealed = seal_secrets(defined, given, kept, self.secrets)
        validate_all(defined, plain)
        overrides = []
        for name, entry in entries.items():
            value = given.get(name)
            if is_secret(by_name[name]) or value is None:
                stored = None
            elif isinstance(value, Mapping):
                stored = json.dumps(dict(value), separators=(",", ":"))
            elif isinstance(value, bool):
                stored = "true" if value else "false"
            else:
                stored = str(value)
            overrides.append({"name": name, "value": stored, "visible": _flag(entry.get("visible", True)),
                              "editable": _flag(entry.get("editable", True))})
        return overrides, sealed


def _flag(raw: object) -> bool | None:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    return None
