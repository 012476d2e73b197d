"""``ingot images``: the golden image library - list, show, upload or import from a URL or an
appliance path (a task, watched by default), capture, verify, download (checked against the
image's SHA-256), rename, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.cli.client import ApiClient, segment
from appliance.cli.errors import UsageError
from appliance.cli.output import Column, JsonOption, note, print_collection, print_json, print_resource, size, when
from appliance.cli.progress import follow_created, follow_task
from appliance.cli.transfer import download_destination, fetch_verified, upload_file

app = typer.Typer(help="Golden images: the library OS volumes are cloned from.", no_args_is_help=True)
PATH = "/rest/golden-images"

IMAGE_COLUMNS = (
    Column("ID", "id", no_wrap=True),
    Column("Name", "name"),
    Column("Size", lambda g: size(g.get("size")), justify="right", no_wrap=True),
    Column("Disk", lambda g: size(g.get("virtualSize")), justify="right", no_wrap=True, drop=1),
    Column("From", "sourceFormat", drop=2),
    Column("SHA-256", lambda g: str(g.get("checkSum") or "")[:12], no_wrap=True, drop=3),
    Column("Created", lambda g: when(g.get("created")), no_wrap=True, drop=4),
)
IMAGE_FIELDS = (
    Column("ID", "id"),
    Column("Name", "name"),
    Column("Description", "description"),
    Column("Size", lambda g: size(g.get("size"))),
    Column("Virtual disk", lambda g: size(g.get("virtualSize"))),
    Column("Format", "format"),
    Column("Uploaded as", lambda g: f"{g.get('sourceFormat')} ({g.get('originalFileName') or '-'})"),
    Column("SHA-256", "checkSum"),
    Column("Captured", lambda g: "yes" if g.get("imageCapture") else "no"),
    Column("Created", lambda g: when(g.get("created"))),
    Column("Created by", "createdBy"),
    Column("Download", "downloadUri"),
)


@app.command("list")
def list_images(as_json: JsonOption = False) -> None:
    """List the golden images."""
    with ApiClient.connect() as client:
        body = client.get(PATH, {"sort": "name:ascending"})
    print_collection(body, IMAGE_COLUMNS, as_json=as_json, empty="No golden images.")


@app.command()
def show(image_id: Annotated[str, typer.Argument(help="Golden image ID.")], as_json: JsonOption = False) -> None:
    """Show one golden image."""
    with ApiClient.connect() as client:
        image = client.get(f"{PATH}/{segment(image_id)}")
    print_resource(image, IMAGE_FIELDS, as_json=as_json)


@app.command()
def upload(
    file: Annotated[Path, typer.Argument(help="qcow2, raw, VMDK, VHD or VHDX image, or HPE's zip of one raw disk.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Name in the library [default: the file's stem].")] = "",
    description: Annotated[str, typer.Option("--description", "-d", help="Free text.")] = "",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the import task and show the image.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Upload an image; the appliance checks, converts and checksums it in a task."""
    if not file.is_file():
        raise UsageError(f"{file} is not a file.")
    with ApiClient.connect() as client:
        response = upload_file(client, PATH, file, {"name": name or file.stem, "description": description})
        image = follow_created(client, response, "golden image", wait, as_json)
    if image is not None:
        print_resource(image, IMAGE_FIELDS, as_json=as_json)


@app.command("import")
def import_image(
    source: Annotated[str, typer.Argument(help="http(s):// URL, or an absolute path on the appliance under "
                                               "one of its INGOT_IMAGES__IMPORT_DIRS.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Name in the library.")],
    description: Annotated[str, typer.Option("--description", "-d", help="Free text.")] = "",
    sha256: Annotated[str | None, typer.Option("--sha256", help="SHA-256 the source file must have.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the import task and show the image.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Import an image the appliance fetches itself: from a URL, or a file on the appliance."""
    key = "sourceUrl" if source.startswith(("http://", "https://")) else "sourcePath"
    body = {"name": name, "description": description, key: source, "sourceChecksum": sha256}
    with ApiClient.connect() as client:
        image = follow_created(client, client.post(PATH, body), "golden image", wait, as_json)
    if image is not None:
        print_resource(image, IMAGE_FIELDS, as_json=as_json)


@app.command()
def capture(
    volume_id: Annotated[str, typer.Argument(help="OS volume ID to capture.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the new golden image.")],
    description: Annotated[str, typer.Option("--description", "-d", help="Free text.")] = "",
    compress: Annotated[bool, typer.Option("--compress", help="Compress the captured qcow2.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the capture task and show the image.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Capture a new golden image from an OS volume (flattened, checksummed; a task)."""
    body = {"name": name, "description": description, "imageCapture": True,
            "osVolumeURI": f"/rest/os-volumes/{volume_id}", "compress": compress}
    with ApiClient.connect() as client:
        image = follow_created(client, client.post(PATH, body), "golden image", wait, as_json)
    if image is not None:
        print_resource(image, IMAGE_FIELDS, as_json=as_json)


@app.command()
def verify(image_id: Annotated[str, typer.Argument(help="Golden image ID.")], as_json: JsonOption = False) -> None:
    """Read a golden image's file in full against its SHA-256 (a task; exit 1 if it does not match)."""
    with ApiClient.connect() as client:
        response = client.post(f"{PATH}/{segment(image_id)}/verify")
        task = follow_task(client, response, wait=True, what="Verifying")
    if as_json:
        print_json(task)
    elif task is not None:
        note(str(task.get("taskStatus") or "Verified."))


@app.command()
def log(image_id: Annotated[str, typer.Argument(help="Golden image ID.")]) -> None:
    """Print what the import or capture that made a golden image did."""
    with ApiClient.connect() as client, client.stream(f"{PATH}/archive/{segment(image_id)}") as response:
        for line in response.iter_lines():
            typer.echo(line)


@app.command()
def download(
    image_id: Annotated[str, typer.Argument(help="Golden image ID.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="File or directory to write [default: NAME.qcow2, here].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Download a golden image as qcow2; it is checked against its SHA-256 before it gets its name."""
    with ApiClient.connect() as client:
        image = client.get(f"{PATH}/{segment(image_id)}")
        destination = download_destination(output, f"{image.get('name') or image_id}.qcow2", force)
        written = fetch_verified(client, str(image["downloadUri"]), destination, image.get("size"),
                                 image.get("checkSum"), "golden image")
    note(f"Saved {image.get('name')} ({size(written)}) to {destination}.")


@app.command()
def rename(
    image_id: Annotated[str, typer.Argument(help="Golden image ID.")],
    name: Annotated[str, typer.Option("--name", "-n", help="New name.")],
    description: Annotated[str | None, typer.Option("--description", "-d", help="New description.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Rename a golden image (and change its description)."""
    with ApiClient.connect() as client:
        image = client.get(f"{PATH}/{segment(image_id)}")
        body = {"name": name, "description": image.get("description") if description is None else description}
        updated = client.put(f"{PATH}/{segment(image_id)}", body)
    print_resource(updated, IMAGE_FIELDS, as_json=as_json)


@app.command()
def delete(image_id: Annotated[str, typer.Argument(help="Golden image ID.")]) -> None:
    """Delete a golden image (its file goes when no other image shares it)."""
    with ApiClient.connect() as client:
        client.delete(f"{PATH}/{segment(image_id)}")
    note(f"Deleted golden image {image_id}.")
