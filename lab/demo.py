"""``make demo``: run the appliance on embedded defaults and show its main job so far.

Today that is: start ``ingot serve`` (SQLite and a self-signed certificate under ./var), log in
through the REST API as OneView clients do, run a long operation as a task (an appliance backup)
with a progress bar, print what the appliance holds, and say where to log in. Later issues extend
this to the emulated rack (power on, PXE, deploy, capture).

Interactive runs keep the appliance up until Ctrl-C; non-interactive runs (no TTY on stdin) stop
it and exit 0 once the job succeeded, non-zero if any step failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
console = Console()


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("INGOT_HOME", str(home))
    env.setdefault("INGOT_BIND_ADDRESS", "127.0.0.1")  # the demo is for this machine only
    env.setdefault("INGOT_HTTPS_PORT", "8443")
    env.setdefault("INGOT_HTTP_PORT", "8080")
    # Unprivileged ports on loopback: the demo must not need root or collide with a local resolver.
    env.setdefault("INGOT_TFTP_PORT", "6969")
    env.setdefault("INGOT_DNS_PORT", "5354")
    env.setdefault("INGOT_LOG_FORMAT", "text")
    return env


def _password(env: dict[str, str], home: Path) -> str:
    if env.get("INGOT_ADMIN_PASSWORD"):
        return env["INGOT_ADMIN_PASSWORD"]
    return (home / "initial-admin-password").read_text().strip()


def main() -> int:
    home = Path(os.environ.get("INGOT_HOME", REPO / "var")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = _env(home)
    ready = home / "demo-ready"
    ready.unlink(missing_ok=True)
    log_path = home / "appliance.log"
    ingot = str(Path(sys.executable).with_name("ingot"))
    console.rule("[bold]Ingot demo")
    console.print(f"Starting the appliance (state in {home}, log in {log_path}) ...")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([ingot, "serve", "--ready-file", str(ready)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        return _run(proc, ready, env, home, log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        console.print("Appliance stopped.")


def _run(proc: subprocess.Popen[bytes], ready: Path, env: dict[str, str], home: Path, log_path: Path) -> int:
    deadline = time.monotonic() + 60
    while not (ready.is_file() and ready.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            console.print(f"[red]The appliance did not start; last log lines:[/red]\n"
                          f"{log_path.read_text()[-2000:]}")
            return 1
        time.sleep(0.1)
    https_port, http_port = ready.read_text().split()
    url = f"https://127.0.0.1:{https_port}"
    password = _password(env, home)
    # The demo talks to its own freshly generated self-signed certificate.
    with httpx.Client(base_url=url, verify=str(home / "tls" / "tls.crt"), timeout=30,
                      headers={"X-API-Version": "4600"}) as api:
        version = api.get("/rest/version").json()
        console.print(f"REST API up: currentVersion {version['currentVersion']}, "
                      f"minimumVersion {version['minimumVersion']}")
        login = api.post("/rest/login-sessions", json={"userName": "Administrator", "password": password})
        if login.status_code != 200:
            console.print(f"[red]Login failed: {login.json().get('message')}[/red]")
            return 1
        api.headers["auth"] = login.json()["sessionID"]
        ok = _backup(api)
        _summary(api)
        api.delete("/rest/login-sessions")

    console.rule("[bold]Log in")
    console.print(f"Web UI and REST API: [bold]{url}/ui/[/bold]  (self-signed certificate)")
    where = ("from INGOT_ADMIN_PASSWORD" if env.get("INGOT_ADMIN_PASSWORD")
             else f"in {home / 'initial-admin-password'}")
    console.print(f"User: [bold]Administrator[/bold]  Password: {where}")
    console.print(f"CLI: .venv/bin/ingot login --host {url} --insecure")
    console.print(f"Boot listener (plain HTTP): http://127.0.0.1:{http_port}/")
    if not ok:
        return 1
    if sys.stdin.isatty():
        console.print("The appliance keeps running; press Ctrl-C to stop it.")
        with contextlib.suppress(KeyboardInterrupt):
            proc.wait()
    return 0


def _backup(api: httpx.Client) -> bool:
    started = api.post("/rest/backups", json={})
    if started.status_code != 202:
        console.print(f"[red]Could not start a backup: {started.text}[/red]")
        return False
    task_uri = started.headers["Location"]
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.fields[status]}"), console=console) as progress:
        bar = progress.add_task("Appliance backup (task)", total=100, status="Queued.")
        deadline = time.monotonic() + 300
        while True:
            task = api.get(task_uri).json()
            progress.update(bar, completed=task["percentComplete"], status=task["taskStatus"])
            if task["taskState"] not in ("New", "Starting", "Pending", "Running", "Stopping"):
                break
            if time.monotonic() > deadline:
                console.print("[red]The backup task did not finish in 5 minutes.[/red]")
                return False
            time.sleep(0.2)
    if task["taskState"] != "Completed":
        console.print(f"[red]Backup {task['taskState']}: {task['taskErrors']}[/red]")
        return False
    backup = api.get(task["associatedResource"]["resourceUri"]).json()
    console.print(f"Backup [bold]{backup['name']}[/bold]: {backup['fileSize']} bytes, sha256 {backup['sha256'][:16]}…")
    return True


def _summary(api: httpx.Client) -> None:
    tasks = api.get("/rest/tasks", params={"count": 10}).json()
    table = Table(title=f"Recent tasks ({tasks['total']} in all)")
    for column in ("Task", "State", "%", "Owner", "Status"):
        table.add_column(column)
    for task in tasks["members"]:
        table.add_row(task["name"], task["taskState"], str(task["percentComplete"]), task["owner"], task["taskStatus"])
    console.print(table)
    alerts = api.get("/rest/alerts", params={"filter": "alertState='Active'"}).json()
    for alert in alerts["members"]:
        console.print(f"[yellow]Alert ({alert['severity']}):[/yellow] {alert['description']} "
                      f"— {alert['correctiveAction']}")


if __name__ == "__main__":
    sys.exit(main())
