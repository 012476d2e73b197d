"""``ingot volumes``: OS volumes - list, show, create from a golden image (a task, watched by
default), delete."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from appliance.cli.client import ApiClient, segment
from appliance.cli.output import Column, JsonOption, note, print_collection, print_resource, size, when
from appliance.cli.progress import follow_created

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
)


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
