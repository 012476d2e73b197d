"""``make demo``: the main job on the emulated rack.

Brings the lab up (lab/rack.py: 3 QEMU servers, the last one UEFI, each behind a virtual BMC, and
the appliance on a private provisioning network), then does what staff would do through the
REST API: enroll each server by its BMC address only and inspect it: Ingot sets a one-time PXE
boot and powers it on, the server PXE-boots through Ingot's DHCP, TFTP and HTTP into the deploy
ramdisk, its agent looks itself up and reports the hardware inventory, and Ingot powers it off
and marks it available. Progress bars follow each server's phases; a table gives the time of each
phase (power-on -> DHCP -> boot loader -> kernel -> agent -> inspected) and what the agent found.
Then every server is deployed from the demo golden image with a host name and a static address
of its own, and reports them on its console; the first one is captured back into a new golden
image (lab/demo_deploy.py). The UI address and login are printed at the end.

Exit status 0 only if every server was inspected and deployed, and the capture succeeded.
Interactive runs (a TTY on stdin) keep the lab up until Ctrl-C; otherwise it is taken down at
the end. ``INGOT_HOME`` (default ./var) holds
the lab and its image cache; ``DEMO_SERVERS`` / ``DEMO_UEFI`` change the rack.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lab import demo_deploy, demo_plans, rack

REPO = Path(__file__).resolve().parents[1]
BOOT_TIMEOUT_S = 300.0  # TCG on two cores: ~10 s (BIOS) to ~30 s (UEFI) per server measured
TASK_TIMEOUT_S = 120.0
PHASES = ("power-on", "DHCP", "boot loader", "kernel", "agent", "inspected")
AGENT_LINE = re.compile(r"INGOT-AGENT started mac=(\S+) ip=(\S+)")
console = Console(width=None if sys.stdout.isatty() else 132)  # a log file gets the whole table


@dataclass
class Server:
    name: str
    firmware: str
    bmc: dict[str, Any]
    mac: str
    serial_log: Path
    uri: str | None = None
    task: str | None = None  # the inspection
    inventory: dict[str, Any] | None = None
    ip: str | None = None
    at: dict[str, float] = field(default_factory=dict)  # phase -> epoch seconds
    error: str | None = None

    @property
    def phase(self) -> int:
        return sum(1 for p in PHASES if p in self.at)

    @property
    def inspected(self) -> bool:
        return "inspected" in self.at


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def enroll(api: httpx.Client, servers: list[Server]) -> None:
    """Add every server by its BMC address and credentials only, as staff would (tasks, at once)."""
    started = {s.name: api.post("/rest/server-hardware", json={
        "hostname": s.bmc["address"], "port": s.bmc["port"], "username": s.bmc["user"],
        "password": s.bmc["password"], "driver": "ipmi"}) for s in servers}
    for server in servers:
        response = started[server.name]
        if response.status_code != 202:
            server.error = f"enrolment refused: {response.text[:200]}"
            continue
        task = demo_plans.wait_for_task(api, response.headers["location"], TASK_TIMEOUT_S)
        if task["taskState"] != "Completed":
            server.error = f"enrolment failed: {demo_plans.task_error(task)}"
            continue
        server.uri = task["associatedResource"]["resourceUri"]


def start_inspection(api: httpx.Client, server: Server) -> None:
    """Ingot sets the one-time PXE boot and powers the server on itself: the inspect event."""
    assert server.uri is not None
    response = api.put(f"{server.uri}/provisionState", json={"event": "inspect"})
    if response.status_code != 202:
        server.error = f"inspect refused: {response.text[:200]}"
        return
    server.task = response.headers["location"]
    server.at["power-on"] = time.time()


def follow_inspection(api: httpx.Client, server: Server) -> None:
    """Once the inspection task has ended: the inventory, or why it failed."""
    if server.task is None or server.uri is None or "inspected" in server.at:
        return
    task = api.get(server.task).json()
    if task["taskState"] in demo_plans.ACTIVE:
        return
    if task["taskState"] != "Completed":
        server.error = f"inspection failed: {demo_plans.task_error(task)}"
        return
    server.inventory = api.get(server.uri).json().get("hardwareInventory")
    server.at["inspected"] = time.time()


def observe(api: httpx.Client, servers: list[Server]) -> None:
    """Fill in each server's phases from the appliance's boot events and its serial console."""
    events = api.get("/rest/boot-events", params={"count": "500"}).json()["members"]
    for event in reversed(events):  # oldest first
        for server in servers:
            started = server.at.get("power-on")
            if started is None or _epoch(event["at"]) < started - 1:
                continue
            at = _epoch(event["at"])
            mine = (event.get("mac") or "").lower() == server.mac or (server.ip and event.get("clientIp") == server.ip)
            if not mine:
                continue
            detail = event.get("detail") or ""
            if event["service"] == "dhcp" and event["action"].endswith("ACK"):
                server.at.setdefault("DHCP", at)
                server.ip = server.ip or detail.split(" ", 1)[0]
            elif event["service"] in ("tftp", "http") and ("boot.ipxe" in detail or event["service"] == "tftp"):
                server.at.setdefault("boot loader", at)
            elif event["service"] == "http" and "vmlinuz" in detail:
                server.at.setdefault("kernel", at)
            elif event["service"] == "http" and event["action"] == "AGENT" and detail == "lookup":
                server.at.setdefault("agent", at)
    for server in servers:
        if server.ip is None and server.serial_log.exists():
            match = AGENT_LINE.search(server.serial_log.read_text(errors="replace"))
            if match:
                server.at.setdefault("agent", time.time())
                server.ip = match.group(2).split("/", 1)[0]
        follow_inspection(api, server)


def boot_all(api: httpx.Client, servers: list[Server]) -> None:
    with Progress(TextColumn("{task.description:<8}"), BarColumn(), TextColumn("{task.fields[phase]:<34}"),
                  TimeElapsedColumn(), console=console) as progress:
        bars = {s.name: progress.add_task(s.name, total=len(PHASES), phase="enrolling by BMC address") for s in servers}

        def show(server: Server) -> None:
            text = server.error or (f"{PHASES[server.phase - 1]} done" if server.phase else "waiting")
            if server.inspected:
                text = f"available: {summary(server.inventory)}"
            progress.update(bars[server.name], completed=server.phase, phase=text[:34])

        enroll(api, servers)
        for server in servers:
            if server.error is None:
                progress.update(bars[server.name], phase="inspect: one-time PXE, power on")
                start_inspection(api, server)
            show(server)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline and any(s.error is None and not s.inspected for s in servers):
            observe(api, servers)
            for server in servers:
                show(server)
            time.sleep(0.5)
        for server in servers:
            if server.error is None and not server.inspected:
                server.error = f"not inspected within {BOOT_TIMEOUT_S:.0f} s (last phase: " \
                               f"{PHASES[server.phase - 1] if server.phase else 'none'})"
            show(server)


def summary(inventory: dict[str, Any] | None) -> str:
    """What the agent found, in one short line: ``2 CPU, 768 MiB, vda 8 GiB``."""
    if not inventory:
        return "no inventory"
    memory = inventory.get("physical_memory_bytes") or inventory.get("memory_bytes") or 0
    disks = ", ".join(f"{d['name']} {d['size_bytes'] / (1 << 30):.0f} GiB" for d in inventory.get("disks", []))
    return f"{(inventory.get('cpu') or {}).get('count')} CPU, {memory >> 20} MiB, {disks or 'no disk'}"


def report(servers: list[Server]) -> None:
    table = Table(title="Servers: seconds from power-on")
    for column in ("Server", "Firmware", "BMC", "MAC", "Address", *PHASES[1:], "State"):
        table.add_column(column)
    for s in servers:
        start = s.at.get("power-on")
        times = [f"{s.at[p] - start:.1f}" if start and p in s.at else "-" for p in PHASES[1:]]
        state = f"[green]available[/green]: {summary(s.inventory)}" if s.inspected else f"[red]{s.error}[/red]"
        table.add_row(s.name, s.firmware, f"{s.bmc['address']}:{s.bmc['port']}", s.mac, s.ip or "-", *times, state)
    console.print(table)


def main() -> int:
    home = Path(os.environ.get("INGOT_HOME", REPO / "var")).resolve()
    servers_wanted = int(os.environ.get("DEMO_SERVERS", "3"))
    uefi = int(os.environ.get("DEMO_UEFI", "1"))
    console.rule("[bold]Ingot demo: the emulated rack")
    with contextlib.suppress(rack.LabError):  # a lab left by an earlier run that did not finish
        rack.down(home, say=lambda line: console.print(f"(earlier lab) {line}"))
    try:
        state = rack.up(home, servers=servers_wanted, uefi=uefi, say=console.print)
    except (rack.LabError, OSError) as exc:
        console.print(f"[red]The lab could not be brought up: {exc}[/red]")
        return 1
    try:
        return _main_job(home, state)
    finally:
        if not sys.stdin.isatty():
            rack.down(home, say=console.print)


def _deploy_and_capture(api: httpx.Client, home: Path, state: dict[str, Any], servers: list[Server]) -> bool:
    console.rule("[bold]Deploy the demo golden image: a host name and an address of its own per server")
    try:
        deployed, _ = demo_deploy.deploy_all(
            api, console, state, [{"name": s.name, "firmware": s.firmware, "serial_log": s.serial_log, "uri": s.uri}
                                  for s in servers], rack.LabPaths(home, state["name"]).cache)
    except demo_plans.PlanError as exc:
        console.print(f"[red]{exc}[/red]")
        return False
    demo_deploy.report(console, deployed)
    if any(d.error for d in deployed):
        return False
    console.rule(f"[bold]Capture {deployed[0].name} back into a new golden image (generalized)")
    try:
        captured = demo_deploy.capture_first(api, console, deployed[0])
    except demo_plans.PlanError as exc:
        console.print(f"[red]{exc}[/red]")
        return False
    if captured:
        console.print(f"Captured: {captured}")
    return captured is not None


def _main_job(home: Path, state: dict[str, Any]) -> int:
    servers = [Server(s["name"], s["firmware"], s["bmc"], s["macs"][0].lower(), Path(s["serial_log"]))
               for s in state["servers"]]
    admin = state["admin"]
    # The lab's appliance has its own self-signed certificate (valid for 127.0.0.1, where the forwarder is).
    with httpx.Client(base_url=state["url"], verify=ssl.create_default_context(cafile=state["ca_cert"]), timeout=30,
                      headers={"X-API-Version": "4600"}) as api:
        login = api.post("/rest/login-sessions", json={"userName": admin["user"], "password": admin["password"]})
        if login.status_code != 200:
            console.print(f"[red]Login failed: {login.text[:200]}[/red]")
            return 1
        api.headers["auth"] = login.json()["sessionID"]
        console.rule("[bold]Enroll by BMC address, PXE-boot into the deploy ramdisk")
        boot_all(api, servers)
        report(servers)
        ok = all(s.inspected for s in servers)
        if ok:
            ok = _deploy_and_capture(api, home, state, servers)
    console.rule("[bold]Log in")
    console.print(f"Web UI and REST API: [bold]{state['url']}/ui/[/bold]  (self-signed certificate: "
                  f"{state['ca_cert']})")
    console.print(f"User: [bold]{admin['user']}[/bold]  Password: [bold]{admin['password']}[/bold]")
    console.print(f"CLI: .venv/bin/ingot login --host {state['url']} --ca-cert {state['ca_cert']};  "
                  f"lab: .venv/bin/ingot lab status --home {home}")
    (home / "lab" / "demo-result.json").write_text(json.dumps(
        [{"name": s.name, "firmware": s.firmware, "ip": s.ip, "error": s.error,
          "seconds": {p: round(s.at[p] - s.at["power-on"], 2) for p in PHASES if p in s.at and "power-on" in s.at}}
         for s in servers], indent=2))
    if not ok and sys.stdin.isatty():
        console.print(f"The lab stays up for a look (serial logs: .venv/bin/ingot lab console NAME --home {home}); "
                      f"take it down with .venv/bin/ingot lab down --home {home}")
    if ok and sys.stdin.isatty():
        console.print("The lab keeps running; press Ctrl-C to take it down.")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
        rack.down(home, say=console.print)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
