"""OS volume resources (Image Streamer ``OeVolume`` shape) and Ingot's request to make one."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from appliance.models import OsVolume
from appliance.services.golden_images import golden_image_uri
from appliance.services.os_volumes import CATEGORY, os_volume_uri
from golden_images.nbd import NbdExport
from web.schemas.common import Strict, resource_header


class OsVolumeCreate(Strict):
    """POST /rest/os-volumes (Ingot's; Image Streamer makes volumes only while deploying)."""

    name: str = Field(min_length=1, max_length=255)
    golden_image_uri: str = Field(alias="goldenImageUri", min_length=1, max_length=255)
    size: int | None = Field(default=None, gt=0, description="Bytes; at least the golden image's virtual size.")
    full_clone: bool = Field(default=False, alias="fullClone")

    def golden_image_id(self) -> str:
        return self.golden_image_uri.rstrip("/").rsplit("/", 1)[-1]


class OsVolumeExport(Strict):
    """POST /rest/os-volumes/{id}/export (Ingot's): flatten the volume into a downloadable file."""

    format: Literal["raw", "qcow2"] = "raw"


class OsVolumePersonalize(Strict):
    """POST /rest/os-volumes/{id}/personalize: run a deployment plan's build plan on the volume.

    ``customAttributes`` as HPE's deployment plans name them, or ``osCustomAttributes`` as a server
    profile's ``osDeploymentSettings`` does (NIC values may be flattened, ``Name.ipaddress``)."""

    deployment_plan_uri: str = Field(alias="deploymentPlanUri", min_length=1, max_length=255)
    custom_attributes: list[Any] = Field(default_factory=list, alias="customAttributes", max_length=1000)
    os_custom_attributes: list[Any] = Field(default_factory=list, alias="osCustomAttributes", max_length=1000)

    def attributes(self) -> list[Any]:
        return [*self.custom_attributes, *self.os_custom_attributes]


def nbd_export_public(export: NbdExport) -> dict[str, Any]:
    return {"type": "NbdExport", "uri": export.uri, "address": export.address, "port": export.port,
            "exportName": export.name, "readOnly": False, "maxClients": 1,
            "volumeUri": os_volume_uri(export.volume_id)}


def os_volume_public(volume: OsVolume, nbd: NbdExport | None = None) -> dict[str, Any]:
    body = resource_header("OeVolume", CATEGORY, os_volume_uri(volume.id), volume.id, volume.name, volume.etag,
                           volume.created, volume.modified, state="Created")
    body.update({
        "size": volume.size,
        "goldenVolumeUri": golden_image_uri(volume.golden_image_id),
        "goldenImageUri": golden_image_uri(volume.golden_image_id),
        "fullClone": volume.full_clone,
        "oeVolumeId": volume.id,
        "deploymentClusterUri": None,
        "statelessServerUri": None,
        "oeVolumeIQN": None,
        "oeVolumeIp": None,
        "createdBy": volume.created_by,
        # Ingot's: where the live volume is served over NBD right now (None when it is not).
        "nbdUri": nbd.uri if nbd is not None else None,
        "exportUri": f"{os_volume_uri(volume.id)}/export",
    })
    return body
