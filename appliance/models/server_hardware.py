"""Server hardware: a server Ingot manages through its BMC (OneView ``server-hardware``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, ResourceMixin


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
