"""Golden image resources (Image Streamer ``GoldenImage`` shape, plus what the library knows)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from appliance.models import GoldenImage
from appliance.services.golden_images import CATEGORY, golden_image_uri
from web.schemas.common import Strict, resource_header


class GoldenImageUpdate(Strict):
    """PUT /rest/golden-images/{id}: the SDK sends the whole object back; name and description change."""

    model_config = Strict.model_config | {"extra": "ignore"}
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=4096)


class GoldenImageCreate(Strict):
    """POST /rest/golden-images as JSON: HPE's capture request (``imageCapture`` arrives as a bool
    or, in HPE's own examples, the string "true"), or Ingot's import from a URL or a path on the
    appliance (``sourceUrl`` / ``sourcePath``, with an optional ``sourceChecksum``)."""

    model_config = Strict.model_config | {"extra": "ignore"}  # the SDK adds "type": "GoldenImage"
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=4096)
    image_capture: bool | str = Field(default=False, alias="imageCapture")
    os_volume_uri: str = Field(default="", alias="osVolumeURI", max_length=255)
    server_hardware_uri: str = Field(default="", alias="serverHardwareUri", max_length=255,
                                     description="Ingot's: capture the disk of this deployed server.")
    build_plan_uri: str | None = Field(default=None, alias="buildPlanUri", max_length=255)
    compress: bool = Field(default=False, description="Ingot's: compress the captured qcow2.")
    source_url: str | None = Field(default=None, alias="sourceUrl", max_length=4096)
    source_path: str | None = Field(default=None, alias="sourcePath", max_length=4096)
    source_checksum: str | None = Field(default=None, alias="sourceChecksum", max_length=64,
                                        description="SHA-256 the source file must have.")

    def capture(self) -> bool:
        flag = self.image_capture
        return ((flag is True or (isinstance(flag, str) and flag.strip().lower() == "true"))
                and bool(self.os_volume_uri or self.server_hardware_uri))

    def os_volume_id(self) -> str:
        return self.os_volume_uri.rstrip("/").rsplit("/", 1)[-1]

    def server_hardware_id(self) -> str:
        return self.server_hardware_uri.rstrip("/").rsplit("/", 1)[-1]


def golden_image_public(image: GoldenImage) -> dict[str, Any]:
    body = resource_header(
        "GoldenImage", CATEGORY, golden_image_uri(image.id), image.id, image.name, image.etag,
        image.created, image.modified, description=image.description, state="Active",
    )
    body.update({
        "size": image.size,
        "checkSum": image.sha256,
        "imageCapture": image.image_capture,
        "importedFromBundle": image.source_format == "zip+raw",
        "readOnly": False,
        "osVolumeURI": image.os_volume_uri,
        "buildPlanUri": image.build_plan_uri,
        "dependentArtifacts": [],
        # Ingot's additions: what the guest sees, what was uploaded, where to fetch it.
        "virtualSize": image.virtual_size,
        "sourceFormat": image.source_format,
        "originalFileName": image.original_filename,
        "format": "qcow2",
        "downloadUri": f"/rest/golden-images/download/{image.id}",
        "createdBy": image.created_by,
    })
    return body
