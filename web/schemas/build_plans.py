"""OS build plan resources (Image Streamer ``OeBuildPlanV5`` shape)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from appliance.models import BuildPlan
from appliance.services.build_plans import CATEGORY, BuildPlanDraft, BuildStepDraft, build_plan_uri
from appliance.services.plan_scripts import plan_script_uri
from plans.tokens import MASK
from web.schemas.common import Strict, resource_header


class BuildStepIn(Strict):
    """One ``buildStep`` entry; ``planScriptName`` (which responses carry) is ignored."""

    model_config = Strict.model_config | {"extra": "ignore"}
    serial_number: int | str = Field(alias="serialNumber")
    plan_script_uri: str = Field(alias="planScriptUri", min_length=1, max_length=255)
    parameters: str | None = Field(default=None, max_length=65536)


class BuildPlanCreate(Strict):
    """POST /rest/build-plans. A PUT sends the whole object back, so read-only fields are ignored
    rather than refused; ``hpProvided`` is accepted and ignored (only HPE's artifacts are)."""

    model_config = Strict.model_config | {"extra": "ignore"}
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=4096)
    oe_build_plan_type: str = Field(alias="oeBuildPlanType", min_length=1, max_length=16)
    build_step: list[BuildStepIn] | None = Field(default=None, alias="buildStep")
    # Checked by plans.attributes.parse_attributes, which names each bad entry.
    custom_attributes: list[Any] | None = Field(default=None, alias="customAttributes")
    hp_provided: bool | str | None = Field(default=None, alias="hpProvided")

    def draft(self) -> BuildPlanDraft:
        steps = [BuildStepDraft(s.serial_number, s.plan_script_uri, s.parameters or "") for s in self.build_step or ()]
        return BuildPlanDraft(self.name, self.description or "", self.oe_build_plan_type, steps,
                              self.custom_attributes or [])


class BuildPlanUpdate(BuildPlanCreate):
    """PUT /rest/build-plans/{id}: the full object."""


def public_attributes(stored: list[dict[str, Any]], sealed: Mapping[str, str]) -> list[dict[str, Any]]:
    """Definitions as sent to a client: a password's value is never returned, only MASK when set."""
    out = []
    for attribute in stored:
        entry = dict(attribute)
        if entry.get("type") == "password":
            entry["value"] = MASK if attribute["name"] in sealed else ""
        out.append(entry)
    return out


def build_plan_public(plan: BuildPlan, script_names: Mapping[str, str]) -> dict[str, Any]:
    body = resource_header(
        "OeBuildPlanV5", CATEGORY, build_plan_uri(plan.id), plan.id, plan.name, plan.etag,
        plan.created, plan.modified, description=plan.description, state="Active",
    )
    body.update({
        "oeBuildPlanType": plan.plan_type,
        "hpProvided": plan.hp_provided,
        "buildStep": [
            {"serialNumber": str(step["serialNumber"]), "planScriptUri": plan_script_uri(step["planScriptId"]),
             "planScriptName": script_names.get(step["planScriptId"], ""), "parameters": step["parameters"]}
            for step in plan.steps
        ],
        "customAttributes": public_attributes(plan.custom_attributes, plan.sealed_values),
        "dependentArtifacts": [],
        "buildPlanid": plan.id,
        "createdBy": plan.created_by,
    })
    return body
