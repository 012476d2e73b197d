"""The appliance's side of the deploy agent's API (docs/agent-api.md): lookup, the per-node agent
token, heartbeats, the inventory, and the command queue work flows use to drive an agent.

The agent is a machine on the provisioning network speaking plain HTTP, so nothing it sends is
trusted beyond what its token proves: a lookup needs the one-time boot token the appliance put on
that machine's kernel command line, and it binds the new agent token to the server that boot
token was issued for. Every later call names the node and carries the token; the token's hash
must match that node's session. Tokens are compared by their SHA-256 and never stored or logged.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.errors import AgentLookupMismatch, AgentTokenInvalid, Conflict, InvalidInput, NotFound
from appliance.models import AgentCommand, AgentSession, ServerHardware
from appliance.services.netboot import NetbootService, hash_token, parse_mac

COMMANDS = ("inventory", "write_image", "read_disk", "erase", "reboot", "poweroff")
ENDED = ("succeeded", "failed")
REPORTED_STATES = ("running", *ENDED)
MAX_MACS = 64
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Lookup:
    node: str
    agent_token: str


class AgentService:
    def __init__(self, db: Session, clock: Clock = system_clock) -> None:
        self.db = db
        self.clock = clock

    # --- calls from the agent -------------------------------------------------------------------
    def lookup(self, boot_token: str, macs: list[str], agent_version: str | None,
               address: str | None) -> Lookup:
        """Trade a boot token and the machine's MACs for a new agent token (see the module doc).

        :raises NotFound: the boot token is unknown or expired (no hint which).
        :raises AgentLookupMismatch: the token's MAC is not among ``macs``, or names no server.
        :raises InvalidInput: ``macs`` is empty, too long or has a malformed MAC.
        """
        if not macs or len(macs) > MAX_MACS:
            raise InvalidInput(f"macs must list 1 to {MAX_MACS} MAC addresses.")
        normalized = {parse_mac(mac) for mac in macs}
        token_row = NetbootService(self.db, self.clock).redeem_token(boot_token)
        if token_row.mac not in normalized:
            raise AgentLookupMismatch(reason="the machine does not have the MAC its boot token was issued to.")
        if token_row.server_hardware_id is None:
            raise AgentLookupMismatch(reason=f"{token_row.mac} belongs to no enrolled server.")
        node = token_row.server_hardware_id
        agent_token = secrets.token_urlsafe(32)
        now = self.clock()
        existing = self.db.get(AgentSession, node)
        if existing is not None:
            self.db.delete(existing)
            self.db.flush()
        self.db.add(AgentSession(server_hardware_id=node, token_hash=hash_token(agent_token), mac=token_row.mac,
                                 address=address, agent_version=(agent_version or "")[:32] or None,
                                 started=now, last_heartbeat=now))
        # Commands queued for an earlier agent on this machine died with it.
        for command in self._open_commands(node, ("sent", "running")):
            self._end(command, "failed", error="The agent restarted while it ran this command.")
        return Lookup(node, agent_token)

    def authenticate(self, node: str, agent_token: str | None) -> AgentSession:
        """The node's session, if ``agent_token`` is its token; AgentTokenInvalid otherwise."""
        session = self.db.get(AgentSession, node) if agent_token else None
        if session is None or not secrets.compare_digest(session.token_hash, hash_token(agent_token or "")):
            raise AgentTokenInvalid()
        return session

    def heartbeat(self, session: AgentSession, uptime_s: float | None, address: str | None) -> list[AgentCommand]:
        """Note that the agent is alive; hand out (once) the commands queued for it, oldest first."""
        session.last_heartbeat = self.clock()
        session.uptime_s = uptime_s
        if address:
            session.address = address[:64]
        queued = self._open_commands(session.server_hardware_id, ("queued",))
        for command in queued:
            command.state, command.updated = "sent", self.clock()
        return queued

    def record_inventory(self, session: AgentSession, inventory: dict[str, Any]) -> None:
        """Keep what the agent found as the server's hardware inventory."""
        server = self.db.get(ServerHardware, session.server_hardware_id)
        if server is None:
            raise NotFound(kind="server hardware", ident=session.server_hardware_id)
        server.hardware_inventory = normalize_inventory(inventory)
        server.inspected = self.clock()

    def report(self, session: AgentSession, command_id: str, state: str, percent: int | None,
               message: str | None, result: dict[str, Any] | None, error: str | None) -> AgentCommand:
        """The agent's progress or outcome for one of its commands.

        :raises Conflict: the command has ended already (aborted by the appliance, or reported).
        """
        if state not in REPORTED_STATES:
            raise InvalidInput(f"state must be one of {', '.join(REPORTED_STATES)}.")
        command = self.db.get(AgentCommand, command_id)
        if command is None or command.server_hardware_id != session.server_hardware_id:
            raise NotFound(kind="agent command", ident=command_id)
        if command.state in ENDED:
            raise Conflict(reason=f"command {command.name} has ended ({command.state}).")
        if percent is not None:
            command.percent = max(0, min(100, int(percent)))
        if message is not None:
            command.message = message[:MAX_MESSAGE]
        if state == "running":
            command.state, command.updated = "running", self.clock()
        else:
            self._end(command, state, result=result, error=(error or "The agent reported a failure.")[:MAX_MESSAGE]
                      if state == "failed" else None)
        return command

    def uploading(self, session: AgentSession, command_id: str) -> AgentCommand:
        """The node's ``read_disk`` command that a disk upload belongs to.

        :raises NotFound: no such command of this node's, or not a ``read_disk``.
        :raises Conflict: the command has ended: the appliance no longer wants the disk.
        """
        command = self.db.get(AgentCommand, command_id)
        if command is None or command.server_hardware_id != session.server_hardware_id or command.name != "read_disk":
            raise NotFound(kind="read_disk command", ident=command_id)
        if command.state in ENDED:
            raise Conflict(reason=f"command {command.name} has ended ({command.state}).")
        return command

    # --- calls from the appliance's work flows ---------------------------------------------------
    def queue(self, node: str, name: str, params: dict[str, Any] | None = None) -> AgentCommand:
        if name not in COMMANDS:
            raise InvalidInput(f"unknown agent command {name!r}.")
        now = self.clock()
        command = AgentCommand(server_hardware_id=node, name=name, params=params or {}, state="queued",
                               created=now, updated=now)
        self.db.add(command)
        self.db.flush()
        return command

    def command(self, command_id: str) -> AgentCommand:
        command = self.db.get(AgentCommand, command_id)
        if command is None:
            raise NotFound(kind="agent command", ident=command_id)
        return command

    def cancel_all(self, node: str, why: str) -> int:
        """End every command not yet ended for ``node`` (its work was aborted or failed)."""
        open_commands = self._open_commands(node, ("queued", "sent", "running"))
        for command in open_commands:
            self._end(command, "failed", error=why)
        return len(open_commands)

    def session(self, node: str) -> AgentSession | None:
        return self.db.get(AgentSession, node)

    def _open_commands(self, node: str, states: tuple[str, ...]) -> list[AgentCommand]:
        return list(self.db.scalars(
            select(AgentCommand).where(AgentCommand.server_hardware_id == node, AgentCommand.state.in_(states))
            .order_by(AgentCommand.created, AgentCommand.id)))

    def _end(self, command: AgentCommand, state: str, *, result: dict[str, Any] | None = None,
             error: str | None = None) -> None:
        command.state, command.updated = state, self.clock()
        command.result, command.error = result, error
        if state == "succeeded":
            command.percent = 100


# --- the inventory -------------------------------------------------------------------------------

def _text(value: Any, limit: int = 255) -> str | None:
    return str(value)[:limit] if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def normalize_inventory(raw: dict[str, Any]) -> dict[str, Any]:
    """The agent's inventory, keeping only the known fields with the right types (it comes from a
    machine on the provisioning network: nothing else of it is stored or shown).

    :raises InvalidInput: ``raw`` is not an inventory at all.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("disks", []), list) or \
            not isinstance(raw.get("nics", []), list):
        raise InvalidInput("The inventory must be an object with disks and nics lists.")
    cpu, system = raw.get("cpu"), raw.get("system")
    cpu = cpu if isinstance(cpu, dict) else {}
    system = system if isinstance(system, dict) else {}
    disks = [d for d in raw.get("disks", [])[:64] if isinstance(d, dict)]
    nics = [n for n in raw.get("nics", [])[:64] if isinstance(n, dict)]
    return {
        "cpu": {"model": _text(cpu.get("model")), "count": _count(cpu.get("count")),
                "architecture": _text(cpu.get("architecture"), 32)},
        "memory_bytes": _count(raw.get("memory_bytes")),
        "physical_memory_bytes": _count(raw.get("physical_memory_bytes")),
        "disks": [{"name": _text(d.get("name"), 32), "size_bytes": _count(d.get("size_bytes")),
                   "rotational": bool(d.get("rotational")), "removable": bool(d.get("removable")),
                   "model": _text(d.get("model")), "vendor": _text(d.get("vendor")),
                   "serial": _text(d.get("serial")), "wwn": _text(d.get("wwn"), 64)} for d in disks],
        "nics": [{"name": _text(n.get("name"), 32), "mac": _mac_or_none(n.get("mac")), "link": bool(n.get("link")),
                  "speed_mbps": _count(n.get("speed_mbps")), "driver": _text(n.get("driver"), 64),
                  "lldp": _neighbour(n.get("lldp"))} for n in nics],
        "system": {key: _text(system.get(key)) for key in
                   ("sys_vendor", "product_name", "product_serial", "product_uuid", "bios_version")},
    }


def _neighbour(raw: Any) -> dict[str, Any] | None:
    """A NIC's LLDP neighbour as the agent heard it (agent/lldp.py), or None: the switch's name and
    port, its management address and the port's VLAN."""
    if not isinstance(raw, dict) or not _text(raw.get("chassis_id")) or not _text(raw.get("port_id")):
        return None
    vlan = _count(raw.get("vlan_id"))
    return {"chassis_id": _text(raw.get("chassis_id")), "port_id": _text(raw.get("port_id")),
            "port_description": _text(raw.get("port_description")), "system_name": _text(raw.get("system_name")),
            "system_description": _text(raw.get("system_description")),
            "management_address": _text(raw.get("management_address"), 64),
            "vlan_id": vlan if vlan is not None and 1 <= vlan <= 4094 else None, "ttl_s": _count(raw.get("ttl_s"))}


def _mac_or_none(value: Any) -> str | None:
    try:
        return parse_mac(value) if isinstance(value, str) else None
    except InvalidInput:
        return None
