"""Server hardware as the API sees it: enrol, read, remove, and queue power, boot and inventory work.

Everything that talks to a BMC runs as a task (``server_hardware_tasks``), as OneView does: the API
thread only validates, writes the row and queues the task, so a slow or dead BMC can never hold an
API worker. Passwords are sealed with the appliance's SecretBox before they reach the database and
are never part of a task's arguments.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.drivers.loader import driver_classes
from appliance.drivers.types import BmcTarget, BootDevice, BootMode, PowerAction
from appliance.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from appliance.models import ServerHardware, ServerProfile, Task
from appliance.query import CollectionQuery
from appliance.repositories.base import Page
from appliance.repositories.server_hardware import ServerHardwareRepository
from appliance.repositories.tasks import TaskRepository
from appliance.secretbox import SecretBox
from appliance.services.provisioning import ProvisionService
from appliance.services.tasks import ResourceRef, TaskService
from appliance.states import Event

CATEGORY = "server-hardware"
ADDING, MONITORED, REMOVING, ERROR = "Adding", "NoProfileApplied", "Removing", "Error"
# States in which a server takes power, boot and refresh requests.
SERVICEABLE = (MONITORED, ERROR)

# OneView's (powerState, powerControl) pairs, and what each asks of the BMC.
POWER_REQUESTS: dict[tuple[str, str], PowerAction] = {
    ("On", "MomentaryPress"): PowerAction.ON,
    ("Off", "MomentaryPress"): PowerAction.SOFT_OFF,
    ("Off", "PressAndHold"): PowerAction.OFF,
    ("On", "ColdBoot"): PowerAction.CYCLE,
    ("On", "Reset"): PowerAction.RESET,
}

TASK_ADD = "server-hardware-add"
TASK_REFRESH = "server-hardware-refresh"
TASK_POWER = "server-hardware-power"
TASK_BOOT = "server-hardware-boot-device"
TASK_REMOVE = "server-hardware-remove"
TASK_POWER_SYNC = "server-hardware-power-sync"
TASK_DISCOVER = "server-hardware-discover"
TASK_INSPECT = "server-hardware-inspect"
# Provision events staff send to a server directly; the rest come from profiles or the work itself.
OPERATOR_EVENTS = tuple(e.value for e in (Event.MANAGE, Event.INSPECT, Event.MAINTAIN, Event.UNMAINTAIN,
                                          Event.ABORT, Event.RETIRE))


def server_uri(server_id: str) -> str:
    return f"/rest/server-hardware/{server_id}"


@dataclass(frozen=True)
class Enrollment:
    """What staff give to add a server (OneView's rack-server body plus port and driver)."""

    hostname: str
    username: str
    password: str
    driver: str = "ipmi"
    port: int | None = None
    name: str | None = None
    force: bool = False


@dataclass(frozen=True)
class DiscoveryRequest:
    cidr: str
    ipmi_ports: tuple[int, ...] = (623,)
    redfish_ports: tuple[int, ...] = ()


class ServerHardwareService:
    def __init__(self, db: Session, secrets: SecretBox, clock: Clock = system_clock,
                 tasks: TaskService | None = None, max_discovery_addresses: int = 4096) -> None:
        self.db = db
        self.servers = ServerHardwareRepository(db)
        self.secrets = secrets
        self.clock = clock
        self.tasks = tasks or TaskService(db, clock)
        self.max_discovery_addresses = max_discovery_addresses

    # --- reads ---------------------------------------------------------------------------------
    def list(self, query: CollectionQuery) -> Page[ServerHardware]:
        return self.servers.page(query)

    def get(self, server_id: str) -> ServerHardware:
        server = self.servers.get(server_id)
        if server is None:
            raise NotFound(kind="server hardware", ident=server_id)
        return server

    def target(self, server: ServerHardware) -> BmcTarget:
        return BmcTarget(driver=server.driver, address=server.address, port=server.port,
                         username=server.username, password=self.secrets.open(server.password_sealed))

    # --- enrolment -----------------------------------------------------------------------------
    def start_add(self, request: Enrollment, owner: str) -> tuple[ServerHardware, Task]:
        classes = driver_classes()
        driver = classes.get(request.driver)
        if driver is None:
            raise InvalidInput(reason=f"unknown driver {request.driver!r}; installed: {', '.join(sorted(classes))}")
        hostname = request.hostname.strip()
        if not hostname or any(c.isspace() for c in hostname):
            raise InvalidInput(reason="hostname must be a BMC host name, IP address or URL without spaces")
        if not request.username:
            raise InvalidInput(reason="username must not be empty")
        port = request.port if request.port is not None else driver.default_port
        if not 0 < port < 65536:
            raise InvalidInput(reason=f"port {port} is not a valid UDP/TCP port")
        default_name = hostname if port == driver.default_port else f"{hostname}:{port}"
        name = (request.name or "").strip() or default_name
        existing = self.servers.by_bmc(hostname, port)
        if existing is not None:
            if not request.force:
                raise AlreadyExists(kind="server hardware for BMC", name=f"{hostname}:{port}",
                                    recommended_actions=["Use the existing server hardware, or add with force."])
            return self._readd(existing, request, name, owner)
        if self.servers.by_name(name) is not None:
            raise AlreadyExists(kind="server hardware", name=name)
        now = self.clock()
        server = self.servers.add(ServerHardware(
            name=name, driver=request.driver, address=hostname, port=port, username=request.username,
            password_sealed=self.secrets.seal(request.password), state=ADDING, status="Unknown",
            power_state="Unknown", mac_addresses=[], sensors=[], created=now, modified=now,
        ))
        task = self._queue(TASK_ADD, "Add", server, owner)
        return server, task

    def _readd(self, server: ServerHardware, request: Enrollment, name: str,
               owner: str) -> tuple[ServerHardware, Task]:
        """``force`` on an enrolled BMC: try the new driver and credentials on the same resource.
        What it had before travels with the task (the password still sealed) so that a failed
        attempt puts it back: a typo in a forced re-add must not lose a working server."""
        if server.state in (ADDING, REMOVING):
            raise Conflict(reason=f"{server.name} is being {server.state.lower()}")
        clash = self.servers.by_name(name)
        if clash is not None and clash.id != server.id:
            raise AlreadyExists(kind="server hardware", name=name)
        previous = {"name": server.name, "driver": server.driver, "username": server.username,
                    "password_sealed": server.password_sealed, "state": server.state}
        server.name, server.driver, server.username = name, request.driver, request.username
        server.password_sealed = self.secrets.seal(request.password)
        server.state = ADDING
        return server, self._queue(TASK_ADD, "Add", server, owner, {"previous": previous})

    def start_remove(self, server_id: str, owner: str) -> Task:
        server = self.get(server_id)
        if server.state in (ADDING, REMOVING):
            raise Conflict(reason=f"{server.name} is being {server.state.lower()}")
        profile = self.db.scalars(select(ServerProfile).where(ServerProfile.server_hardware_id == server.id)).first()
        if profile is not None:
            raise Conflict(reason=f"{server.name} has the server profile {profile.name}; delete the profile first")
        server.state = REMOVING
        return self._queue(TASK_REMOVE, "Remove", server, owner)

    # --- operations ----------------------------------------------------------------------------
    def start_power(self, server_id: str, power_state: str, power_control: str, owner: str) -> Task:
        action = POWER_REQUESTS.get((power_state, power_control))
        if action is None:
            allowed = "; ".join(f"{s}/{c}" for s, c in POWER_REQUESTS)
            raise InvalidInput(reason=f"powerState {power_state!r} with powerControl {power_control!r} "
                                      f"is not a power request; use one of {allowed}")
        server = self._serviceable(server_id)
        return self._queue(TASK_POWER, "Update power state", server, owner, {"action": action.value})

    def start_boot_device(self, server_id: str, device: str, persistent: bool, mode: str | None,
                          owner: str) -> Task:
        try:
            boot = BootDevice(device)
            boot_mode = BootMode(mode) if mode is not None else None
        except ValueError as exc:
            raise InvalidInput(reason=str(exc)) from None
        server = self._serviceable(server_id)
        args = {"device": boot.value, "persistent": persistent, "mode": boot_mode.value if boot_mode else None}
        return self._queue(TASK_BOOT, "Set boot device", server, owner, args)

    def provision(self, server_id: str, event: str, owner: str) -> Task | None:
        """An operator's provision event (see appliance/states.py). ``inspect`` starts work and returns
        its task; the others change the state at once and return None.

        :raises InvalidInput: not an event operators send here (deploy and capture come from profiles).
        :raises InvalidTransition: the server's state does not allow it (409).
        """
        if event not in OPERATOR_EVENTS:
            raise InvalidInput(reason=f"event must be one of {', '.join(OPERATOR_EVENTS)}; deploy, capture and "
                                      "release come from server profiles")
        server = self._serviceable(server_id)
        ProvisionService(self.db, self.clock).fire(server.id, event)
        if event == Event.INSPECT:
            return self._queue(TASK_INSPECT, "Inspect", server, owner)
        return None

    def start_refresh(self, server_id: str, owner: str) -> Task:
        return self._queue(TASK_REFRESH, "Refresh", self._serviceable(server_id), owner)

    def start_power_sync(self, owner: str, task_type: str = "User") -> Task:
        """Sweep every server's power state. One sweep at a time: a second request gets the first."""
        running = TaskRepository(self.db).active_of_kind(TASK_POWER_SYNC)
        if running:
            return running[0]
        return self.tasks.create(kind=TASK_POWER_SYNC, name="Synchronize power states", owner=owner,
                                 resource=ResourceRef(uri="/rest/server-hardware", name="All server hardware",
                                                      category=CATEGORY), task_type=task_type)

    def start_discover(self, request: DiscoveryRequest, owner: str) -> Task:
        try:
            network = ipaddress.ip_network(request.cidr, strict=False)
        except ValueError as exc:
            raise InvalidInput(reason=f"cidr: {exc}") from None
        if network.num_addresses > self.max_discovery_addresses:
            raise InvalidInput(reason=f"cidr {network} has {network.num_addresses} addresses; the limit is "
                                      f"{self.max_discovery_addresses} (bmc.discovery_max_addresses)")
        ports = [*request.ipmi_ports, *request.redfish_ports]
        if not ports:
            raise InvalidInput(reason="give at least one IPMI or Redfish port to probe")
        if any(not 0 < p < 65536 for p in ports):
            raise InvalidInput(reason="ports must be between 1 and 65535")
        args: dict[str, Any] = {"cidr": str(network), "ipmiPorts": list(request.ipmi_ports),
                                "redfishPorts": list(request.redfish_ports)}
        return self.tasks.create(kind=TASK_DISCOVER, name="Discover BMCs", owner=owner, args=args,
                                 resource=ResourceRef(uri="/rest/server-hardware", name=str(network),
                                                      category=CATEGORY))

    # --- helpers -------------------------------------------------------------------------------
    def _serviceable(self, server_id: str) -> ServerHardware:
        server = self.get(server_id)
        if server.state not in SERVICEABLE:
            raise Conflict(reason=f"{server.name} is {server.state}; wait until it is added")
        return server

    def _queue(self, kind: str, name: str, server: ServerHardware, owner: str,
               args: dict[str, Any] | None = None) -> Task:
        return self.tasks.create(kind=kind, name=name, owner=owner, args={"id": server.id, **(args or {})},
                                 resource=ResourceRef(uri=server_uri(server.id), name=server.name,
                                                      category=CATEGORY))
