"""``ingot lab``: the emulated rack on this machine (lab/rack.py) - up, down, status, console.

These commands run on the machine itself (root: network namespaces), not against an appliance's
API. The lab lives under INGOT_HOME/lab (``--home`` or the INGOT_HOME variable, default ./var).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from appliance.cli.errors import CliError
from appliance.cli.output import JsonOption, note, print_json, stdout

app = typer.Typer(help="The emulated rack: QEMU servers with virtual BMCs on a private network.",
                  no_args_is_help=True)

HomeOption = Annotated[Path | None, typer.Option("--home", help="INGOT_HOME [default: $INGOT_HOME or ./var].")]
NameOption = Annotated[str, typer.Option("--name", help="Lab name (also its network namespace).")]
DEFAULT_NAME = "ingot-lab"


def _home(home: Path | None) -> Path:
    return (home or Path(os.environ.get("INGOT_HOME", "var"))).expanduser().resolve()


def _lab_error(exc: Exception) -> CliError:
    return CliError(str(exc))


def _print_status(state: dict[str, Any]) -> None:
    console = stdout()
    console.print(f"Lab [bold]{state['name']}[/bold]: {state.get('url') or 'not complete'} "
                  f"(user {(state.get('admin') or {}).get('user', '?')}), namespace {state['namespace']}, "
                  f"provisioning {state.get('provisioning_network')}, BMCs {state.get('management_network')}")
    table = Table(box=None)
    for column in ("Server", "Firmware", "BMC", "MAC", "Power", "Serial log"):
        table.add_column(column)
    for server in state.get("servers", []):
        bmc = server["bmc"]
        table.add_row(server["name"], server["firmware"], f"{bmc['address']}:{bmc['port']}",
                      ", ".join(server["macs"]), server.get("power", "?"), server["serial_log"])
    console.print(table)
    stopped = [p["role"] for p in state.get("processes", []) if not p["running"]]
    if stopped:
        console.print(f"[yellow]Not running: {', '.join(stopped)}[/yellow]")


@app.command()
def up(
    servers: Annotated[int, typer.Option("--servers", "-n", min=1, max=32, help="Emulated servers.")] = 3,
    uefi: Annotated[int, typer.Option("--uefi", min=0, help="How many of them boot UEFI (the last ones).")] = 1,
    memory: Annotated[int, typer.Option("--memory", min=256, max=8192, help="MiB per server.")] = 768,
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="Loopback port for the appliance's API and UI [default: any free].")] = 0,
    name: NameOption = DEFAULT_NAME,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Bring the lab up: network namespace, the appliance in it, servers (off) behind virtual BMCs."""
    from lab.rack import LabError
    from lab.rack import up as lab_up

    try:
        state = lab_up(_home(home), name=name, servers=servers, uefi=min(uefi, servers), memory_mb=memory,
                       port=port, say=lambda line: note(line))
    except (LabError, FileExistsError) as exc:
        raise _lab_error(exc) from None
    if as_json:
        print_json(state)
    else:
        _print_status(state)


@app.command()
def down(name: NameOption = DEFAULT_NAME, home: HomeOption = None) -> None:
    """Take the lab down: every process by PID, the namespace with its bridges and taps, its files."""
    from lab.rack import LabError
    from lab.rack import down as lab_down
    from lab.state import TeardownError

    try:
        lab_down(_home(home), name=name, say=lambda line: note(line))
    except (LabError, TeardownError) as exc:
        raise _lab_error(exc) from None


@app.command()
def status(name: NameOption = DEFAULT_NAME, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Show the lab: appliance URL and user, networks, servers with BMC, MACs, firmware and power."""
    from lab.rack import LabError
    from lab.rack import status as lab_status

    try:
        state = lab_status(_home(home), name=name)
    except LabError as exc:
        raise _lab_error(exc) from None
    if as_json:
        print_json(state)
    else:
        _print_status(state)


@app.command()
def console(
    server: Annotated[str, typer.Argument(help="Server name, e.g. node-1.")],
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Keep printing until Ctrl-C.")] = True,
    name: NameOption = DEFAULT_NAME,
    home: HomeOption = None,
) -> None:
    """Print a server's serial console (what its firmware, boot loader, kernel and agent wrote)."""
    from lab.rack import LabError, serial_log

    try:
        path = serial_log(_home(home), server, name=name)
    except LabError as exc:
        raise _lab_error(exc) from None
    out = stdout().file
    try:
        while not path.exists():  # QEMU makes it when the server first starts
            if not follow:
                return
            time.sleep(0.2)
    except KeyboardInterrupt:
        return
    with path.open("rb") as log:
        try:
            while True:
                chunk = log.read(65536)
                if chunk:
                    out.write(chunk.decode(errors="replace"))
                    out.flush()
                elif not follow:
                    return
                else:
                    time.sleep(0.2)
        except KeyboardInterrupt:
            return
