"""Artifact bundle resources (Image Streamer ``ArtifactsBundle`` shape)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from appliance.models import ArtifactBundle
from appliance.services.artifact_bundles import CATEGORY, KINDS, BundleSelection, artifact_bundle_uri
from web.schemas.common import Strict, resource_header, ts


class ArtifactRef(BaseModel):
    """``{resourceUri, readOnly}``, as the SDK's create sends each chosen artifact."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    resource_uri: str = Field(alias="resourceUri", min_length=1, max_length=512)
    read_only: bool | None = Field(default=None, alias="readOnly")


class ArtifactBundleCreate(Strict):
    """POST /rest/artifact-bundles (JSON): a new bundle of the chosen artifacts."""

    model_config = Strict.model_config | {"extra": "ignore"}
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=4096)
    read_only: bool = Field(default=False, alias="readOnly")
    plan_scripts: list[ArtifactRef] = Field(default_factory=list, alias="planScripts", max_length=2000)
    build_plans: list[ArtifactRef] = Field(default_factory=list, alias="buildPlans", max_length=2000)
    golden_images: list[ArtifactRef] = Field(default_factory=list, alias="goldenImages", max_length=200)
    deployment_plans: list[ArtifactRef] = Field(default_factory=list, alias="deploymentPlans", max_length=2000)

    def selection(self) -> BundleSelection:
        return BundleSelection(
            self.name, self.description or "", self.read_only,
            [r.resource_uri for r in self.plan_scripts], [r.resource_uri for r in self.build_plans],
            [r.resource_uri for r in self.golden_images], [r.resource_uri for r in self.deployment_plans])


class ArtifactBundleUpdate(Strict):
    """PUT /rest/artifact-bundles/{id} (without ``extract``): rename. The SDK sends the whole
    object back, so the other fields are ignored."""

    model_config = Strict.model_config | {"extra": "ignore"}
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=4096)


def artifact_bundle_public(bundle: ArtifactBundle) -> dict[str, Any]:
    uri = artifact_bundle_uri(bundle.id)
    body = resource_header("ArtifactsBundle", CATEGORY, uri, bundle.id, bundle.name, bundle.etag, bundle.created,
                           bundle.modified, description=bundle.description, state="Active")
    count = 0
    for kind in KINDS:
        imported = bundle.imported.get(kind, {})
        entries = bundle.contents.get(kind, [])
        count += len(entries)
        # resourceUri: the artifact here once the bundle has been extracted (null before).
        body[kind] = [{"name": e["name"], "bundleId": e["id"], "resourceUri": imported.get(e["id"]),
                       "readOnly": bundle.read_only} for e in entries]
    body.update({
        "readOnly": bundle.read_only,
        "artifactsCount": count,
        "size": bundle.size,
        "checkSum": bundle.sha256,
        "downloadURI": f"/rest/artifact-bundles/download/{bundle.id}",
        "importedBundle": bundle.origin == "uploaded",
        "extracted": bundle.extracted is not None,
        "extractedAt": ts(bundle.extracted),
        "timeStamp": bundle.bundle_timestamp,
        "artifactType": bundle.artifact_type,
        "createdBy": bundle.created_by,
    })
    return body
