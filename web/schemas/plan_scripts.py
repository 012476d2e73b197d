"""Plan script resources (Image Streamer ``PlanScript`` shape)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from appliance.models import BuildPlan, PlanScript
from appliance.services.plan_scripts import CATEGORY, PlanScriptDraft, attribute_names, plan_script_uri
from web.schemas.common import Strict, resource_header


class PlanScriptCreate(Strict):
    """POST /rest/plan-scripts. The SDK adds ``type``; a PUT sends the whole object back, so
    read-only fields (``uri``, ``eTag``, ``customAttributes``, ...) are ignored rather than refused.
    ``hpProvided`` is accepted (as a bool or, as HPE's examples send it, a string) and ignored:
    only HPE's own artifacts are hpProvided."""

    model_config = Strict.model_config | {"extra": "ignore"}
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=4096)
    plan_type: str = Field(alias="planType", min_length=1, max_length=16)
    content: str
    hp_provided: bool | str | None = Field(default=None, alias="hpProvided")

    def draft(self) -> PlanScriptDraft:
        return PlanScriptDraft(self.name, self.description or "", self.plan_type, self.content)


class PlanScriptUpdate(PlanScriptCreate):
    """PUT /rest/plan-scripts/{id}: the full object (name, description, planType, content change)."""


def plan_script_public(script: PlanScript) -> dict[str, Any]:
    names = attribute_names(script)
    body = resource_header(
        "PlanScript", CATEGORY, plan_script_uri(script.id), script.id, script.name, script.etag,
        script.created, script.modified, description=script.description, state="Active",
    )
    body.update({
        "planType": script.plan_type,
        "content": script.content,
        "hpProvided": script.hp_provided,
        # As HPE's API (and its Go SDK's model) has it: a JSON-encoded string, not a list.
        "customAttributes": json.dumps([{"name": name, "value": ""} for name in names]),
        "dependentArtifacts": [],
        # Ingot's: the same names as a plain list.
        "customAttributeNames": names,
        "createdBy": script.created_by,
    })
    return body


def used_by_public(plans: Sequence[BuildPlan]) -> list[dict[str, Any]]:
    """GET /rest/plan-scripts/{id}/usedby/readonly: the build plans that run the script."""
    return [{"name": p.name, "uri": f"/rest/build-plans/{p.id}", "category": "build-plans",
             "oeBuildPlanType": p.plan_type, "readOnly": p.hp_provided} for p in plans]
