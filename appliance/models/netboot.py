"""Network boot state: the provisioning subnet, reservations, DHCP leases, DNS records, one-time
boot tokens and the boot events that show which file each machine fetched."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, ResourceMixin, utcnow


class Subnet(ResourceMixin, Base):
    """A DHCP subnet with one address pool. ``mode`` is ``server`` or ``proxy``."""

    __tablename__ = "subnets"

    name: Mapped[str] = mapped_column(String(255), unique=True)
    network: Mapped[str] = mapped_column(String(43))  # CIDR, e.g. 10.0.0.0/24
    range_first: Mapped[str | None] = mapped_column(String(15), default=None)
    range_last: Mapped[str | None] = mapped_column(String(15), default=None)
    router: Mapped[str | None] = mapped_column(String(15), default=None)
    dns_servers: Mapped[list[str]] = mapped_column(JSON, default=list)
    domain: Mapped[str | None] = mapped_column(String(253), default=None)
    lease_time: Mapped[int] = mapped_column(Integer, default=3600)
    mode: Mapped[str] = mapped_column(String(8), default="server")
    unknown_mac: Mapped[str] = mapped_column(String(16), default="discovery")


class Reservation(ResourceMixin, Base):
    """A static binding for one MAC: fixed address, host name and what it boots
    (``netboot``, ``local`` or ``none``)."""

    __tablename__ = "dhcp_reservations"

    mac: Mapped[str] = mapped_column(String(17), unique=True)
    ip: Mapped[str | None] = mapped_column(String(15), unique=True, default=None)
    hostname: Mapped[str | None] = mapped_column(String(253), default=None)
    boot: Mapped[str] = mapped_column(String(8), default="netboot")
    server_hardware_id: Mapped[str | None] = mapped_column(
        ForeignKey("server_hardware.id", ondelete="SET NULL"), default=None, index=True
    )


class DhcpLease(Base):
    """One address's binding. A row outlives its expiry: it remembers the MAC's previous address
    (RFC 2131 §4.3.1) and, in state ``declined``, holds the address back until ``expires``."""

    __tablename__ = "dhcp_leases"

    ip: Mapped[str] = mapped_column(String(15), primary_key=True)
    mac: Mapped[str] = mapped_column(String(17), index=True)
    state: Mapped[str] = mapped_column(String(10))  # bound | released | declined
    expires: Mapped[datetime] = mapped_column()
    updated: Mapped[datetime] = mapped_column(default=utcnow)


class DnsRecord(ResourceMixin, Base):
    """An operator-managed record in the appliance's zone (servers' own names come from leases)."""

    __tablename__ = "dns_records"

    name: Mapped[str] = mapped_column(String(253), index=True)
    type: Mapped[str] = mapped_column(String(8))  # A | CNAME | PTR
    value: Mapped[str] = mapped_column(String(253))
    ttl: Mapped[int] = mapped_column(Integer, default=300)


class BootToken(Base):
    """A node's one-time boot token, stored as its SHA-256: kernel arguments carry the token, and
    per-node content is served only to a request that presents it."""

    __tablename__ = "boot_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    mac: Mapped[str] = mapped_column(String(17), index=True)
    server_hardware_id: Mapped[str | None] = mapped_column(
        ForeignKey("server_hardware.id", ondelete="CASCADE"), default=None, index=True
    )
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires: Mapped[datetime] = mapped_column()
    used: Mapped[datetime | None] = mapped_column(default=None)


class BootEvent(Base):
    """What a machine asked the boot services for, and what it got."""

    __tablename__ = "boot_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    mac: Mapped[str | None] = mapped_column(String(17), index=True, default=None)
    client_ip: Mapped[str | None] = mapped_column(String(45), default=None)
    service: Mapped[str] = mapped_column(String(8))  # dhcp | tftp | http
    action: Mapped[str] = mapped_column(String(32))  # e.g. DISCOVER/OFFER, RRQ, GET
    detail: Mapped[str | None] = mapped_column(Text, default=None)  # file, URL, address, boot method
    ok: Mapped[bool] = mapped_column(default=True)
