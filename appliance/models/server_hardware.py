"""Server hardware: a server Ingot manages through its BMC (OneView ``server-hardware``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, ResourceMixin, new_id, utcnow


class ServerHardware(ResourceMixin, Base):
    __tablename__ = "server_hardware"
    __table_args__ = (UniqueConstraint("address", "port", name="uq_server_hardware_bmc"),)

    name: Mapped[str] = mapped_column(String(255), unique=True)
    driver: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(255), index=True)  # BMC host name, IP or Redfish URL
    port: Mapped[int] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(128))
    password_sealed: Mapped[str] = mapped_column(Text)  # SecretBox ciphertext, never the plaintext
    # Adding | NoProfileApplied | Removing | Error (OneView's states; profiles arrive later).
    state: Mapped[str] = mapped_column(String(32), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(16), default="Unknown")  # OK | Warning | Critical | Unknown
    power_state: Mapped[str] = mapped_column(String(16), default="Unknown")
    # What Ingot last commanded or saw at enrolment; a sync that reads otherwise raises a drift alert.
    expected_power: Mapped[str | None] = mapped_column(String(16), default=None)
    manufacturer: Mapped[str | None] = mapped_column(String(255), default=None)
    model: Mapped[str | None] = mapped_column(String(255), default=None)
    serial_number: Mapped[str | None] = mapped_column(String(255), default=None, index=True)
    part_number: Mapped[str | None] = mapped_column(String(255), default=None)
    uuid: Mapped[str | None] = mapped_column(String(64), default=None)
    rom_version: Mapped[str | None] = mapped_column(String(255), default=None)
    bmc_firmware: Mapped[str | None] = mapped_column(String(255), default=None)
    mac_addresses: Mapped[list[str]] = mapped_column(JSON, default=list)
    sensors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    boot_device: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    last_contact: Mapped[datetime | None] = mapped_column(default=None)
    # The provision state machine (appliance/states.py). Only appliance/services/provisioning.py
    # writes these four: it takes the row's lock, advances the state and stamps the time.
    provision_state: Mapped[str] = mapped_column(String(32), default="enroll", server_default="enroll",
                                                 index=True)
    provision_previous: Mapped[str | None] = mapped_column(String(32), default=None)  # before maintenance
    provision_updated: Mapped[datetime | None] = mapped_column(default=None)  # entered; wait-state TTLs count from it
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # What the deploy agent found on the machine (agent.inventory.collect), and when.
    hardware_inventory: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    inspected: Mapped[datetime | None] = mapped_column(default=None)


class AgentSession(Base):
    """The deploy agent running on a server now: who it is, how it proves it, when it last spoke.
    One per server; a new lookup replaces it. The token is kept as its SHA-256 only."""

    __tablename__ = "agent_sessions"

    server_hardware_id: Mapped[str] = mapped_column(
        ForeignKey("server_hardware.id", ondelete="CASCADE"), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    mac: Mapped[str] = mapped_column(String(17))
    address: Mapped[str | None] = mapped_column(String(64), default=None)
    agent_version: Mapped[str | None] = mapped_column(String(32), default=None)
    started: Mapped[datetime] = mapped_column(default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(default=utcnow)
    uptime_s: Mapped[float | None] = mapped_column(Float, default=None)


class InstallerSession(Base):
    """An installer deploy in progress on a server: the token its answer file and callbacks carry
    (kept as its SHA-256 only; a new one with every boot script), and what the installer has
    reported. One per server; a new deploy replaces it, and the deploy's end removes it."""

    __tablename__ = "installer_sessions"

    server_hardware_id: Mapped[str] = mapped_column(
        ForeignKey("server_hardware.id", ondelete="CASCADE"), primary_key=True)
    # Set each time the server fetches its installer boot script, which carries the token.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    profile_id: Mapped[str] = mapped_column(String(36))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    fetched: Mapped[datetime | None] = mapped_column(default=None)  # first answer file served
    started: Mapped[datetime | None] = mapped_column(default=None)  # the "start" callback
    finished: Mapped[datetime | None] = mapped_column(default=None)  # "success" or "failure"
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)
    detail: Mapped[str | None] = mapped_column(Text, default=None)


class AgentCommand(Base):
    """One command for a server's agent (docs/agent-api.md): queued by the appliance, handed out by
    a heartbeat once, then reported running, succeeded or failed by the agent."""

    __tablename__ = "agent_commands"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    server_hardware_id: Mapped[str] = mapped_column(
        ForeignKey("server_hardware.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued|sent|running|succeeded|failed
    percent: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    updated: Mapped[datetime] = mapped_column(default=utcnow)
