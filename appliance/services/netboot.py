"""Network boot data as the API and the boot services see it: the provisioning subnet,
reservations, leases, DNS records, boot events and one-time boot tokens.

The running DHCP/DNS servers hold their own in-memory copy (``appliance.netboot.runtime``); every
change made here is followed by a reload of that copy (the web layer nudges it), so the database
stays the single source of truth.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.errors import AlreadyExists, InvalidInput, NotFound
from appliance.models import BootEvent, BootToken, DhcpLease, DnsRecord, Reservation, ServerHardware, Subnet
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged
from pxe.backend import HostConfig, is_mac, normalise_mac

SUBNET_MODES = ("server", "proxy")
UNKNOWN_MAC_POLICIES = ("ignore", "discovery", "address-only")
# What a reservation boots: the ramdisk over the network, its local disk through iPXE (the
# firmware keeps network first), an address only (no boot options), or no answer at all.
BOOT_CHOICES = ("netboot", "disk", "local", "none")
DNS_TYPES = ("A", "CNAME", "PTR")
SETTINGS_SUBNET = "provisioning"

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

LEASE_FIELDS = {
    "mac": Field(DhcpLease.mac, case_insensitive=True),
    "ip": Field(DhcpLease.ip),
    "state": Field(DhcpLease.state),
    "expires": Field(DhcpLease.expires, Kind.TIME),
    "updated": Field(DhcpLease.updated, Kind.TIME),
}
EVENT_FIELDS = {
    "id": Field(BootEvent.id, Kind.INT),  # ``id>N``: what arrived since the last poll (ingot netboot events --follow)
    "mac": Field(BootEvent.mac, case_insensitive=True),
    "service": Field(BootEvent.service),
    "action": Field(BootEvent.action),
    "ok": Field(BootEvent.ok, Kind.BOOL),
    "at": Field(BootEvent.at, Kind.TIME),
}
# Collection filters and sorts of the REST API (``/rest/dhcp/...``, ``/rest/dns/records``).
SUBNET_FIELDS = {
    "name": Field(Subnet.name, case_insensitive=True),
    "network": Field(Subnet.network),
    "mode": Field(Subnet.mode),
    "created": Field(Subnet.created, Kind.TIME),
    "modified": Field(Subnet.modified, Kind.TIME),
}
RESERVATION_FIELDS = {
    "mac": Field(Reservation.mac, case_insensitive=True),
    "ip": Field(Reservation.ip),
    "hostname": Field(Reservation.hostname, case_insensitive=True),
    "boot": Field(Reservation.boot),
    "created": Field(Reservation.created, Kind.TIME),
    "modified": Field(Reservation.modified, Kind.TIME),
}
DNS_FIELDS = {
    "name": Field(DnsRecord.name, case_insensitive=True),
    "recordType": Field(DnsRecord.type, case_insensitive=True),
    "value": Field(DnsRecord.value, case_insensitive=True),
    "ttl": Field(DnsRecord.ttl, Kind.INT),
    "created": Field(DnsRecord.created, Kind.TIME),
    "modified": Field(DnsRecord.modified, Kind.TIME),
}


def parse_mac(value: Any, field: str = "mac") -> str:
    if not isinstance(value, str) or not is_mac(value):
        raise InvalidInput(reason=f"{field}: {value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return normalise_mac(value)


def parse_ip(value: Any, field: str) -> IPv4Address:
    try:
        return IPv4Address(str(value).strip())
    except ValueError:
        raise InvalidInput(reason=f"{field}: {value!r} is not an IPv4 address") from None


def parse_hostname(value: Any, field: str = "hostname") -> str:
    name = str(value).strip().lower().rstrip(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise InvalidInput(reason=f"{field}: {value!r} is not a valid host name (letters, digits, hyphens)")
    return name


def host_label(name: str) -> str | None:
    """A server name as a DNS label (``Rack 1/Server-07`` -> ``rack-1-server-07``), or None."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SubnetSpec:
    """A subnet as given through settings or the API, validated."""

    name: str
    network: IPv4Network
    range_first: IPv4Address | None
    range_last: IPv4Address | None
    router: IPv4Address | None
    dns_servers: tuple[IPv4Address, ...]
    domain: str | None
    lease_time: int
    mode: str
    unknown_mac: str

    @classmethod
    def from_body(cls, body: dict[str, Any], base: Subnet | None = None) -> SubnetSpec:
        def pick(key: str, current: Any) -> Any:
            return body.get(key, current)

        name = str(pick("name", base.name if base else "")).strip()
        if not name:
            raise InvalidInput(reason="name: required")
        raw_network = pick("network", base.network if base else None)
        try:
            network = IPv4Network(str(raw_network), strict=False)
        except ValueError:
            raise InvalidInput(reason=f"network: {raw_network!r} is not an IPv4 network (10.0.0.0/24)") from None
        first = pick("rangeFirst", base.range_first if base else None)
        last = pick("rangeLast", base.range_last if base else None)
        router = pick("router", base.router if base else None)
        dns = pick("dnsServers", base.dns_servers if base else [])
        if not isinstance(dns, list):
            raise InvalidInput(reason="dnsServers: a list of IPv4 addresses")
        domain = pick("domain", base.domain if base else None)
        lease_time = pick("leaseTime", base.lease_time if base else 3600)
        mode = pick("mode", base.mode if base else "server")
        unknown = pick("unknownMacPolicy", base.unknown_mac if base else "discovery")
        spec = cls(
            name=name,
            network=network,
            range_first=parse_ip(first, "rangeFirst") if first else None,
            range_last=parse_ip(last, "rangeLast") if last else None,
            router=parse_ip(router, "router") if router else None,
            dns_servers=tuple(parse_ip(d, "dnsServers") for d in dns),
            domain=parse_hostname(domain, "domain") if domain else None,
            lease_time=_int(lease_time, "leaseTime", 60, 365 * 86400),
            mode=_choice(mode, "mode", SUBNET_MODES),
            unknown_mac=_choice(unknown, "unknownMacPolicy", UNKNOWN_MAC_POLICIES),
        )
        spec.check()
        return spec

    def check(self) -> None:
        if (self.range_first is None) != (self.range_last is None):
            raise InvalidInput(reason="rangeFirst and rangeLast: give both or neither")
        if self.range_first is not None and self.range_last is not None:
            for label, ip in (("rangeFirst", self.range_first), ("rangeLast", self.range_last)):
                if ip not in self.network or ip in (self.network.network_address, self.network.broadcast_address):
                    raise InvalidInput(reason=f"{label}: {ip} is not a host address of {self.network}")
            if self.range_first > self.range_last:
                raise InvalidInput(reason=f"range {self.range_first}-{self.range_last}: first is after last")
        elif self.mode == "server":
            raise InvalidInput(reason="a subnet in server mode needs an address range (rangeFirst, rangeLast)")
        if self.router is not None and self.router not in self.network:
            raise InvalidInput(reason=f"router: {self.router} is outside {self.network}")

    def apply(self, row: Subnet) -> None:
        row.name = self.name
        row.network = str(self.network)
        row.range_first = str(self.range_first) if self.range_first else None
        row.range_last = str(self.range_last) if self.range_last else None
        row.router = str(self.router) if self.router else None
        row.dns_servers = [str(d) for d in self.dns_servers]
        row.domain = self.domain
        row.lease_time = self.lease_time
        row.mode = self.mode
        row.unknown_mac = self.unknown_mac


def parse_range(text: str) -> tuple[IPv4Address, IPv4Address]:
    """``10.0.0.100-10.0.0.200`` (the INGOT_DHCP_RANGE form)."""
    first, sep, last = text.partition("-")
    if not sep:
        raise InvalidInput(reason=f"range {text!r}: expected first-last, e.g. 10.0.0.100-10.0.0.200")
    return parse_ip(first, "range"), parse_ip(last, "range")


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(reason=f"{field}: an integer")
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(reason=f"{field}: {value!r} is not an integer") from None
    if not low <= number <= high:
        raise InvalidInput(reason=f"{field}: {number} is outside {low}..{high}")
    return number


def _choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidInput(reason=f"{field}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


class NetbootService:
    def __init__(self, db: Session, clock: Clock = system_clock) -> None:
        self.db = db
        self.clock = clock

    # -- subnets --

    def subnets(self) -> list[Subnet]:
        return list(self.db.scalars(select(Subnet).order_by(Subnet.name)))

    def subnet_page(self, query: CollectionQuery) -> Page[Subnet]:
        return paged(self.db, select(Subnet), query, SUBNET_FIELDS, (Subnet.name,))

    def subnet(self, subnet_id: str) -> Subnet:
        row = self.db.get(Subnet, subnet_id)
        if row is None:
            raise NotFound(kind="subnet", ident=subnet_id)
        return row

    def create_subnet(self, body: dict[str, Any]) -> Subnet:
        spec = SubnetSpec.from_body(body)
        self._unique_subnet(spec)
        row = Subnet()
        spec.apply(row)
        self.db.add(row)
        self.db.flush()
        return row

    def update_subnet(self, subnet_id: str, body: dict[str, Any]) -> Subnet:
        row = self.subnet(subnet_id)
        spec = SubnetSpec.from_body(body, base=row)
        self._unique_subnet(spec, exclude=row.id)
        spec.apply(row)
        self.db.flush()
        return row

    def delete_subnet(self, subnet_id: str) -> None:
        self.db.delete(self.subnet(subnet_id))

    def _unique_subnet(self, spec: SubnetSpec, exclude: str | None = None) -> None:
        for other in self.subnets():
            if other.id == exclude:
                continue
            if other.name == spec.name:
                raise AlreadyExists(kind="subnet", name=spec.name)
            if IPv4Network(other.network).overlaps(spec.network):
                raise InvalidInput(reason=f"network {spec.network} overlaps subnet {other.name} ({other.network})")

    def subnet_for(self, address: IPv4Address) -> Subnet | None:
        for row in self.subnets():
            if address in IPv4Network(row.network):
                return row
        return None

    def apply_settings(self, network: IPv4Network, given: dict[str, Any], defaults: dict[str, Any]) -> Subnet:
        """Make the subnet on the DHCP interface match the settings at start.

        :param given: API-named fields the operator set explicitly (INGOT_DHCP_RANGE as
            ``range``, ``router``, ``dnsServers``, ``mode`` ...): they win over what the API stored.
        :param defaults: values used only when the subnet is created here, so a default never
            undoes a change made through the API.
        """
        row = self.subnet_for(network.network_address)
        creating = row is None
        body: dict[str, Any] = {"network": str(network)}
        if row is None:
            row = Subnet(name=SETTINGS_SUBNET, network=str(network))
            body |= {"name": row.name, **defaults}
        body |= {key: value for key, value in given.items() if key != "range"}
        if given.get("range"):
            first, last = parse_range(given["range"])
            body["rangeFirst"], body["rangeLast"] = str(first), str(last)
        spec = SubnetSpec.from_body(body, base=None if creating else row)
        spec.apply(row)
        if creating:
            self.db.add(row)
        self.db.flush()
        return row

    # -- reservations --

    def reservations(self) -> list[Reservation]:
        return list(self.db.scalars(select(Reservation).order_by(Reservation.mac)))

    def reservation_page(self, query: CollectionQuery) -> Page[Reservation]:
        return paged(self.db, select(Reservation), query, RESERVATION_FIELDS, (Reservation.mac,))

    def reservation(self, reservation_id: str) -> Reservation:
        row = self.db.get(Reservation, reservation_id)
        if row is None:
            raise NotFound(kind="reservation", ident=reservation_id)
        return row

    def create_reservation(self, body: dict[str, Any]) -> Reservation:
        row = Reservation(mac=parse_mac(body.get("mac")))
        self._fill_reservation(row, body)
        self.db.add(row)
        self.db.flush()
        return row

    def update_reservation(self, reservation_id: str, body: dict[str, Any]) -> Reservation:
        row = self.reservation(reservation_id)
        # The checks below query the other reservations; an autoflush there would write the new
        # MAC or address first and fail on the unique constraint instead of with the clear error.
        with self.db.no_autoflush:
            if "mac" in body:
                row.mac = parse_mac(body["mac"])
            self._fill_reservation(row, body)
        self.db.flush()
        return row

    def delete_reservation(self, reservation_id: str) -> None:
        self.db.delete(self.reservation(reservation_id))

    def _fill_reservation(self, row: Reservation, body: dict[str, Any]) -> None:
        if "ip" in body:
            row.ip = str(parse_ip(body["ip"], "ip")) if body["ip"] else None
        if "hostname" in body:
            row.hostname = parse_hostname(body["hostname"]) if body["hostname"] else None
        if "boot" in body:
            row.boot = _choice(body["boot"], "boot", BOOT_CHOICES)
        elif row.boot is None:
            row.boot = "netboot"
        if "serverHardwareUri" in body:
            uri = body["serverHardwareUri"]
            server_id = str(uri).rsplit("/", 1)[-1] if uri else None
            if server_id is not None and self.db.get(ServerHardware, server_id) is None:
                raise InvalidInput(reason=f"serverHardwareUri: {uri!r} does not exist")
            row.server_hardware_id = server_id
        for other in self.reservations():
            if other.id == row.id:
                continue
            if other.mac == row.mac:
                raise AlreadyExists(kind="reservation", name=row.mac)
            if row.ip is not None and other.ip == row.ip:
                raise InvalidInput(reason=f"ip: {row.ip} is already reserved for {other.mac}")
        if row.ip is not None:
            subnet = self.subnet_for(IPv4Address(row.ip))
            if subnet is None and self.subnets():
                raise InvalidInput(reason=f"ip: {row.ip} is in no subnet Ingot serves")

    # -- what the DHCP server knows about machines --

    def hosts(self) -> list[HostConfig]:
        """Reservations, plus every MAC of enrolled server hardware (netboot, its name as host name)."""
        hosts: dict[str, HostConfig] = {}
        for server in self.db.scalars(select(ServerHardware)):
            for mac in server.mac_addresses or []:
                try:
                    key = parse_mac(mac)
                except InvalidInput:
                    continue
                hosts[key] = HostConfig(key, None, host_label(server.name), "netboot")
        for res in self.reservations():
            hostname = res.hostname
            if hostname is None and res.mac in hosts:
                hostname = hosts[res.mac].hostname
            dhcp_boot = "netboot" if res.boot == "disk" else res.boot
            hosts[res.mac] = HostConfig(res.mac, IPv4Address(res.ip) if res.ip else None, hostname,
                                        dhcp_boot)  # type: ignore[arg-type]
        return list(hosts.values())

    def boot_choice(self, mac: str) -> tuple[str, ServerHardware | None]:
        """What ``mac`` should boot (a :data:`BOOT_CHOICES` value or ``unknown``) and its server."""
        server = self.server_for_mac(mac)
        res = self.db.scalars(select(Reservation).where(Reservation.mac == mac)).first()
        if res is not None:
            if server is None and res.server_hardware_id:
                server = self.db.get(ServerHardware, res.server_hardware_id)
            return res.boot, server
        return ("netboot" if server is not None else "unknown"), server

    def server_for_mac(self, mac: str) -> ServerHardware | None:
        for server in self.db.scalars(select(ServerHardware)):
            if mac in {m.lower() for m in server.mac_addresses or []}:
                return server
        return None

    # -- leases --

    def leases(self, query: CollectionQuery) -> Page[DhcpLease]:
        return paged(self.db, select(DhcpLease), query, LEASE_FIELDS, (DhcpLease.ip,))

    def names_by_mac(self) -> dict[str, str]:
        """Reservation host names and server names for each known MAC (for listing leases)."""
        return {host.mac: host.hostname for host in self.hosts() if host.hostname}

    # -- DNS --

    def dns_records(self) -> list[DnsRecord]:
        return list(self.db.scalars(select(DnsRecord).order_by(DnsRecord.name, DnsRecord.type)))

    def dns_record_page(self, query: CollectionQuery) -> Page[DnsRecord]:
        return paged(self.db, select(DnsRecord), query, DNS_FIELDS, (DnsRecord.name, DnsRecord.type, DnsRecord.id))

    def dns_record(self, record_id: str) -> DnsRecord:
        row = self.db.get(DnsRecord, record_id)
        if row is None:
            raise NotFound(kind="DNS record", ident=record_id)
        return row

    def create_dns_record(self, body: dict[str, Any]) -> DnsRecord:
        row = DnsRecord()
        self._fill_record(row, body, creating=True)
        self.db.add(row)
        self.db.flush()
        return row

    def update_dns_record(self, record_id: str, body: dict[str, Any]) -> DnsRecord:
        row = self.dns_record(record_id)
        self._fill_record(row, body, creating=False)
        self.db.flush()
        return row

    def delete_dns_record(self, record_id: str) -> None:
        self.db.delete(self.dns_record(record_id))

    def _fill_record(self, row: DnsRecord, body: dict[str, Any], *, creating: bool) -> None:
        if creating or "name" in body:
            row.name = parse_hostname(body.get("name"), "name")
        if creating or "type" in body:
            row.type = _choice(str(body.get("type", "")).upper(), "type", DNS_TYPES)
        if creating or "value" in body:
            value = body.get("value")
            row.value = str(parse_ip(value, "value")) if row.type == "A" else parse_hostname(value, "value")
        if "ttl" in body or creating:
            row.ttl = _int(body.get("ttl", 300), "ttl", 0, 7 * 86400)

    def zone_records(self, now: datetime) -> list[tuple[str, str, str, int]]:
        """(name, type, value, ttl) for the zone: operator records, reservations with an address,
        and each named machine's current lease. Names are relative to the zone's domain."""
        records: list[tuple[str, str, str, int]] = []
        named: set[str] = set()
        for rec in self.dns_records():
            records.append((rec.name, rec.type, rec.value, rec.ttl))
            named.add(rec.name)
        hosts = {h.mac: h for h in self.hosts()}
        for host in hosts.values():
            if host.hostname and host.ip is not None and host.hostname not in named:
                records.append((host.hostname, "A", str(host.ip), 300))
                named.add(host.hostname)
        live = self.db.scalars(select(DhcpLease).where(DhcpLease.state == "bound", DhcpLease.expires > now))
        for lease in live:
            owner = hosts.get(lease.mac)
            if owner is not None and owner.hostname and owner.hostname not in named:
                records.append((owner.hostname, "A", lease.ip, 300))
                named.add(owner.hostname)
        return records

    # -- boot events --

    def boot_events(self, query: CollectionQuery) -> Page[BootEvent]:
        return paged(self.db, select(BootEvent), query, EVENT_FIELDS, (BootEvent.at.desc(), BootEvent.id.desc()))

    def record_events(self, events: list[dict[str, Any]]) -> None:
        """One multi-row INSERT (no ORM objects: a boot storm sends thousands per second)."""
        if events:
            self.db.execute(insert(BootEvent), events)

    def prune_events(self, keep: int) -> int:
        newest = self.db.scalars(select(BootEvent.id).order_by(BootEvent.id.desc()).offset(keep).limit(1)).first()
        if newest is None:
            return 0
        result = self.db.execute(delete(BootEvent).where(BootEvent.id <= newest))
        return int(getattr(result, "rowcount", 0) or 0)

    # -- one-time boot tokens --

    def issue_token(self, mac: str, server: ServerHardware | None, ttl_s: int) -> str:
        """A new token for ``mac``'s next boot; earlier tokens of that MAC stop working."""
        now = self.clock()
        self.db.execute(delete(BootToken).where(BootToken.mac == mac))
        self.db.execute(delete(BootToken).where(BootToken.expires < now))
        token = secrets.token_urlsafe(24)
        self.db.add(BootToken(token_hash=hash_token(token), mac=mac,
                              server_hardware_id=server.id if server else None,
                              created=now, expires=now + timedelta(seconds=ttl_s)))
        return token

    def redeem_token(self, token: str) -> BootToken:
        """The token's row if it is valid now (marking its first use); NotFound otherwise, with no
        hint whether it never existed or expired."""
        row = self.db.get(BootToken, hash_token(token)) if token else None
        now = self.clock()
        if row is None or row.expires <= now:
            raise NotFound(kind="boot token", ident="(redacted)")
        if row.used is None:
            row.used = now
        return row
