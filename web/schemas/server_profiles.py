"""Server profiles on the wire (OneView ``ServerProfileV12``, the parts Ingot acts on).

Bodies are parsed by hand rather than by a strict model: OneView clients send a whole profile
(``update()`` GETs it, merges and PUTs it back), with fields Ingot does not act on
(``connections``, ``enclosureGroupUri``, ``serverHardwareTypeUri``…). Those are accepted and not
kept; the fields Ingot acts on are checked and refused with a 400 naming them when malformed.
Attribute entries may carry extra keys (``type``, ``constraints``), as OneView's tests send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appliance.errors import InvalidInput
from appliance.models import ServerProfile
from appliance.services.os_volumes import os_volume_uri
from appliance.services.server_profiles import CATEGORY, SERVER_HARDWARE, ProfileSpec, profile_uri
from web.schemas.common import resource_header
from web.schemas.tasks import task_uri

OSDP = "/rest/os-deployment-plans"
MAX_ATTRIBUTES = 512


def _object(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(reason=f"{key} must be an object", nested=[(key, "expected an object")])
    return value


def _text(body: Mapping[str, Any], key: str, limit: int, where: str | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        field = where or key
        raise InvalidInput(reason=f"{field} must be a string of at most {limit} characters",
                           nested=[(field, "expected a string")])
    return value


def profile_spec(body: Any) -> ProfileSpec:
    """The request body as a :class:`ProfileSpec` (see the module docstring).

    :raises InvalidInput: naming the malformed field.
    """
    if not isinstance(body, Mapping):
        raise InvalidInput(reason="the body must be a JSON object")
    name = _text(body, "name", 255)
    if not name:
        raise InvalidInput(reason="name is required", nested=[("name", "required")])
    settings = _object(body, "osDeploymentSettings")
    entries = settings.get("osCustomAttributes") or []
    if not isinstance(entries, list) or len(entries) > MAX_ATTRIBUTES or \
            not all(isinstance(e, Mapping) for e in entries):
        raise InvalidInput(reason="osDeploymentSettings.osCustomAttributes must be a list of {name, value} objects",
                           nested=[("osDeploymentSettings.osCustomAttributes", "expected a list of objects")])
    return ProfileSpec(
        name=name,
        description=_text(body, "description", 4096) or "",
        server_hardware_uri=_text(body, "serverHardwareUri", 255),
        os_deployment_plan_uri=_text(settings, "osDeploymentPlanUri", 255, "osDeploymentSettings.osDeploymentPlanUri"),
        os_custom_attributes=[{"name": e.get("name"), "value": e.get("value")} for e in entries],
        boot=dict(_object(body, "boot")),
        boot_mode=dict(_object(body, "bootMode")),
        root_device_hints=dict(_object(body, "rootDeviceHints")),
    )


def server_profile_public(profile: ServerProfile) -> dict[str, Any]:
    body = resource_header("ServerProfileV12", CATEGORY, profile_uri(profile.id), profile.id, profile.name,
                           profile.etag, profile.created, profile.modified, state=profile.state,
                           status=profile.status)
    body.update({
        "description": profile.description,
        "stateReason": profile.state_reason,
        "serverHardwareUri": f"{SERVER_HARDWARE}/{profile.server_hardware_id}" if profile.server_hardware_id else None,
        "serverHardwareTypeUri": None,
        "enclosureGroupUri": None,
        "boot": profile.boot or {"manageBoot": True, "order": ["HardDisk"]},
        "bootMode": profile.boot_mode or None,
        "connections": [],
        "rootDeviceHints": profile.root_device_hints or {},
        "osDeploymentSettings": {
            "osDeploymentPlanUri": f"{OSDP}/{profile.deployment_plan_id}" if profile.deployment_plan_id else None,
            "osCustomAttributes": list(profile.os_custom_attributes or []),
            "osVolumeUri": os_volume_uri(profile.os_volume_id) if profile.os_volume_id else None,
        },
        "taskUri": task_uri(profile.task_id) if profile.task_id else None,
    })
    return body
