"""``ingot hardware``: servers managed through their BMC — add, list, show, power, boot device,
refresh, remove, fleet power sync, network discovery, the serial console, and the provision
state machine (inspect, and the operator's other provision events).

A server is named by its ID (a UUID, or a ``/rest/server-hardware/<id>`` URI) or by its name.
Commands that start a task follow it with the live progress bar unless ``--no-wait`` is given,
and exit 1 with the task's error when it fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import select
import ssl
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer

import appliance
from appliance.cli.client import API_VERSION, ApiClient, decode, segment
from appliance.cli.errors import EXIT_AUTH, EXIT_FAILED, ApiError, CliError, UsageError
from appliance.cli.output import (
    Column,
    JsonOption,
    format_value,
    note,
    print_collection,
    print_json,
    print_resource,
    print_table,
    stderr,
    when,
)
from appliance.cli.passwords import read_password
from appliance.cli.progress import follow_task, has_failed, report_tasks, start_task, watch_tasks
from appliance.cli.session import Target

app = typer.Typer(help="Server hardware: BMC-managed servers, their power, boot device, console and provision state.",
                  no_args_is_help=True)

BASE = "/rest/server-hardware"
DRIVERS = ("ipmi", "redfish", "fake")
BOOT_DEVICES = ("pxe", "disk", "cd", "bios", "none")
# ingot's word -> the OneView powerState / powerControl pair that asks for it.
POWER_ACTIONS: dict[str, tuple[str, str]] = {
    "on": ("On", "MomentaryPress"),
    "off": ("Off", "MomentaryPress"),  # graceful: ACPI shutdown, the OS decides
    "force-off": ("Off", "PressAndHold"),
    "cycle": ("On", "ColdBoot"),
    "reset": ("On", "Reset"),
}
# The provision events an operator sends to a server (PUT .../provisionState); deploy, capture and
# release come from server profiles. ``inspect`` starts a task, the others answer at once.
PROVISION_EVENTS = ("manage", "inspect", "maintain", "unmaintain", "abort", "retire")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
ESCAPE = b"~"
DISCONNECT = b"."
# websocket close codes the console endpoint uses
CLOSE_NOT_LOGGED_IN = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


# --- how servers look --------------------------------------------------------------------------
def bmc_of(server: dict[str, Any]) -> str:
    """``host:port`` of the server's BMC."""
    host = (server.get("mpHostInfo") or {}).get("mpHostName") or ""
    port = server.get("mpPort")
    return f"{host}:{port}" if host and port else str(host)


def boot_of(server: dict[str, Any]) -> str:
    boot = server.get("bootDevice")
    if not isinstance(boot, dict) or not boot.get("device"):
        return ""
    extras = ["persistent" if boot.get("persistent") else "next boot only"]
    if boot.get("mode"):
        extras.append(str(boot["mode"]))
    return f"{boot['device']} ({', '.join(extras)})"


def provision_of(server: dict[str, Any]) -> str:
    """The provision state, with the state it is heading for while work runs
    (``inspect-wait → available``) or the one it returns to after maintenance."""
    state = str(server.get("provisionState") or "")
    if server.get("targetProvisionState"):
        return f"{state} → {server['targetProvisionState']}"
    if state == "maintenance" and server.get("maintenanceFrom"):
        return f"{state} (from {server['maintenanceFrom']})"
    return state


def gib(value: Any) -> str:
    return f"{value / (1 << 30):.1f} GiB" if isinstance(value, int) and not isinstance(value, bool) else ""


def _part(inventory: dict[str, Any], key: str) -> dict[str, Any]:
    value = inventory.get(key)
    return value if isinstance(value, dict) else {}


def inventory_lines(server: dict[str, Any]) -> list[str]:
    """What inspection found, in words: CPU, memory and the system's identity (disks and NICs are
    tables, see DISK_COLUMNS and NIC_COLUMNS); empty before the server was inspected."""
    inventory = server.get("hardwareInventory")
    if not isinstance(inventory, dict):
        return []
    cpu = _part(inventory, "cpu")
    count, model, arch = cpu.get("count"), cpu.get("model"), cpu.get("architecture")
    cpu_text = " x ".join(str(part) for part in (count, model) if part not in (None, ""))
    if arch:
        cpu_text = f"{cpu_text} ({arch})" if cpu_text else str(arch)
    memory = server.get("memoryMb")
    system = _part(inventory, "system")
    identity = " ".join(str(system[k]) for k in ("sys_vendor", "product_name") if system.get(k))
    extras = [f"{label} {system[k]}" for label, k in (("serial", "product_serial"), ("BIOS", "bios_version"))
              if system.get(k)]
    lines = [f"CPU: {cpu_text or 'unknown'}", f"Memory: {f'{memory} MiB' if memory else 'unknown'}"]
    if identity or extras:
        lines.append("System: " + ", ".join(p for p in (identity, *extras) if p))
    return lines


def _disk_kind(disk: dict[str, Any]) -> str:
    kind = "HDD" if disk.get("rotational") else "SSD"
    return f"{kind}, removable" if disk.get("removable") else kind


def _addresses(server: dict[str, Any]) -> str:
    found = (server.get("mpHostInfo") or {}).get("mpIpAddresses") or []
    return ", ".join(str(a.get("address")) for a in found if isinstance(a, dict) and a.get("address"))


SERVER_COLUMNS = (
    Column("Name", "name", no_wrap=True),
    Column("Power", "powerState", no_wrap=True),
    Column("State", "state", no_wrap=True),
    Column("Provision", provision_of, no_wrap=True),
    Column("Status", "status", no_wrap=True),
    Column("Model", "model", drop=2),
    Column("Serial", "serialNumber", drop=1),
    Column("BMC", bmc_of, no_wrap=True, drop=3),
)
SERVER_FIELDS = (
    Column("Name", "name"),
    Column("ID", "id"),
    Column("State", "state"),
    Column("State reason", "stateReason"),
    Column("Status", "status"),
    Column("Provision state", provision_of),
    Column("Last error", "lastError"),
    Column("Inspected", lambda s: when(s.get("inspected")) or "never"),
    Column("Power", "powerState"),
    Column("Boot device", boot_of),
    Column("Driver", "driver"),
    Column("BMC", bmc_of),
    Column("BMC addresses", _addresses),
    Column("BMC link", "bmcCircuit"),
    Column("BMC firmware", "mpFirmwareVersion"),
    Column("Manufacturer", "manufacturer"),
    Column("Model", "model"),
    Column("Serial number", "serialNumber"),
    Column("Part number", "partNumber"),
    Column("UUID", "uuid"),
    Column("ROM version", "romVersion"),
    Column("Last contact", lambda s: when(s.get("lastContact"))),
    Column("Created", lambda s: when(s.get("created"))),
    Column("Modified", lambda s: when(s.get("modified"))),
    Column("URI", "uri"),
)
SENSOR_COLUMNS = (
    Column("Sensor", "name"),
    Column("Kind", "kind", no_wrap=True),
    Column("Value", lambda s: " ".join(p for p in (format_value(s.get("value")), format_value(s.get("units"))) if p),
           justify="right", no_wrap=True),
    Column("Health", "health", no_wrap=True),
)
DISK_COLUMNS = (
    Column("Disk", "name", no_wrap=True),
    Column("Size", lambda d: gib(d.get("size_bytes")), justify="right", no_wrap=True),
    Column("Type", _disk_kind, no_wrap=True),
    Column("Model", "model"),
    Column("Vendor", "vendor", drop=1),
    Column("Serial", "serial", no_wrap=True),
    Column("WWN", "wwn", no_wrap=True, drop=2),
)
def _neighbour(lldp: dict[str, Any] | None) -> str:
    """``switch port`` of an LLDP neighbour, with its VLAN; empty when none was heard."""
    if not lldp:
        return ""
    text = f"{lldp.get('system_name') or lldp.get('chassis_id')} {lldp.get('port_description') or lldp.get('port_id')}"
    return f"{text} (VLAN {lldp['vlan_id']})" if lldp.get("vlan_id") else text


NIC_COLUMNS = (
    Column("NIC", "name", no_wrap=True),
    Column("MAC", "mac", no_wrap=True),
    Column("Link", lambda n: "up" if n.get("link") else "down", no_wrap=True),
    Column("Speed", lambda n: f"{n['speed_mbps']} Mb/s" if n.get("speed_mbps") else "", justify="right",
           no_wrap=True),
    Column("Driver", "driver", drop=1),
    Column("Switch port (LLDP)", lambda n: _neighbour(n.get("lldp")), drop=2),
)
FOUND_COLUMNS = (
    Column("Address", "address", no_wrap=True),
    Column("Port", "port", justify="right", no_wrap=True),
    Column("Protocol", "protocol", no_wrap=True),
    Column("Enrolled", lambda f: f.get("_enrolledAs") or ("yes" if f.get("enrolled") else "no"), no_wrap=True),
    Column("Detail", lambda f: _detail(f.get("detail"))),
)


def _detail(detail: Any) -> str:
    if not isinstance(detail, dict):
        return format_value(detail)
    return ", ".join(f"{key}={format_value(value)}" for key, value in detail.items()
                     if value not in (None, "", [], {}))


# --- finding a server ----------------------------------------------------------------------------
def server_path(server_id: str) -> str:
    return f"{BASE}/{segment(server_id)}"


def quote_filter(value: str) -> str:
    """A value inside a OneView filter's single quotes (a quote is doubled)."""
    return value.replace("'", "''")


def resolve(client: ApiClient, name_or_id: str) -> dict[str, Any]:
    """The server with this ID (or URI) if it looks like one, else the one with this name.

    :raises CliError: (exit 1) if there is none; (exit 2) if the name is ambiguous.
    """
    text = name_or_id.strip()
    if not text:
        raise UsageError("Name a server (its name or ID).")
    if text.startswith(BASE + "/"):
        text = text[len(BASE) + 1:]
    if _UUID.fullmatch(text):
        server: dict[str, Any] = client.get(server_path(text))
        return server
    body = client.get(BASE, {"filter": f"name='{quote_filter(text)}'"})
    members = [m for m in body.get("members", []) if isinstance(m, dict)]
    if not members:
        raise CliError(f"No server hardware is named {text!r}.",
                       hints=["List the servers with `ingot hardware list`."])
    exact = [m for m in members if m.get("name") == text] or members
    if len(exact) > 1:
        ids = ", ".join(str(m.get("id")) for m in exact)
        raise UsageError(f"More than one server is named {text!r} ({ids}).", hints=["Name it by its ID instead."])
    return exact[0]


# --- tasks -------------------------------------------------------------------------------------
Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the task with a progress bar.")]
NameArg = Annotated[str, typer.Argument(help="Server name or ID.", show_default=False)]


# --- commands ----------------------------------------------------------------------------------
@app.command()
def add(
    host: Annotated[str, typer.Argument(help="BMC host name or IP address.", show_default=False)],
    username: Annotated[str, typer.Option("--username", "-u", help="BMC user name.")],
    password: Annotated[str | None, typer.Option(
        "--password", "-p", help="BMC password (default: asked for, hidden).", show_default=False)] = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the BMC password from standard input.")] = False,
    port: Annotated[int | None, typer.Option(
        "--port", min=1, max=65535, help="BMC port (default: 623 for ipmi, 443 for redfish).",
        show_default=False)] = None,
    driver: Annotated[str, typer.Option("--driver", help="ipmi, redfish or fake.")] = "ipmi",
    name: Annotated[str | None, typer.Option(
        "--name", help="Name in Ingot (default: chosen by the appliance).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Take over a BMC another manager claims.")] = False,
    wait: Wait = True,
    as_json: JsonOption = False,
) -> None:
    """Enrol a server by its BMC: Ingot reads its inventory, power state and boot device."""
    chosen = parse_driver(driver)
    secret = password if password is not None else read_password("BMC password", from_stdin=password_stdin)
    body = enrol_body(host, username, secret, port=port, driver=chosen, name=name, force=force)
    with ApiClient.connect() as client:
        task = follow_task(client, client.post(BASE, body), wait=wait, what=f"Adding {host}", as_json=as_json)
        if task is None:
            return
        uri = (task.get("associatedResource") or {}).get("resourceUri")
        if not uri:
            raise CliError(f"Task {task.get('id')} finished but names no server hardware.")
        server = client.get(uri)
    if as_json:
        print_json(server)
    else:
        note(f"Added {server.get('name')} ({server.get('id')}): {server.get('state')}, "
             f"power {server.get('powerState')}.")


def parse_driver(text: str) -> str:
    value = text.strip().lower()
    if value not in DRIVERS:
        raise UsageError(f"Unknown driver {text!r}.", hints=["Use " + ", ".join(DRIVERS) + "."])
    return value


def enrol_body(host: str, username: str, password: str, *, port: int | None, driver: str,
               name: str | None = None, force: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"hostname": host, "username": username, "password": password, "driver": driver}
    if port is not None:
        body["port"] = port
    if name:
        body["name"] = name
    if force:
        body["force"] = True
    return body


@app.command("list")
def list_servers(
    filter_: Annotated[str | None, typer.Option(
        "--filter", help="A OneView filter, e.g. \"powerState='On'\".", show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """List servers by name."""
    params: dict[str, Any] = {"sort": "name:asc"}
    if filter_:
        params["filter"] = filter_
    with ApiClient.connect() as client:
        body = client.get(BASE, params)
    print_collection(body, SERVER_COLUMNS, as_json=as_json, empty="No server hardware.")


@app.command()
def show(server: NameArg, as_json: JsonOption = False) -> None:
    """Show one server: state, provision state, power, BMC, inventory, MAC addresses and sensors."""
    with ApiClient.connect() as client:
        body = resolve(client, server)
    print_resource(body, SERVER_FIELDS, as_json=as_json)
    if as_json:
        return
    macs = [str(m) for m in body.get("macAddresses") or []]
    note("")
    note("MAC addresses: " + (", ".join(macs) if macs else "none reported"))
    print_inventory(body)
    sensors = [s for s in body.get("sensors") or [] if isinstance(s, dict)]
    if sensors:
        note("")
        print_table(sensors, SENSOR_COLUMNS, empty="")


def print_inventory(server: dict[str, Any]) -> None:
    """The hardware inspection found (CPU, memory, disks, NICs), or that there is none yet."""
    note("")
    lines = inventory_lines(server)
    if not lines:
        note("Inventory: not inspected yet (`ingot hardware inspect` reads it).")
        return
    note(f"Inventory (inspected {when(server.get('inspected')) or 'at an unknown time'}):")
    for line in lines:
        note(f"  {line}")
    inventory = server.get("hardwareInventory") or {}
    for key, columns, empty in (("disks", DISK_COLUMNS, "No disks reported."),
                                ("nics", NIC_COLUMNS, "No NICs reported.")):
        note("")
        print_table([i for i in inventory.get(key) or [] if isinstance(i, dict)], columns, empty=empty)


@app.command()
def power(
    server: NameArg,
    action: Annotated[str, typer.Argument(help="on, off (graceful), force-off, cycle or reset.", show_default=False)],
    wait: Wait = True,
) -> None:
    """Power a server on or off, power-cycle or reset it."""
    key = action.strip().lower()
    if key not in POWER_ACTIONS:
        raise UsageError(f"Unknown power action {action!r}.", hints=["Use " + ", ".join(POWER_ACTIONS) + "."])
    state, control = POWER_ACTIONS[key]
    with ApiClient.connect() as client:
        target = resolve(client, server)
        response = client.request("PUT", f"{server_path(str(target['id']))}/powerState",
                                  json={"powerState": state, "powerControl": control})
        if follow_task(client, response, wait=wait, what=f"Power {key} of {target.get('name')}") is None:
            return
        after = client.get(server_path(str(target["id"])))
    note(f"{after.get('name')} is powered {after.get('powerState')}.")


@app.command()
def bootdev(
    server: NameArg,
    device: Annotated[str, typer.Argument(help="pxe, disk, cd, bios (setup) or none.", show_default=False)],
    persistent: Annotated[bool, typer.Option("--persistent", help="Every boot, not just the next one.")] = False,
    uefi: Annotated[bool, typer.Option("--uefi", help="Boot in UEFI mode.")] = False,
    bios: Annotated[bool, typer.Option("--bios", help="Boot in legacy BIOS mode.")] = False,
    wait: Wait = True,
) -> None:
    """Set the device a server boots from (next boot only unless --persistent)."""
    chosen = device.strip().lower()
    if chosen not in BOOT_DEVICES:
        raise UsageError(f"Unknown boot device {device!r}.", hints=["Use " + ", ".join(BOOT_DEVICES) + "."])
    if uefi and bios:
        raise UsageError("--uefi and --bios exclude each other.")
    mode = "uefi" if uefi else "bios" if bios else None
    with ApiClient.connect() as client:
        target = resolve(client, server)
        response = client.request("PUT", f"{server_path(str(target['id']))}/bootDevice",
                                  json={"device": chosen, "persistent": persistent, "mode": mode})
        if follow_task(client, response, wait=wait, what=f"Boot device of {target.get('name')}") is None:
            return
        after = client.get(server_path(str(target["id"])))
    note(f"{after.get('name')} boots from {boot_of(after) or chosen}.")


@app.command()
def refresh(server: NameArg, wait: Wait = True) -> None:
    """Read a server's inventory, power state and boot device from its BMC again."""
    with ApiClient.connect() as client:
        target = resolve(client, server)
        response = client.request("PUT", f"{server_path(str(target['id']))}/refreshState",
                                  json={"refreshState": "RefreshPending"})
        if follow_task(client, response, wait=wait, what=f"Refreshing {target.get('name')}") is None:
            return
        after = client.get(server_path(str(target["id"])))
    note(f"{after.get('name')} refreshed: {after.get('state')}, status {after.get('status')}, "
         f"power {after.get('powerState')}.")


@app.command()
def inspect(server: NameArg, wait: Wait = True) -> None:
    """Read a server's hardware: boot it into the deploy agent, which reports CPU, memory, disks and
    NICs, then power it off; it ends available (in the pool)."""
    send_provision_event(server, "inspect", wait=wait)


@app.command()
def provision(
    server: NameArg,
    event: Annotated[str, typer.Argument(
        help="manage, inspect, maintain, unmaintain, abort or retire.", show_default=False)],
    wait: Wait = True,
) -> None:
    """Send a provision event to a server and print its new provision state (inspect: as `inspect`)."""
    send_provision_event(server, event, wait=wait)


def send_provision_event(server: str, event: str, *, wait: bool) -> None:
    key = event.strip().lower()
    if key not in PROVISION_EVENTS:
        raise UsageError(f"Unknown provision event {event!r}.", hints=["Use " + ", ".join(PROVISION_EVENTS) + "."])
    with ApiClient.connect() as client:
        target = resolve(client, server)
        path = server_path(str(target["id"]))
        response = client.request("PUT", f"{path}/provisionState", json={"event": key})
        if response.status_code != 202:  # done at once: the answer is the server
            after: dict[str, Any] = decode(response)
            note(f"{after.get('name')} is {provision_of(after)}.")
            return
        if follow_task(client, response, wait=wait, what=f"Inspecting {target.get('name')}") is None:
            return
        after = client.get(path)
    note(f"{after.get('name')} inspected: {', '.join([provision_of(after), *inventory_summary(after)])}.")


def inventory_summary(server: dict[str, Any]) -> list[str]:
    """``4 x Xeon``, ``2048 MiB``, ``2 disks``, ``1 NIC``: what inspection found, in short."""
    inventory = server.get("hardwareInventory")
    if not isinstance(inventory, dict):
        return []
    parts = [line.split(": ", 1)[1] for line in inventory_lines(server)[:2]]
    for key, word in (("disks", "disk"), ("nics", "NIC")):
        count = len(inventory.get(key) or [])
        parts.append(f"{count} {word}" + ("" if count == 1 else "s"))
    return parts


@app.command()
def remove(server: NameArg, wait: Wait = True) -> None:
    """Stop managing a server (the machine itself is left as it is)."""
    with ApiClient.connect() as client:
        target = resolve(client, server)
        response = client.request("DELETE", server_path(str(target["id"])))
        if follow_task(client, response, wait=wait, what=f"Removing {target.get('name')}") is None:
            return
    note(f"Removed {target.get('name')}.")


@app.command()
def sync(wait: Wait = True, as_json: JsonOption = False) -> None:
    """Read every server's power state from its BMC now (normally done periodically)."""
    with ApiClient.connect() as client:
        if follow_task(client, client.post(f"{BASE}/power-sync"), wait=wait, what="Power sync",
                  as_json=as_json) is None:
            return
        body = client.get(BASE, {"sort": "name:asc"})
    print_collection(body, SERVER_COLUMNS, as_json=as_json, empty="No server hardware.")


@app.command()
def discover(
    cidr: Annotated[str, typer.Argument(help="Network to scan, e.g. 10.0.0.0/24 (or one address).",
                                        show_default=False)],
    ports: Annotated[list[int] | None, typer.Option(
        "--port", min=1, max=65535, help="IPMI port to try (repeatable) (default: 623).", show_default=False)] = None,
    redfish_ports: Annotated[list[int] | None, typer.Option(
        "--redfish-port", min=1, max=65535, help="Redfish (HTTPS) port to try (repeatable) (default: none).",
        show_default=False)] = None,
    enroll: Annotated[str | None, typer.Option(
        "--enroll", help="Then add 'all' new ones, or these addresses (comma-separated).", show_default=False)] = None,
    username: Annotated[str | None, typer.Option(
        "--username", "-u", help="BMC user name for --enroll.", show_default=False)] = None,
    password: Annotated[str | None, typer.Option(
        "--password", "-p", help="BMC password for --enroll (default: asked for, hidden).", show_default=False)] = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the BMC password for --enroll from standard input.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Scan a network for BMCs (IPMI and Redfish), show what answered, optionally enrol them."""
    try:
        ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise UsageError(f"Not a network: {cidr!r}.", hints=["Use CIDR notation, e.g. 10.0.0.0/24."]) from None
    if enroll is not None and not username:
        raise UsageError("--enroll needs the BMC user name (-u).")
    if enroll is None and (username or password is not None or password_stdin):
        raise UsageError("-u and -p are for --enroll.")
    secret = ""
    if enroll is not None:  # ask before the scan, not after it
        secret = password if password is not None else read_password("BMC password", from_stdin=password_stdin)
    body: dict[str, Any] = {"cidr": cidr.strip()}
    if ports:
        body["ipmiPorts"] = list(ports)
    if redfish_ports:
        body["redfishPorts"] = list(redfish_ports)
    with ApiClient.connect() as client:
        task = follow_task(client, client.post(f"{BASE}/discover", body), wait=True, what=f"Discovery of {cidr}")
        assert task is not None
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        found = [f for f in (data or {}).get("found") or [] if isinstance(f, dict)]
        chosen = choose_enrolments(found, enroll) if enroll is not None else []
        if as_json and not chosen:
            print_json(data)
            return
        if not as_json:
            _print_found(client, found)
        if not chosen:
            return
        code = _enrol(client, chosen, str(username), secret, as_json=as_json)
    if code:
        raise typer.Exit(code)


def _print_found(client: ApiClient, found: Sequence[dict[str, Any]]) -> None:
    if not found:
        note("No BMC answered.")
        return
    names: dict[str, str] = {}
    for item in found:
        uri = item.get("serverHardwareUri")
        if item.get("enrolled") and isinstance(uri, str) and uri and uri not in names:
            try:
                names[uri] = f"yes: {client.get(uri).get('name')}"
            except ApiError:
                names[uri] = "yes"
    rows = [{**item, "_enrolledAs": names.get(str(item.get("serverHardwareUri")))} for item in found]
    print_table(rows, FOUND_COLUMNS, empty="No BMC answered.")
    new = sum(1 for item in found if not item.get("enrolled"))
    note(f"{len(found)} answered, {new} not enrolled yet.")


def choose_enrolments(found: Sequence[dict[str, Any]], enroll: str) -> list[dict[str, Any]]:
    """The answers to enrol: ``all`` new ones, or the named addresses (one answer per address:
    the first protocol that answered).

    :raises UsageError: for an address that did not answer or is enrolled already.
    """
    new: dict[str, dict[str, Any]] = {}
    enrolled: set[str] = set()
    for item in found:
        address = str(item.get("address") or "")
        if item.get("enrolled"):
            enrolled.add(address)
        elif address and address not in new:
            new[address] = item
    if enroll.strip().lower() == "all":
        return [item for address, item in new.items() if address not in enrolled]
    wanted = [a.strip() for a in enroll.split(",") if a.strip()]
    if not wanted:
        raise UsageError("--enroll needs 'all' or a comma-separated list of addresses.")
    missing = [a for a in wanted if a not in new]
    if missing:
        already = [a for a in missing if a in enrolled]
        raise UsageError(f"Cannot enrol {', '.join(missing)}: "
                         + ("already enrolled." if already == missing else "no BMC answered there."),
                         hints=["Pick from the addresses in the table, or use --enroll all."])
    return [new[a] for a in dict.fromkeys(wanted)]


def _enrol(client: ApiClient, chosen: Sequence[dict[str, Any]], username: str, password: str,
           *, as_json: bool) -> int:
    ids: list[str] = []
    for item in chosen:
        protocol = str(item.get("protocol") or "ipmi")
        port = item.get("port")
        body = enrol_body(str(item["address"]), username, password, port=port if isinstance(port, int) else None,
                          driver=protocol if protocol in DRIVERS else "ipmi")
        task_id, _ = start_task(client.post(BASE, body))
        ids.append(task_id)
    tasks = watch_tasks(client, ids)
    if as_json:
        servers = []
        for task in tasks:
            uri = (task.get("associatedResource") or {}).get("resourceUri")
            if not has_failed(task) and uri:
                servers.append(client.get(uri))
        print_json({"tasks": tasks, "serverHardware": servers})
        return EXIT_FAILED if any(has_failed(t) for t in tasks) else 0
    return report_tasks(tasks)


# --- the serial console ------------------------------------------------------------------------
@dataclass
class EscapeFilter:
    """ssh's escape: ``~.`` at the start of a line disconnects, ``~~`` sends one ``~``."""

    at_line_start: bool = True
    pending: bool = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to send, whether to disconnect)."""
        out = bytearray()
        for value in data:
            byte = bytes([value])
            if self.pending:
                self.pending = False
                if byte == DISCONNECT:
                    return bytes(out), True
                if byte == ESCAPE:
                    out += ESCAPE
                    self.at_line_start = False
                    continue
                out += ESCAPE
            elif byte == ESCAPE and self.at_line_start:
                self.pending = True
                continue
            out += byte
            self.at_line_start = byte in (b"\r", b"\n")
        return bytes(out), False


def console_url(target: Target, server_id: str) -> str:
    parts = urlsplit(target.url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, f"{server_path(server_id)}/console", "", ""))


def console_ssl(target: Target) -> ssl.SSLContext | None:
    """The CLI's TLS settings as an SSL context for the websocket (``None`` for ws://)."""
    if not target.url.startswith("https"):
        return None
    if target.tls.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    verify = target.tls.verify()
    return verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()


def close_error(code: int | None, reason: str, name: str) -> CliError | None:
    """What a close from the appliance means (``None``: a normal end)."""
    if code is None or code in (1000, 1001, 1005):
        return None
    if code == CLOSE_NOT_LOGGED_IN:
        return CliError("The appliance did not accept the login for the console.", exit_code=EXIT_AUTH,
                        hints=["Run `ingot login` to start a new session."])
    if code == CLOSE_FORBIDDEN:
        return CliError("Your role may not use the console (Operator or above is needed).", exit_code=EXIT_AUTH)
    if code == CLOSE_NOT_FOUND:
        return CliError(f"Server hardware {name} does not exist (any more).")
    return CliError(f"The console of {name} closed: {reason or f'code {code}'}.")


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)  # not the default TCSAFLUSH: keep what was typed ahead
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@app.command()
def console(
    server: NameArg,
    linger: Annotated[float, typer.Option(
        min=0, help="Without a terminal: after standard input ends, keep printing output until it has been "
                    "quiet this many seconds.")] = 1.0,
) -> None:
    """Attach to a server's serial console (Serial over LAN). Type ~. on a new line to leave."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect

    with ApiClient.connect() as client:
        target = resolve(client, server)
        api_target = client.target
    name = str(target.get("name") or target.get("id"))
    headers = {"X-API-Version": API_VERSION, "User-Agent": f"ingot-cli/{appliance.__version__}"}
    if api_target.credential:
        headers["auth"] = api_target.credential
    interactive = sys.stdin.isatty()
    try:
        ws = connect(console_url(api_target, str(target["id"])), additional_headers=headers,
                     ssl=console_ssl(api_target), open_timeout=15, close_timeout=2, max_size=2**20,
                     user_agent_header=None, proxy=None)  # never through an *_proxy of the environment
    except InvalidStatus as exc:
        body = exc.response.body or b""
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        raise ApiError.from_response(exc.response.status_code, parsed) from None
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        raise CliError(f"Cannot open the console of {name}: {exc}.") from None
    failure: list[CliError] = []
    done = threading.Event()
    quiet = threading.Event()  # set by the reader whenever output arrives (for --linger)

    def pump_output() -> None:
        out = sys.stdout.buffer
        try:
            for message in ws:
                out.write(message if isinstance(message, bytes) else message.encode())
                out.flush()
                quiet.set()
        except ConnectionClosed:
            pass
        finally:
            error = close_error(ws.close_code, ws.close_reason or "", name)
            if error is not None:
                failure.append(error)
            done.set()

    reader = threading.Thread(target=pump_output, name="console-output", daemon=True)
    if interactive:
        stderr().print(f"Connected to the console of {name}. Type ~. on a new line to disconnect.",
                       markup=False, highlight=False)
    # Raw mode before any output shows: keys typed in answer to the first prompt must not be
    # caught by the line discipline (and never see the ~. escape).
    with raw_terminal(sys.stdin.fileno()) if interactive else contextlib.nullcontext():
        reader.start()
        try:
            if interactive:
                _interactive(ws, done)
            else:
                _piped(ws, done, quiet, linger)
        finally:
            with contextlib.suppress(Exception):
                ws.close()
            reader.join(5)
    if interactive:
        stderr().print("\r\nDisconnected.", markup=False, highlight=False)
    if failure:
        raise failure[0]


def _interactive(ws: Any, done: threading.Event) -> None:
    fd = sys.stdin.fileno()
    escape = EscapeFilter()
    while not done.is_set():
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        data = os.read(fd, 1024)
        if not data:
            return
        send, leave = escape.feed(data)
        if send:
            ws.send(send)
        if leave:
            return


def _piped(ws: Any, done: threading.Event, quiet: threading.Event, linger: float) -> None:
    fd = sys.stdin.fileno()
    while not done.is_set():
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        ws.send(data)
    while not done.is_set():  # stdin ended: let the answers arrive
        quiet.clear()
        if not quiet.wait(linger) or done.is_set():
            return

