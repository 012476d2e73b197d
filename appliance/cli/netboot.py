"""``ingot netboot``: the network boot services' data — DHCP subnets and reservations, the leases
handed out, DNS records, and the boot events that show what each machine fetched.

A subnet is named by its name or ID, a reservation by its MAC or ID, a DNS record by its name
(with ``--type`` when the name has several records) or ID. Values the API stores as "nothing"
(a reservation's address, a subnet's router...) are cleared with the word ``none``.

``events --follow`` prints the recent events, then polls for new ones about once a second (each
poll asks only for events with a higher ID than the last one printed, so none is shown twice or
skipped); ``--for SECONDS`` ends it, Ctrl-C as well.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from appliance.cli.client import ApiClient, decode, segment
from appliance.cli.errors import CliError, UsageError
from appliance.cli.hardware import quote_filter
from appliance.cli.hardware import resolve as resolve_server
from appliance.cli.output import (
    Column,
    JsonOption,
    format_value,
    note,
    print_collection,
    print_json,
    print_resource,
    when,
)
from pxe.backend import is_mac, normalise_mac

app = typer.Typer(help="Network boot: DHCP subnets and reservations, leases, DNS records and boot events.",
                  no_args_is_help=True)
subnets_app = typer.Typer(help="DHCP subnets: the network, address pool and options handed out.",
                          no_args_is_help=True)
reservations_app = typer.Typer(help="DHCP reservations: a MAC's fixed address, host name and what it boots.",
                               no_args_is_help=True)
dns_app = typer.Typer(help="DNS records Ingot serves in its domain (besides the machines' own names).",
                      no_args_is_help=True)
app.add_typer(subnets_app, name="subnets")
app.add_typer(reservations_app, name="reservations")
app.add_typer(dns_app, name="dns")

SUBNETS = "/rest/dhcp/subnets"
RESERVATIONS = "/rest/dhcp/reservations"
LEASES = "/rest/dhcp/leases"
EVENTS = "/rest/boot-events"
DNS_RECORDS = "/rest/dns/records"
SERVER_HARDWARE = "/rest/server-hardware"

MODES = ("server", "proxy")
UNKNOWN_MAC_POLICIES = ("ignore", "discovery", "address-only")
BOOT_CHOICES = ("netboot", "disk", "local", "none")
DNS_TYPES = ("A", "CNAME", "PTR")
SERVICES = ("dhcp", "tftp", "http")
CLEAR = "none"
POLL_S = 1.0
FOLLOW_BATCH = 500
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# --- how things look ---------------------------------------------------------------------------
def range_of(subnet: dict[str, Any]) -> str:
    first, last = subnet.get("rangeFirst"), subnet.get("rangeLast")
    return f"{first}-{last}" if first and last else ""


def _seconds(value: Any) -> str:
    return f"{value} s" if isinstance(value, int) else format_value(value)


def _dns_servers(subnet: dict[str, Any]) -> str:
    return ", ".join(str(d) for d in subnet.get("dnsServers") or [])


SUBNET_COLUMNS = (
    Column("Name", "name", no_wrap=True),
    Column("Network", "network", no_wrap=True),
    Column("Mode", "mode", no_wrap=True),
    Column("Range", range_of, no_wrap=True),
    Column("Router", "router", no_wrap=True, drop=2),
    Column("Unknown MACs", "unknownMacPolicy", no_wrap=True, drop=1),
    Column("Lease", lambda s: _seconds(s.get("leaseTime")), no_wrap=True, drop=3),
)
SUBNET_FIELDS = (
    Column("Name", "name"),
    Column("ID", "id"),
    Column("Network", "network"),
    Column("Mode", "mode"),
    Column("Range", range_of),
    Column("Router", "router"),
    Column("DNS servers", _dns_servers),
    Column("Domain", "domain"),
    Column("Lease time", lambda s: _seconds(s.get("leaseTime"))),
    Column("Unknown MACs", "unknownMacPolicy"),
    Column("Created", lambda s: when(s.get("created"))),
    Column("Modified", lambda s: when(s.get("modified"))),
    Column("URI", "uri"),
)
RESERVATION_COLUMNS = (
    Column("MAC", "mac", no_wrap=True),
    Column("IP", "ip", no_wrap=True),
    Column("Host name", "hostname"),
    Column("Boot", "boot", no_wrap=True),
    Column("Server", lambda r: r.get("_serverName") or _last_segment(r.get("serverHardwareUri")), drop=1),
    Column("ID", "id", no_wrap=True, drop=2),
)
LEASE_COLUMNS = (
    Column("IP", "ip", no_wrap=True),
    Column("MAC", "mac", no_wrap=True),
    Column("Host name", "hostname"),
    Column("State", "state", no_wrap=True),
    Column("Active", "active", no_wrap=True),
    Column("Expires", lambda lease: when(lease.get("expires")), no_wrap=True, drop=1),
)
EVENT_COLUMNS = (
    Column("Time", lambda e: when(e.get("at")), no_wrap=True),
    Column("Service", "service", no_wrap=True),
    Column("Action", "action", no_wrap=True),
    Column("MAC", "mac", no_wrap=True),
    Column("Client", "clientIp", no_wrap=True, drop=2),
    Column("OK", "ok", no_wrap=True),
    Column("Detail", "detail", drop=1),
)
DNS_COLUMNS = (
    Column("Name", "name", no_wrap=True),
    Column("Type", "recordType", no_wrap=True),
    Column("Value", "value"),
    Column("TTL", "ttl", justify="right", no_wrap=True),
    Column("ID", "id", no_wrap=True, drop=1),
)


def _last_segment(uri: Any) -> str:
    return str(uri).rsplit("/", 1)[-1] if uri else ""


def event_line(event: dict[str, Any]) -> str:
    """One event as one line, for ``--follow`` (a table cannot grow)."""
    parts = [when(event.get("at")), f"{event.get('service') or '':<4}", f"{event.get('action') or '':<16}",
             f"{event.get('mac') or '-':<17}", f"{event.get('clientIp') or '-':<15}",
             "ok    " if event.get("ok") else "FAILED", str(event.get("detail") or "")]
    return "  ".join(parts).rstrip()


# --- parsing what the user typed -----------------------------------------------------------------
def _choice(value: str, option: str, choices: tuple[str, ...]) -> str:
    for choice in choices:
        if value.strip().lower() == choice.lower():
            return choice
    raise UsageError(f"Unknown {option} {value!r}.", hints=["Use " + ", ".join(choices) + "."])


def parse_mac(text: str) -> str:
    if not is_mac(text):
        raise UsageError(f"Not a MAC address: {text!r}.", hints=["Write it as aa:bb:cc:dd:ee:ff."])
    return normalise_mac(text)


def parse_range(text: str) -> tuple[str | None, str | None]:
    """``first-last`` as the API's (rangeFirst, rangeLast); ``none`` clears both."""
    if text.strip().lower() == CLEAR:
        return None, None
    first, sep, last = text.partition("-")
    if not sep or not first.strip() or not last.strip():
        raise UsageError(f"Not an address range: {text!r}.", hints=["Write it as first-last, e.g. "
                                                                    "10.0.0.100-10.0.0.200."])
    return first.strip(), last.strip()


def parse_dns_list(text: str) -> list[str]:
    if text.strip().lower() == CLEAR:
        return []
    return [part.strip() for part in text.split(",") if part.strip()]


def _or_none(text: str) -> str | None:
    return None if text.strip().lower() == CLEAR else text.strip()


def subnet_body(*, name: str | None = None, network: str | None = None, range_: str | None = None,
                router: str | None = None, dns: str | None = None, domain: str | None = None,
                lease_time: int | None = None, mode: str | None = None,
                unknown_mac: str | None = None) -> dict[str, Any]:
    """The API body for the options given (``None``: not given)."""
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if network is not None:
        body["network"] = network.strip()
    if range_ is not None:
        body["rangeFirst"], body["rangeLast"] = parse_range(range_)
    if router is not None:
        body["router"] = _or_none(router)
    if dns is not None:
        body["dnsServers"] = parse_dns_list(dns)
    if domain is not None:
        body["domain"] = _or_none(domain)
    if lease_time is not None:
        body["leaseTime"] = lease_time
    if mode is not None:
        body["mode"] = _choice(mode, "mode", MODES)
    if unknown_mac is not None:
        body["unknownMacPolicy"] = _choice(unknown_mac, "unknown-MAC policy", UNKNOWN_MAC_POLICIES)
    return body


def event_filters(mac: str | None, service: str | None, failed: bool) -> list[str]:
    filters = []
    if mac:
        filters.append(f"mac='{parse_mac(mac)}'")
    if service:
        filters.append(f"service='{_choice(service, 'service', SERVICES)}'")
    if failed:
        filters.append("ok=false")
    return filters


# --- finding things ------------------------------------------------------------------------------
def _by_id_or_filter(client: ApiClient, base: str, text: str, flt: str, what: str, hint: str) -> dict[str, Any]:
    if text.startswith(base + "/"):
        text = text[len(base) + 1:]
    if _UUID.fullmatch(text):
        found: dict[str, Any] = client.get(f"{base}/{segment(text)}")
        return found
    members = [m for m in client.get(base, {"filter": flt}).get("members", []) if isinstance(m, dict)]
    if not members:
        raise CliError(f"No {what}.", hints=[hint])
    return members[0]


def resolve_subnet(client: ApiClient, name_or_id: str) -> dict[str, Any]:
    text = name_or_id.strip()
    if not text:
        raise UsageError("Name a subnet (its name or ID).")
    return _by_id_or_filter(client, SUBNETS, text, f"name='{quote_filter(text)}'", f"subnet is named {text!r}",
                            "List the subnets with `ingot netboot subnets list`.")


def resolve_reservation(client: ApiClient, mac_or_id: str) -> dict[str, Any]:
    text = mac_or_id.strip()
    if not text:
        raise UsageError("Name a reservation (its MAC or ID).")
    if text.startswith(RESERVATIONS + "/") or _UUID.fullmatch(text):
        return _by_id_or_filter(client, RESERVATIONS, text, "", "", "")
    mac = parse_mac(text)
    return _by_id_or_filter(client, RESERVATIONS, text, f"mac='{mac}'", f"reservation for {mac}",
                            "List the reservations with `ingot netboot reservations list`.")


def resolve_dns_record(client: ApiClient, name_or_id: str, record_type: str | None) -> dict[str, Any]:
    text = name_or_id.strip().rstrip(".")
    if not text:
        raise UsageError("Name a DNS record (its name or ID).")
    if text.startswith(DNS_RECORDS + "/") or _UUID.fullmatch(text):
        return _by_id_or_filter(client, DNS_RECORDS, text, "", "", "")
    filters = [f"name='{quote_filter(text)}'"]
    if record_type:
        filters.append(f"recordType='{_choice(record_type, 'record type', DNS_TYPES)}'")
    members = [m for m in client.get(DNS_RECORDS, {"filter": filters}).get("members", []) if isinstance(m, dict)]
    if not members:
        raise CliError(f"No DNS record is named {text!r}" + (f" with type {record_type.upper()}." if record_type
                                                              else "."),
                       hints=["List the records with `ingot netboot dns list`."])
    if len(members) > 1:
        listed = "; ".join(f"{m.get('recordType')} {m.get('value')} ({m.get('id')})" for m in members)
        raise UsageError(f"{text} has {len(members)} records: {listed}.",
                         hints=["Pick one with --type, or name it by its ID."])
    return members[0]


def _server_names(client: ApiClient, reservations: list[dict[str, Any]]) -> dict[str, str]:
    if not any(r.get("serverHardwareUri") for r in reservations):
        return {}
    servers = client.get(SERVER_HARDWARE, {"count": -1}).get("members", [])
    return {str(s.get("uri")): str(s.get("name")) for s in servers if isinstance(s, dict)}


def _done(body: dict[str, Any], as_json: bool, message: str) -> None:
    if as_json:
        print_json(body)
    else:
        note(message)


# --- subnets -------------------------------------------------------------------------------------
NetworkOption = Annotated[str | None, typer.Option("--network", help="The subnet in CIDR, e.g. 10.0.0.0/24.",
                                                   show_default=False)]
RangeOption = Annotated[str | None, typer.Option(
    "--range", help="Address pool first-last, e.g. 10.0.0.100-10.0.0.200 (none: no pool, proxy mode).",
    show_default=False)]
RouterOption = Annotated[str | None, typer.Option("--router", help="Default gateway (option 3), or none.",
                                                  show_default=False)]
DnsOption = Annotated[str | None, typer.Option(
    "--dns", help="DNS servers (option 6), comma-separated, or none (then the appliance, if it serves DNS).",
    show_default=False)]
DomainOption = Annotated[str | None, typer.Option("--domain", help="Domain name (option 15), or none.",
                                                  show_default=False)]
LeaseOption = Annotated[int | None, typer.Option("--lease-time", min=60, help="Lease time in seconds.",
                                                 show_default=False)]
ModeOption = Annotated[str | None, typer.Option(
    "--mode", help="server (hands out addresses) or proxy (boot options only; the site's DHCP stays).",
    show_default=False)]
UnknownOption = Annotated[str | None, typer.Option(
    "--unknown-mac", help="What unknown MACs get: ignore, discovery (the discovery ramdisk) or address-only.",
    show_default=False)]
SubnetArg = Annotated[str, typer.Argument(help="Subnet name or ID.", show_default=False)]


@subnets_app.command("list")
def list_subnets(as_json: JsonOption = False) -> None:
    """List the DHCP subnets."""
    with ApiClient.connect() as client:
        body = client.get(SUBNETS, {"sort": "name:asc"})
    print_collection(body, SUBNET_COLUMNS, as_json=as_json, empty="No subnets.")


@subnets_app.command()
def show(subnet: SubnetArg, as_json: JsonOption = False) -> None:
    """Show one subnet."""
    with ApiClient.connect() as client:
        body = resolve_subnet(client, subnet)
    print_resource(body, SUBNET_FIELDS, as_json=as_json)


@subnets_app.command()
def create(
    name: Annotated[str, typer.Argument(help="Name of the new subnet.", show_default=False)],
    network: NetworkOption = None,
    range_: RangeOption = None,
    router: RouterOption = None,
    dns: DnsOption = None,
    domain: DomainOption = None,
    lease_time: LeaseOption = None,
    mode: ModeOption = None,
    unknown_mac: UnknownOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a subnet (server mode needs --range)."""
    if not network:
        raise UsageError("A subnet needs --network, e.g. --network 10.0.0.0/24.")
    body = subnet_body(name=name, network=network, range_=range_, router=router, dns=dns, domain=domain,
                       lease_time=lease_time, mode=mode, unknown_mac=unknown_mac)
    with ApiClient.connect() as client:
        subnet = decode(client.post(SUBNETS, body))
    _done(subnet, as_json, f"Created subnet {subnet.get('name')} ({subnet.get('network')}, "
                           f"{subnet.get('mode')} mode): {subnet.get('id')}.")


@subnets_app.command()
def update(
    subnet: SubnetArg,
    name: Annotated[str | None, typer.Option("--name", help="A new name.", show_default=False)] = None,
    network: NetworkOption = None,
    range_: RangeOption = None,
    router: RouterOption = None,
    dns: DnsOption = None,
    domain: DomainOption = None,
    lease_time: LeaseOption = None,
    mode: ModeOption = None,
    unknown_mac: UnknownOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change the given fields of a subnet; the others stay."""
    body = subnet_body(name=name, network=network, range_=range_, router=router, dns=dns, domain=domain,
                       lease_time=lease_time, mode=mode, unknown_mac=unknown_mac)
    if not body:
        raise UsageError("Nothing to change.", hints=["Give at least one option, see --help."])
    with ApiClient.connect() as client:
        target = resolve_subnet(client, subnet)
        changed = client.put(f"{SUBNETS}/{segment(str(target['id']))}", body)
    _done(changed, as_json, f"Updated subnet {changed.get('name')}.")


@subnets_app.command()
def delete(subnet: SubnetArg) -> None:
    """Delete a subnet (the one on INGOT_DHCP_INTERFACE is made again from the settings at the next start)."""
    with ApiClient.connect() as client:
        target = resolve_subnet(client, subnet)
        client.delete(f"{SUBNETS}/{segment(str(target['id']))}")
    note(f"Deleted subnet {target.get('name')}.")


# --- reservations --------------------------------------------------------------------------------
ReservationArg = Annotated[str, typer.Argument(help="The reservation's MAC or ID.", show_default=False)]
BootOption = Annotated[str | None, typer.Option(
    "--boot", help="netboot (the ramdisk), disk (local disk through iPXE), local (address only, no boot "
                   "file) or none (no answer at all).", show_default=False)]
ServerOption = Annotated[str | None, typer.Option(
    "--server", help="The server hardware (name or ID) this MAC belongs to, or none.", show_default=False)]


def _reservation_body(client: ApiClient, *, ip: str | None, hostname: str | None, boot: str | None,
                      server: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if ip is not None:
        body["ip"] = _or_none(ip)
    if hostname is not None:
        body["hostname"] = _or_none(hostname)
    if boot is not None:
        body["boot"] = _choice(boot, "boot choice", BOOT_CHOICES)
    if server is not None:
        body["serverHardwareUri"] = None if _or_none(server) is None else resolve_server(client, server)["uri"]
    return body


def _reservation_note(res: dict[str, Any], verb: str) -> str:
    extras = [f"boot {res.get('boot')}"]
    if res.get("ip"):
        extras.insert(0, str(res["ip"]))
    if res.get("hostname"):
        extras.insert(1 if res.get("ip") else 0, str(res["hostname"]))
    return f"{verb} reservation for {res.get('mac')} ({', '.join(extras)})."


@reservations_app.command("list")
def list_reservations(as_json: JsonOption = False) -> None:
    """List the reservations."""
    with ApiClient.connect() as client:
        body = client.get(RESERVATIONS, {"sort": "mac:asc"})
        if as_json:
            print_json(body)
            return
        members = [m for m in body.get("members", []) if isinstance(m, dict)]
        names = _server_names(client, members)
    body["members"] = [{**m, "_serverName": names.get(str(m.get("serverHardwareUri")))} for m in members]
    print_collection(body, RESERVATION_COLUMNS, as_json=False, empty="No reservations.")


@reservations_app.command()
def add(
    mac: Annotated[str, typer.Argument(help="MAC address (aa:bb:cc:dd:ee:ff).", show_default=False)],
    ip: Annotated[str | None, typer.Option("--ip", help="Fixed address (inside a subnet).", show_default=False)] = None,
    hostname: Annotated[str | None, typer.Option("--hostname", help="Host name (also served in DNS).",
                                                 show_default=False)] = None,
    boot: BootOption = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Reserve a MAC: fixed address, host name, and what it boots (default netboot)."""
    with ApiClient.connect() as client:
        body = {"mac": parse_mac(mac), **_reservation_body(client, ip=ip, hostname=hostname, boot=boot,
                                                           server=server)}
        res = decode(client.post(RESERVATIONS, body))
    _done(res, as_json, _reservation_note(res, "Added"))


@reservations_app.command("update")
def update_reservation(
    reservation: ReservationArg,
    mac: Annotated[str | None, typer.Option("--mac", help="A new MAC address.", show_default=False)] = None,
    ip: Annotated[str | None, typer.Option("--ip", help="Fixed address, or none.", show_default=False)] = None,
    hostname: Annotated[str | None, typer.Option("--hostname", help="Host name, or none.",
                                                 show_default=False)] = None,
    boot: BootOption = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change the given fields of a reservation; the others stay."""
    with ApiClient.connect() as client:
        body = _reservation_body(client, ip=ip, hostname=hostname, boot=boot, server=server)
        if mac is not None:
            body["mac"] = parse_mac(mac)
        if not body:
            raise UsageError("Nothing to change.", hints=["Give at least one option, see --help."])
        target = resolve_reservation(client, reservation)
        res = client.put(f"{RESERVATIONS}/{segment(str(target['id']))}", body)
    _done(res, as_json, _reservation_note(res, "Updated"))


@reservations_app.command()
def remove(reservation: ReservationArg) -> None:
    """Remove a reservation (the MAC is then treated as enrolled or unknown again)."""
    with ApiClient.connect() as client:
        target = resolve_reservation(client, reservation)
        client.delete(f"{RESERVATIONS}/{segment(str(target['id']))}")
    note(f"Removed the reservation for {target.get('mac')}.")


# --- leases and events -----------------------------------------------------------------------------
MacOption = Annotated[str | None, typer.Option("--mac", help="Only this MAC address.", show_default=False)]


@app.command()
def leases(mac: MacOption = None, as_json: JsonOption = False) -> None:
    """The DHCP leases: address, MAC, host name, state and expiry."""
    params: dict[str, Any] = {"sort": "ip:asc"}
    if mac:
        params["filter"] = f"mac='{parse_mac(mac)}'"
    with ApiClient.connect() as client:
        body = client.get(LEASES, params)
    print_collection(body, LEASE_COLUMNS, as_json=as_json, empty="No leases.")


@app.command()
def events(
    mac: MacOption = None,
    service: Annotated[str | None, typer.Option("--service", help="Only dhcp, tftp or http.",
                                                show_default=False)] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only what failed.")] = False,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="How many recent events to show.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events as they come.")] = False,
    for_s: Annotated[float | None, typer.Option(
        "--for", min=0, help="With --follow: stop after this many seconds (implies --follow).",
        show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Boot events, newest first: what each machine asked DHCP, TFTP and HTTP for, and what it got.

    With --follow: oldest first, then new ones as they arrive (one JSON object per line with --json).
    """
    filters = event_filters(mac, service, failed)
    with ApiClient.connect() as client:
        body = client.get(EVENTS, {"filter": filters, "count": count})
        if not follow and for_s is None:
            print_collection(body, EVENT_COLUMNS, as_json=as_json, empty="No boot events.")
            return
        _follow(client, filters, body, as_json=as_json, seconds=for_s)


def _follow(client: ApiClient, filters: list[str], recent: dict[str, Any], *, as_json: bool,
            seconds: float | None, sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> None:
    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write((json.dumps(event) if as_json else event_line(event)) + "\n")

    members = [m for m in recent.get("members", []) if isinstance(m, dict)]
    last = max((int(m["id"]) for m in members if isinstance(m.get("id"), int)), default=0)
    for event in reversed(members):  # oldest first, like a log
        emit(event)
    sys.stdout.flush()
    deadline = None if seconds is None else clock() + seconds
    try:
        while deadline is None or clock() < deadline:
            wait = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - clock()))
            sleep(wait)
            page = client.get(EVENTS, {"filter": [*filters, f"id>{last}"], "sort": "id:ascending",
                                       "count": FOLLOW_BATCH})
            for event in page.get("members", []):
                if isinstance(event, dict) and isinstance(event.get("id"), int):
                    emit(event)
                    last = max(last, event["id"])
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.flush()


# --- DNS -----------------------------------------------------------------------------------------
@dns_app.command("list")
def list_records(as_json: JsonOption = False) -> None:
    """List the DNS records (servers' and reservations' own names are served too, but not listed)."""
    with ApiClient.connect() as client:
        body = client.get(DNS_RECORDS, {"sort": "name:asc"})
    print_collection(body, DNS_COLUMNS, as_json=as_json, empty="No DNS records.")


@dns_app.command("add")
def add_record(
    name: Annotated[str, typer.Argument(help="Name inside the appliance's domain, e.g. repo.", show_default=False)],
    record_type: Annotated[str, typer.Argument(metavar="TYPE", help="A, CNAME or PTR.", show_default=False)],
    value: Annotated[str, typer.Argument(help="An IPv4 address (A) or a host name (CNAME, PTR).",
                                         show_default=False)],
    ttl: Annotated[int | None, typer.Option("--ttl", min=0, help="Time to live in seconds (default 300).",
                                            show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Add a DNS record."""
    body: dict[str, Any] = {"name": name, "recordType": _choice(record_type, "record type", DNS_TYPES),
                            "value": value}
    if ttl is not None:
        body["ttl"] = ttl
    with ApiClient.connect() as client:
        record = decode(client.post(DNS_RECORDS, body))
    _done(record, as_json, f"Added {record.get('name')} {record.get('recordType')} {record.get('value')} "
                           f"(TTL {record.get('ttl')}): {record.get('id')}.")


@dns_app.command("remove")
def remove_record(
    record: Annotated[str, typer.Argument(help="The record's name or ID.", show_default=False)],
    record_type: Annotated[str | None, typer.Option("--type", help="A, CNAME or PTR, when the name has several.",
                                                    show_default=False)] = None,
) -> None:
    """Remove a DNS record."""
    with ApiClient.connect() as client:
        target = resolve_dns_record(client, record, record_type)
        client.delete(f"{DNS_RECORDS}/{segment(str(target['id']))}")
    note(f"Removed {target.get('name')} {target.get('recordType')} {target.get('value')}.")
