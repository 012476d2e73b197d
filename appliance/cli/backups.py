"""``ingot backups``: create (a task, watched by default), list, download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.cli.client import ApiClient, segment
from appliance.cli.output import Column, JsonOption, note, print_collection, print_resource, size, when
from appliance.cli.progress import follow_created
from appliance.cli.transfer import download_destination, fetch_verified

app = typer.Typer(help="Appliance backups (administrators).", no_args_is_help=True)

BACKUP_COLUMNS = (
    Column("ID", "id", no_wrap=True),
    Column("Name", "name"),
    Column("Size", lambda b: size(b.get("fileSize")), justify="right", no_wrap=True),
    Column("Created", lambda b: when(b.get("created")), no_wrap=True, drop=1),
    Column("By", "createdBy", drop=2),
)
BACKUP_FIELDS = (
    Column("ID", "id"),
    Column("Name", "name"),
    Column("File", "fileName"),
    Column("Size", lambda b: size(b.get("fileSize"))),
    Column("SHA-256", "sha256"),
    Column("Created", lambda b: when(b.get("created"))),
    Column("Created by", "createdBy"),
    Column("Schema", "schemaRevision"),
    Column("Download", "downloadUri"),
)


@app.command()
def create(
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the task and show the backup.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Write a backup of the appliance database (as a task)."""
    with ApiClient.connect() as client:
        backup = follow_created(client, client.post("/rest/backups", {}), "backup", wait, as_json)
    if backup is not None:
        print_resource(backup, BACKUP_FIELDS, as_json=as_json)


@app.command("list")
def list_backups(as_json: JsonOption = False) -> None:
    """List backups, newest first."""
    with ApiClient.connect() as client:
        body = client.get("/rest/backups", {"sort": "created:descending"})
    print_collection(body, BACKUP_COLUMNS, as_json=as_json, empty="No backups.")


@app.command()
def download(
    backup_id: Annotated[str, typer.Argument(help="Backup ID.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="File or directory to write [default: the backup's file name, here].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Download a backup archive; it is checked against its SHA-256 before it gets its name."""
    with ApiClient.connect() as client:
        backup = client.get(f"/rest/backups/{segment(backup_id)}")
        destination = download_destination(output, str(backup.get("fileName") or f"{backup_id}.tar.gz"), force)
        written = fetch_verified(client, str(backup["downloadUri"]), destination, backup.get("fileSize"),
                                 backup.get("sha256"), "backup")
    note(f"Saved {backup.get('name')} ({size(written)}) to {destination}.")
