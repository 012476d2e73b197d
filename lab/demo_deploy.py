"""``make demo``, second half: deploy every inspected lab server from the demo golden image with
its own host name and static address (one server profile each, all at once, a progress bar per
server showing the deploy's phase), check each server's report on its serial console, then
capture the first server back into a new golden image through the generalize plan.

Everything goes through the REST API, as automation would; the plans are lab/demo_plans.py's.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lab import demo_plans
from lab.images import build_demo_disk

DEPLOY_TIMEOUT_S = 1500.0  # three servers at once under TCG on two cores
CAPTURE_TIMEOUT_S = 900.0
REPORT_TIMEOUT_S = 300.0


@dataclass
class Deployed:
    name: str
    firmware: str
    serial_log: Path
    uri: str
    hostname: str
    address: str
    task: str | None = None
    seconds: float | None = None
    machine_id: str | None = None
    error: str | None = None


def _phase(task: dict[str, Any]) -> str:
    """The running child task's name (the deploy's phase), else the task's status."""
    running = [c for c in task.get("childTasks") or [] if c.get("taskState") in demo_plans.ACTIVE]
    return str(running[-1]["name"] if running else task.get("taskStatus") or task["taskState"])


def deploy_all(api: httpx.Client, console: Console, state: dict[str, Any], servers: list[dict[str, Any]],
               cache: Path) -> tuple[list[Deployed], str]:
    """Deploy ``servers`` (name, firmware, serial_log, uri); returns them and the deploy build plan's URI."""
    disk = build_demo_disk(cache, log=console.print)
    image = demo_plans.upload_golden_image(api, disk.path)
    personalize = demo_plans.personalize_plan(api)
    osdp = demo_plans.deployment_plan(api, "demo", personalize, image)
    network = ipaddress.IPv4Network(state["provisioning_network"])
    deployed = [Deployed(s["name"], s["firmware"], Path(s["serial_log"]), s["uri"], f"demo-{s['name']}",
                         str(network.network_address + 200 + i)) for i, s in enumerate(servers)]
    started = time.monotonic()
    for d in deployed:
        r = api.post("/rest/server-profiles", json=demo_plans.profile_body(f"demo-{d.name}", d.uri, osdp, d.hostname,
                                                                           d.address))
        if r.status_code == 202:
            d.task = r.json()["uri"]
        else:
            d.error = f"refused: {r.text[:200]}"
    with Progress(TextColumn("{task.description:<8}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[phase]:<40}"), TimeElapsedColumn(), console=console) as progress:
        bars = {d.name: progress.add_task(d.name, total=100, phase=d.error or "starting") for d in deployed}
        deadline = started + DEPLOY_TIMEOUT_S
        while any(d.task and d.seconds is None and d.error is None for d in deployed):
            for d in deployed:
                if d.task is None or d.seconds is not None or d.error is not None:
                    continue
                task = api.get(d.task).json()
                progress.update(bars[d.name], completed=task.get("percentComplete") or 0, phase=_phase(task)[:40])
                if task["taskState"] in demo_plans.ACTIVE:
                    continue
                if task["taskState"] == "Completed":
                    d.seconds = time.monotonic() - started
                else:
                    d.error = demo_plans.task_error(task)
                progress.update(bars[d.name], phase=(d.error or f"deployed: {d.hostname} {d.address}")[:40])
            if time.monotonic() > deadline:
                for d in deployed:
                    d.error = d.error or (None if d.seconds else f"not deployed within {DEPLOY_TIMEOUT_S:.0f} s")
                break
            time.sleep(1)
    for d in deployed:
        if d.error is None:
            _check_report(d)
    return deployed, personalize


def _check_report(d: Deployed) -> None:
    """The server's own report: exactly its host name and address, a machine-id of its own."""
    try:
        found = demo_plans.wait_for_line(d.serial_log, REPORT_TIMEOUT_S)
    except demo_plans.PlanError as exc:
        d.error = str(exc)
        return
    ipv4 = [a for a in found.group(2).split(",") if "." in a]  # (IPv6: the lab's router advertisements)
    if found.group(1) != d.hostname or ipv4 != [f"{d.address}/24"]:
        d.error = f"it reports hostname={found.group(1)} addresses={found.group(2)}"
    d.machine_id = found.group(3)


def capture_first(api: httpx.Client, console: Console, server: Deployed) -> str | None:
    """Capture ``server`` through the generalize plan; the new golden image's description, or None."""
    generalize = demo_plans.generalize_plan(api)
    seen = server.serial_log.stat().st_size
    r = api.post("/rest/golden-images", json=demo_plans.capture_body(f"captured-{server.name}", server.uri,
                                                                     generalize))
    if r.status_code != 202:
        console.print(f"[red]The capture was refused: {r.text[:300]}[/red]")
        return None
    started = time.monotonic()
    with Progress(TextColumn("{task.description:<8}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[phase]:<40}"), TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task(server.name, total=100, phase="starting")
        while True:
            task = api.get(r.json()["uri"]).json()
            progress.update(bar, completed=task.get("percentComplete") or 0, phase=_phase(task)[:40])
            if task["taskState"] not in demo_plans.ACTIVE or time.monotonic() - started > CAPTURE_TIMEOUT_S:
                break
            time.sleep(1)
    if task["taskState"] != "Completed":
        console.print(f"[red]The capture of {server.name} failed: {demo_plans.task_error(task)}[/red]")
        return None
    image = api.get(task["associatedResource"]["resourceUri"]).json()
    try:
        again = demo_plans.wait_for_line(server.serial_log, REPORT_TIMEOUT_S, after=seen)
    except demo_plans.PlanError as exc:
        console.print(f"[red]{server.name} did not come back after the capture: {exc}[/red]")
        return None
    return (f"golden image {image['name']}: {image['size'] >> 20} MiB qcow2 of a {image['virtualSize'] >> 20} MiB "
            f"disk, sha256 {image['checkSum'][:16]}..., in {time.monotonic() - started:.0f} s; {server.name} runs "
            f"on as {again.group(1)}")


def report(console: Console, deployed: list[Deployed]) -> None:
    table = Table(title="Deployed from the demo golden image")
    for column in ("Server", "Firmware", "Host name", "Address", "machine-id", "Seconds", "State"):
        table.add_column(column)
    for d in deployed:
        table.add_row(d.name, d.firmware, d.hostname, d.address, (d.machine_id or "-")[:12],
                      f"{d.seconds:.0f}" if d.seconds else "-",
                      "[green]deployed, reported[/green]" if d.error is None else f"[red]{d.error}[/red]")
    console.print(table)
