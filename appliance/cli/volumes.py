"""``ingot volumes``: OS volumes - list, show, create from a golden image (a task, watched by
default), delete, export as a raw or qcow2 file (a task, then a download checked against its
SHA-256), export over NBD."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from appliance.cli.client import ApiClient, decode, segment
from appliance.cli.output import Column, JsonOption, note, print_collection, print_json, print_resource, size, when
from appliance.cli.progress import follow_created, follow_task
from appliance.cli.transfer import download_destination, fetch_verified

app = typer.Typer(help="OS volumes: servers' disks, cloned from golden images.", no_args_is_help=True)
PATH = "/rest/os-volumes"

VOLUME_COLUMNS = (
    Column("ID", "id", no_wrap=True),
    Column("Name", "name"),
    Column("Size", lambda v: size(v.get("size")), justify="right", no_wrap=True),
    Column("Clone", lambda v: "full" if v.get("fullClone") else "linked", drop=1),
    Column("Golden image", lambda v: str(v.get("goldenImageUri") or "").rsplit("/", 1)[-1], drop=2),
    Column("Created", lambda v: when(v.get("created")), no_wrap=True, drop=3),
)
VOLUME_FIELDS = (
    Column("ID", "id"),
    Column("Name", "name"),
    Column("Size", lambda v: size(v.get("size"))),
    Column("Clone", lambda v: "full copy" if v.get("fullClone") else "linked (copy-on-write)"),
    Column("Golden image", "goldenImageUri"),
    Column("Created", lambda v: when(v.get("created"))),
    Column("Created by", "createdBy"),
    Column("NBD", lambda v: v.get("nbdUri") or "not exported"),
)
NBD_FIELDS = (
    Column("URI", "uri"),
    Column("Address", "address"),
    Column("Port", "port"),
    Column("Export name", "exportName"),
    Column("Clients", lambda e: f"{e.get('maxClients')} at a time, read-write"),
    Column("Volume", "volumeUri"),
)


class ExportFormat(StrEnum):
    raw = "raw"
    qcow2 = "qcow2"


@app.command("list")
def list_volumes(as_json: JsonOption = False) -> None:
    """List the OS volumes."""
    with ApiClient.connect() as client:
        body = client.get(PATH, {"sort": "name:ascending"})
    print_collection(body, VOLUME_COLUMNS, as_json=as_json, empty="No OS volumes.")


@app.command()
def show(volume_id: Annotated[str, typer.Argument(help="OS volume ID.")], as_json: JsonOption = False) -> None:
    """Show one OS volume."""
    with ApiClient.connect() as client:
        volume = client.get(f"{PATH}/{segment(volume_id)}")
    print_resource(volume, VOLUME_FIELDS, as_json=as_json)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Name of the new volume.")],
    image_id: Annotated[str, typer.Option("--image", "-i", help="Golden image ID to clone.")],
    size_bytes: Annotated[int | None, typer.Option(
        "--size", help="Bytes; at least the image's virtual size [default: the image's].", min=1)] = None,
    full: Annotated[bool, typer.Option("--full", help="An independent full copy instead of a linked clone.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the task and show the volume.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Clone a golden image into a new OS volume (linked: constant time; --full: a copy)."""
    body: dict[str, Any] = {"name": name, "goldenImageUri": f"/rest/golden-images/{image_id}", "fullClone": full}
    if size_bytes is not None:
        body["size"] = size_bytes
    with ApiClient.connect() as client:
        volume = follow_created(client, client.post(PATH, body), "OS volume", wait, as_json)
    if volume is not None:
        print_resource(volume, VOLUME_FIELDS, as_json=as_json)


@app.command()
def delete(volume_id: Annotated[str, typer.Argument(help="OS volume ID.")]) -> None:
    """Delete an OS volume and its file."""
    with ApiClient.connect() as client:
        client.delete(f"{PATH}/{segment(volume_id)}")
    note(f"Deleted OS volume {volume_id}.")


@app.command()
def export(
    volume_id: Annotated[str, typer.Argument(help="OS volume ID.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="raw (whole disk) or qcow2.")] = ExportFormat.raw,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="File or directory to write [default: NAME.FORMAT, here].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    download: Annotated[bool, typer.Option("--download/--no-download",
                                           help="Download the export once it is made.")] = True,
) -> None:
    """Flatten an OS volume into a raw or qcow2 file (a task), then download it, checked against its
    SHA-256. The appliance keeps the export until the volume is written."""
    with ApiClient.connect() as client:
        volume = client.get(f"{PATH}/{segment(volume_id)}")
        destination = download_destination(output, f"{volume.get('name') or volume_id}.{fmt.value}",
                                           force or not download)
        response = client.post(f"{PATH}/{segment(volume_id)}/export", {"format": fmt.value})
        follow_task(client, response, wait=True, what="Exporting")
        uri = f"{PATH}/{segment(volume_id)}/export/{fmt.value}"
        if not download:
            note(f"Exported {volume.get('name')} as {fmt.value}: GET {uri}")
            return
        written = fetch_verified(client, uri, destination, None, None, "export")
    note(f"Saved {volume.get('name')} as {fmt.value} ({size(written)}) to {destination}.")


@app.command()
def nbd(
    volume_id: Annotated[str, typer.Argument(help="OS volume ID.")],
    stop: Annotated[bool, typer.Option("--stop", help="End the export instead (its client is cut off).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Export an OS volume over NBD, read-write to one client (Image Streamer's network-booted mode),
    or end that export; prints the nbd:// URI to give the server."""
    path = f"{PATH}/{segment(volume_id)}/nbd"
    with ApiClient.connect() as client:
        if stop:
            client.delete(path)
            note(f"Ended the NBD export of OS volume {volume_id}.")
            return
        export = decode(client.post(path))
    if as_json:
        print_json(export)
    else:
        print_resource(export, NBD_FIELDS, as_json=False)
