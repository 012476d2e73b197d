"""Server profiles (OneView ``/rest/server-profiles``): assign a server, a deployment plan and its
attribute values; applying the profile deploys the server (``appliance/services/deploy.py``).

What the API thread does, in one transaction: validate the body (the server exists, is free and
available; the deployment plan exists; every attribute value passes the build plan's checks and
substitutes into its scripts, so a bad value is a 400 naming it before anything runs), seal the
password values, fire the provision event (``deploy`` or ``redeploy``, a 409 when the server's
state does not allow it) and queue the apply task. Changing the deployment plan or the values of
a deployed profile redeploys it; changing only its name or description does not. Deleting the
profile is a task named ``Delete`` (as OneView's SDK expects): it aborts a deploy in progress,
powers the server off, deletes the OS volume and gives the server back (``available``).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from appliance.models import ServerHardware, ServerProfile, Task
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged
from appliance.secretbox import SecretBox
from appliance.services.build_plans import definitions
from appliance.services.personalize import attribute_values, load_deployment_plan, resolve_deployment_plan
from appliance.services.provisioning import ProvisionService
from appliance.services.tasks import ResourceRef, TaskService
from appliance.states import Event, ProvisionState
from appliance.tasks.states import ACTIVE_STATES
from plans.attributes import is_secret
from plans.tokens import MASK

CATEGORY = "server-profiles"
TASK_APPLY = "server-profile-apply"
TASK_DELETE = "server-profile-delete"
SERVER_HARDWARE = "/rest/server-hardware"
# A profile's deployment plan may be named by either side's URI (the OneView mirror has the same id).
PLAN_PATHS = ("/rest/os-deployment-plans", "/rest/deployment-plans")
BUSY = ("Creating", "Updating", "Deleting")

PROFILE_FIELDS = {
    "name": Field(ServerProfile.name, case_insensitive=True),
    "state": Field(ServerProfile.state),
    "status": Field(ServerProfile.status),
    "serverHardwareUri": Field(ServerProfile.server_hardware_id),
    "created": Field(ServerProfile.created, Kind.TIME),
    "modified": Field(ServerProfile.modified, Kind.TIME),
}


def profile_uri(profile_id: str) -> str:
    return f"/rest/server-profiles/{profile_id}"


def plain_values(profile: ServerProfile) -> dict[str, object]:
    """The profile's attribute values that are not sealed (the sealed ones are in ``sealed_attributes``)."""
    return {e["name"]: e["value"] for e in profile.os_custom_attributes if e["name"] not in profile.sealed_attributes}


def _id_in(uri: str | None, paths: Sequence[str], field_name: str) -> str | None:
    if uri is None or uri == "":
        return None
    text = uri.strip().rstrip("/")
    for path in paths:
        if text.startswith(path + "/") and "/" not in text[len(path) + 1:] and text[len(path) + 1:]:
            return text[len(path) + 1:]
    raise InvalidInput(reason=f"{field_name}: {uri!r} is not a URI of the form {paths[0]}/<id>",
                       nested=[(field_name, f"expected {paths[0]}/<id>")])


@dataclass(frozen=True)
class ProfileSpec:
    """A profile as a request gives it (the router parses the JSON into this)."""

    name: str
    description: str = ""
    server_hardware_uri: str | None = None
    os_deployment_plan_uri: str | None = None
    os_custom_attributes: Sequence[Mapping[str, Any]] = ()
    boot: Mapping[str, Any] = field(default_factory=dict)
    boot_mode: Mapping[str, Any] = field(default_factory=dict)
    root_device_hints: Mapping[str, Any] = field(default_factory=dict)


class ServerProfileService:
    def __init__(self, db: Session, secrets: SecretBox, clock: Clock = system_clock,
                 tasks: TaskService | None = None) -> None:
        self.db = db
        self.secrets = secrets
        self.clock = clock
        self.tasks = tasks or TaskService(db, clock)

    # --- reads ---------------------------------------------------------------------------------
    def list(self, query: CollectionQuery) -> Page[ServerProfile]:
        return paged(self.db, select(ServerProfile), query, PROFILE_FIELDS, (ServerProfile.name, ServerProfile.id))

    def get(self, profile_id: str) -> ServerProfile:
        profile = self.db.get(ServerProfile, profile_id)
        if profile is None:
            raise NotFound(kind="server profile", ident=profile_id)
        return profile

    def of_server(self, server_id: str) -> ServerProfile | None:
        return self.db.scalars(select(ServerProfile).where(ServerProfile.server_hardware_id == server_id)).first()

    # --- changes -------------------------------------------------------------------------------
    def start_create(self, spec: ProfileSpec, owner: str) -> tuple[ServerProfile, Task]:
        name = spec.name.strip()
        if not name:
            raise InvalidInput(reason="name must not be empty", nested=[("name", "required")])
        if self.db.scalars(select(ServerProfile).where(ServerProfile.name == name)).first() is not None:
            raise AlreadyExists(kind="server profile", name=name)
        server = self._server(spec.server_hardware_uri)
        plan_id = _id_in(spec.os_deployment_plan_uri, PLAN_PATHS, "osDeploymentSettings.osDeploymentPlanUri")
        if plan_id is not None and server is None:
            raise InvalidInput(reason="an OS deployment needs serverHardwareUri",
                               nested=[("serverHardwareUri", "required with osDeploymentSettings")])
        shown, sealed = self._attributes(plan_id, spec.os_custom_attributes, {})
        profile = ServerProfile(
            name=name, description=spec.description, server_hardware_id=server.id if server else None,
            deployment_plan_id=plan_id, os_custom_attributes=shown, sealed_attributes=sealed,
            boot=dict(spec.boot), boot_mode=dict(spec.boot_mode), root_device_hints=dict(spec.root_device_hints),
            state="Creating", status="OK", created_by=owner, created=self.clock(), modified=self.clock())
        self.db.add(profile)
        self.db.flush()
        if plan_id is not None and server is not None:
            ProvisionService(self.db, self.clock).fire(server.id, Event.DEPLOY)
        task = self._queue(TASK_APPLY, "Create", profile, owner, {"deploy": plan_id is not None})
        return profile, task

    def start_update(self, profile_id: str, spec: ProfileSpec, owner: str) -> Task:
        profile = self.get(profile_id)
        if profile.state in BUSY:
            raise Conflict(reason=f"server profile {profile.name} is {profile.state.lower()}; wait for its task")
        server = self._server(spec.server_hardware_uri, profile)
        if (server.id if server else None) != profile.server_hardware_id:
            raise Conflict(reason="a profile's server cannot be changed; delete the profile and create another")
        plan_id = _id_in(spec.os_deployment_plan_uri, PLAN_PATHS, "osDeploymentSettings.osDeploymentPlanUri")
        shown, sealed = self._attributes(plan_id, spec.os_custom_attributes, profile.sealed_attributes)
        name = spec.name.strip() or profile.name
        if name != profile.name and self.db.scalars(
                select(ServerProfile).where(ServerProfile.name == name)).first() is not None:
            raise AlreadyExists(kind="server profile", name=name)
        redeploy = plan_id is not None and (
            plan_id != profile.deployment_plan_id or shown != profile.os_custom_attributes
            or sealed != profile.sealed_attributes or profile.state == "Error")
        profile.name, profile.description = name, spec.description
        profile.deployment_plan_id, profile.os_custom_attributes, profile.sealed_attributes = plan_id, shown, sealed
        profile.boot, profile.boot_mode = dict(spec.boot), dict(spec.boot_mode)
        profile.root_device_hints = dict(spec.root_device_hints)
        profile.modified = self.clock()
        if redeploy and server is not None:
            state = ProvisionState(server.provision_state)
            ProvisionService(self.db, self.clock).fire(
                server.id, Event.REDEPLOY if state == ProvisionState.DEPLOYED else Event.DEPLOY)
        profile.state = "Updating"
        return self._queue(TASK_APPLY, "Update", profile, owner, {"deploy": redeploy})

    def start_reapply(self, profile_id: str, owner: str) -> Task:
        """Deploy again with the values the profile has (PATCH ``reapplyState``)."""
        profile = self.get(profile_id)
        if profile.state in BUSY:
            raise Conflict(reason=f"server profile {profile.name} is {profile.state.lower()}; wait for its task")
        if profile.server_hardware_id is None or profile.deployment_plan_id is None:
            raise InvalidInput(reason=f"server profile {profile.name} has no OS deployment to apply again")
        server = self.db.get(ServerHardware, profile.server_hardware_id)
        state = ProvisionState(server.provision_state) if server is not None else None
        ProvisionService(self.db, self.clock).fire(
            profile.server_hardware_id, Event.REDEPLOY if state == ProvisionState.DEPLOYED else Event.DEPLOY)
        profile.state, profile.modified = "Updating", self.clock()
        return self._queue(TASK_APPLY, "Update", profile, owner, {"deploy": True})

    def start_delete(self, profile_id: str, owner: str) -> Task:
        profile = self.get(profile_id)
        running = profile.task_id
        last = self.tasks.tasks.get(running) if running is not None else None
        active = last is not None and last.state in ACTIVE_STATES
        if profile.state == "Deleting" and active:
            raise Conflict(reason=f"server profile {profile.name} is being deleted")
        # A delete that failed (an erase that did not finish) may be asked again.
        profile.state, profile.modified = "Deleting", self.clock()
        if last is not None and active and last.kind == TASK_APPLY:
            self.tasks.cancel(last.id, owner)
            if profile.server_hardware_id is not None:
                self._abort(profile.server_hardware_id)
        return self._queue(TASK_DELETE, "Delete", profile, owner)

    # --- helpers -------------------------------------------------------------------------------
    def _abort(self, server_id: str) -> None:
        """Stop a deploy in progress: a waiting server is aborted now, a working one fails when its
        task sees the cancellation."""
        server = self.db.get(ServerHardware, server_id)
        if server is not None and server.provision_state == ProvisionState.DEPLOY_WAIT:
            ProvisionService(self.db, self.clock).fire(server_id, Event.ABORT,
                                                       error="Aborted: the server profile is being deleted.")

    def _server(self, uri: str | None, profile: ServerProfile | None = None) -> ServerHardware | None:
        server_id = _id_in(uri, (SERVER_HARDWARE,), "serverHardwareUri")
        if server_id is None:
            return None
        server = self.db.get(ServerHardware, server_id)
        if server is None:
            raise InvalidInput(reason=f"serverHardwareUri: no server hardware {uri}",
                               nested=[("serverHardwareUri", "no such server hardware")])
        holder = self.of_server(server.id)
        if holder is not None and (profile is None or holder.id != profile.id):
            raise Conflict(reason=f"{server.name} already has the server profile {holder.name}")
        return server

    def _attributes(self, plan_id: str | None, entries: Sequence[Mapping[str, Any]],
                    kept: Mapping[str, str]) -> tuple[builtins.list[dict[str, Any]], dict[str, str]]:
        """The entries as stored (password values masked) and the sealed password values; checks
        that the plan runs with them. A masked password sent back keeps the stored one."""
        given = attribute_values(list(entries))
        if plan_id is None:
            if given:
                raise InvalidInput(reason="osCustomAttributes need an osDeploymentPlanUri")
            return [], {}
        deployment, build_plan = load_deployment_plan(self.db, plan_id)
        if deployment.golden_image_id is None and deployment.installer is None:
            raise InvalidInput(reason=f"the deployment plan {deployment.name} has neither a golden image to deploy nor "
                                      "an installer to run",
                               nested=[("osDeploymentSettings.osDeploymentPlanUri", "no golden image or installer")])
        secret_names = {a.name for a in definitions(build_plan) if is_secret(a)}
        sealed: dict[str, str] = {}
        plain: dict[str, object] = {}
        for name, value in given.items():
            if name not in secret_names:
                plain[name] = value
            elif value == MASK and name in kept:
                sealed[name] = kept[name]
            elif value not in (None, "", MASK):
                sealed[name] = self.secrets.seal(str(value))
        resolve_deployment_plan(self.db, self.secrets, plan_id, plain, sealed)
        shown = [{"name": name, "value": MASK if name in sealed else value}
                 for name, value in given.items() if name in sealed or name in plain]
        return shown, sealed

    def _queue(self, kind: str, name: str, profile: ServerProfile, owner: str, args: dict[str, Any] | None = None
               ) -> Task:
        task = self.tasks.create(kind=kind, name=name, owner=owner, args={"id": profile.id, **(args or {})},
                                 resource=ResourceRef(uri=profile_uri(profile.id), name=profile.name,
                                                      category=CATEGORY))
        profile.task_id = task.id
        return task
