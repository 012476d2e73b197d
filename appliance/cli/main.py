"""``ingot``: the top-level command, ``ingot serve``, and the client command groups that drive a
running appliance over its REST API (see appliance/cli/errors.py for the exit codes)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from appliance.cli import (
    alerts,
    auth,
    backups,
    hardware,
    images,
    lab,
    netboot,
    plans,
    profiles,
    tasks,
    tokens,
    users,
    volumes,
)

app = typer.Typer(help="Ingot provisioning appliance.", no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def _root() -> None:
    """Ingot provisioning appliance: run it (serve) or drive a running one."""


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")] = None,
    ready_file: Annotated[Path | None, typer.Option(help="Write the bound ports here once listening.")] = None,
) -> None:
    """Run the appliance: HTTPS API and UI, HTTP boot listener and task runner, until SIGTERM."""
    from appliance.config import load_settings
    from appliance.server import serve as run_server

    try:
        settings = load_settings(config)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    asyncio.run(run_server(settings, ready_file=ready_file))


app.command()(auth.login)
app.command()(auth.logout)
app.add_typer(tasks.app, name="tasks")
app.add_typer(alerts.app, name="alerts")
app.add_typer(users.app, name="users")
app.add_typer(tokens.app, name="tokens")
app.add_typer(backups.app, name="backups")
app.add_typer(hardware.app, name="hardware")
app.add_typer(netboot.app, name="netboot")
app.add_typer(images.app, name="images")
app.add_typer(volumes.app, name="volumes")
app.add_typer(lab.app, name="lab")
app.add_typer(plans.app, name="plans")
app.command("render")(plans.render)
app.add_typer(profiles.app, name="profiles")
app.command("deploy")(profiles.deploy)
app.command("capture")(profiles.capture)
