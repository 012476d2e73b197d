"""Deployment plan resources (Image Streamer ``OEDeploymentPlan``) and OneView's read-only
``Osdp`` view of them."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from appliance.errors import InvalidInput
from appliance.models import BuildPlan, DeploymentPlan, GoldenImage
from appliance.services.build_plans import build_plan_uri
from appliance.services.deployment_plans import (
    CATEGORY,
    OSDP_CATEGORY,
    DeploymentPlanDraft,
    PlanAttribute,
    deployment_plan_uri,
    osdp_uri,
)
from appliance.services.golden_images import golden_image_uri
from web.schemas.common import Strict, resource_header


class DeploymentPlanCreate(Strict):
    """POST /rest/deployment-plans. HPE spells ``oeBuildPlanURI`` and ``goldenImageURI``; the Go SDK
    ``...Uri``: both are accepted. A PUT sends the whole object back, so read-only fields are
    ignored; ``hpProvided`` is accepted (bool or "false") and ignored."""

    model_config = Strict.model_config | {"extra": "ignore"}
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=4096)
    oe_build_plan_uri: str | None = Field(default=None, alias="oeBuildPlanURI", max_length=255)
    oe_build_plan_uri_lower: str | None = Field(default=None, alias="oeBuildPlanUri", max_length=255)
    golden_image_uri: str | None = Field(default=None, alias="goldenImageURI", max_length=255)
    golden_image_uri_lower: str | None = Field(default=None, alias="goldenImageUri", max_length=255)
    # Checked by the service against the build plan's definitions.
    custom_attributes: list[Any] | None = Field(default=None, alias="customAttributes")
    hp_provided: bool | str | None = Field(default=None, alias="hpProvided")
    # Ingot's addition: the installer an installer deploy boots (plans/installer.py); checked by the service.
    installer: Any = None

    def draft(self) -> DeploymentPlanDraft:
        for upper, lower, field in ((self.oe_build_plan_uri, self.oe_build_plan_uri_lower, "oeBuildPlan"),
                                    (self.golden_image_uri, self.golden_image_uri_lower, "goldenImage")):
            if upper and lower and upper != lower:
                raise InvalidInput(reason=f"{field}URI and {field}Uri name different resources; send one")
        return DeploymentPlanDraft(
            self.name, self.description or "", self.oe_build_plan_uri or self.oe_build_plan_uri_lower or "",
            self.golden_image_uri or self.golden_image_uri_lower or None, self.custom_attributes or [],
            self.installer, "installer" in self.model_fields_set)


class DeploymentPlanUpdate(DeploymentPlanCreate):
    """PUT /rest/deployment-plans/{id}: the full object."""


def attribute_public(attribute: PlanAttribute) -> dict[str, Any]:
    return {**attribute.definition.to_hpe(), "value": attribute.value, "id": attribute.id,
            "visible": attribute.visible, "editable": attribute.editable}


def deployment_plan_public(plan: DeploymentPlan, build_plan: BuildPlan,
                           attributes: list[PlanAttribute]) -> dict[str, Any]:
    body = resource_header(
        "OEDeploymentPlanV5", CATEGORY, deployment_plan_uri(plan.id), plan.id, plan.name, plan.etag,
        plan.created, plan.modified, description=plan.description, state="Active",
    )
    body.update({
        "oeBuildPlanURI": build_plan_uri(build_plan.id),
        "oeBuildPlanName": build_plan.name,
        "goldenImageURI": golden_image_uri(plan.golden_image_id) if plan.golden_image_id else "",
        "installer": plan.installer,
        "hpProvided": plan.hp_provided,
        "customAttributes": [attribute_public(a) for a in attributes],
        "dependentArtifacts": [],
        "createdBy": plan.created_by,
    })
    return body


def osdp_public(plan: DeploymentPlan, attributes: list[PlanAttribute], image: GoldenImage | None,
                appliance_name: str, appliance_address: str) -> dict[str, Any]:
    """OneView's ``Osdp``: ``nativePlanUri`` and ``deploymentApplianceIpv4`` lead a client to the
    Image Streamer object; ``additionalParameters`` are the attributes a server profile may see."""
    body = resource_header(
        "Osdp", OSDP_CATEGORY, osdp_uri(plan.id), plan.id, plan.name, plan.etag,
        plan.created, plan.modified, description=plan.description, state="Active",
    )
    body.update({
        "nativePlanUri": deployment_plan_uri(plan.id),
        "deploymentType": "I3S",
        "osType": "",
        "architecture": "x64",
        "deploymentAppliance": appliance_name,
        "deploymentApplianceIpv4": appliance_address,
        "osdpSize": f"{-(-image.virtual_size // (1 << 30))}GB" if image is not None else "",
        "additionalParameters": [
            {"caId": a.id, "name": a.definition.name, "caType": a.definition.type.value, "caEditable": a.editable,
             "caConstraints": a.definition.raw_constraints, "description": a.definition.description,
             "value": a.value}
            for a in attributes if a.visible
        ],
    })
    return body
