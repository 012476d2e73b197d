"""``ingot plans bundles``: artifact bundles - upload one (checked by the appliance in a task) and
extract it into plan scripts, build plans, deployment plans and golden images; create one from
chosen artifacts and download it (checked against its SHA-256); list, show, delete."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from appliance.cli.client import ApiClient, segment
from appliance.cli.errors import UsageError
from appliance.cli.output import Column, JsonOption, note, print_collection, print_resource, size, when
from appliance.cli.progress import follow_created, follow_task
from appliance.cli.transfer import download_destination, fetch_verified, upload_file

app = typer.Typer(help="Artifact bundles: plans and golden images moved between appliances as one zip.",
                  no_args_is_help=True)
PATH = "/rest/artifact-bundles"
KINDS = (("planScripts", "plan scripts"), ("buildPlans", "build plans"), ("goldenImages", "golden images"),
         ("deploymentPlans", "deployment plans"))
IdArg = Annotated[str, typer.Argument(help="Artifact bundle ID.")]
WaitOption = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the task with a progress bar.")]


def _counts(bundle: dict[str, Any]) -> str:
    return ", ".join(f"{len(bundle.get(key) or [])} {label}" for key, label in KINDS if bundle.get(key))


def _listing(bundle: dict[str, Any], key: str) -> str:
    return "; ".join(f"{e.get('name')}{' -> ' + str(e['resourceUri']) if e.get('resourceUri') else ''}"
                     for e in bundle.get(key) or [])


def _lister(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda bundle: _listing(bundle, key)


COLUMNS = (
    Column("ID", "id", no_wrap=True),
    Column("Name", "name"),
    Column("Contents", _counts),
    Column("Extracted", lambda b: when(b.get("extractedAt")) if b.get("extracted") else "no", no_wrap=True, drop=1),
    Column("Size", lambda b: size(b.get("size")), justify="right", no_wrap=True, drop=2),
)
FIELDS = (
    *COLUMNS,
    Column("Description", "description"),
    Column("Read only", "readOnly"),
    Column("Bundle time stamp", "timeStamp"),
    Column("SHA-256", "checkSum"),
    *(Column(label.capitalize(), _lister(key)) for key, label in KINDS),
)


def _extract(client: ApiClient, bundle_id: str, force: bool, wait: bool, as_json: bool) -> dict[str, Any] | None:
    response = client.request("PUT", f"{PATH}/{segment(bundle_id)}",
                              params={"extract": "true", "forceImport": "true" if force else "false"})
    task = follow_task(client, response, wait=wait, what="Extracting", as_json=as_json)
    if task is not None and not as_json:
        note(str(task.get("taskStatus") or "Extracted."))
    return task


@app.command("list")
def list_bundles(as_json: JsonOption = False) -> None:
    """List the artifact bundles."""
    with ApiClient.connect() as client:
        body = client.get(PATH, {"sort": "name:ascending"})
    print_collection(body, COLUMNS, as_json=as_json, empty="No artifact bundles.")


@app.command()
def show(bundle_id: IdArg, as_json: JsonOption = False) -> None:
    """Show what a bundle holds and, once extracted, what each artifact became."""
    with ApiClient.connect() as client:
        print_resource(client.get(f"{PATH}/{segment(bundle_id)}"), FIELDS, as_json=as_json)


@app.command()
def upload(
    file: Annotated[Path, typer.Argument(help="A bundle zip exported by Image Streamer or Ingot.")],
    extract: Annotated[bool, typer.Option("--extract/--no-extract", help="Import its artifacts once checked.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Replace artifacts of the same name and other content.")]
    = False,
    wait: WaitOption = True,
    as_json: JsonOption = False,
) -> None:
    """Upload a bundle; the appliance checks every entry and checksum (a task), then extracts it."""
    if not file.is_file():
        raise UsageError(f"{file} is not a file.")
    with ApiClient.connect() as client:
        bundle = follow_created(client, upload_file(client, PATH, file, {}), "artifact bundle", wait or extract,
                                as_json and not extract)
        if bundle is not None and extract:
            _extract(client, str(bundle["id"]), force, wait, as_json)
            bundle = client.get(str(bundle["uri"]))
    if bundle is not None:
        print_resource(bundle, FIELDS, as_json=as_json)


@app.command("extract")
def extract_bundle(
    bundle_id: IdArg,
    force: Annotated[bool, typer.Option("--force", help="Replace artifacts of the same name and other content.")]
    = False,
    wait: WaitOption = True,
    as_json: JsonOption = False,
) -> None:
    """Import a bundle's artifacts. Same-named artifacts with other content are a conflict unless --force."""
    with ApiClient.connect() as client:
        _extract(client, bundle_id, force, wait, as_json)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Name of the new bundle.")],
    deployment_plan: Annotated[list[str] | None, typer.Option(
        "--deployment-plan", help="Deployment plan ID (its build plan and scripts come along); repeatable.")] = None,
    build_plan: Annotated[list[str] | None, typer.Option(
        "--build-plan", help="Build plan ID (its scripts come along); repeatable.")] = None,
    plan_script: Annotated[list[str] | None, typer.Option("--plan-script", help="Plan script ID; repeatable.")] = None,
    golden_image: Annotated[list[str] | None, typer.Option("--golden-image", help="Golden image ID; repeatable.")]
    = None,
    description: Annotated[str, typer.Option("--description", "-d", help="Free text.")] = "",
    wait: WaitOption = True,
    as_json: JsonOption = False,
) -> None:
    """Write chosen artifacts into a new bundle (a task); download it with `ingot plans bundles download`."""
    chosen = {"deploymentPlans": ("/rest/deployment-plans", deployment_plan), "buildPlans": ("/rest/build-plans",
              build_plan), "planScripts": ("/rest/plan-scripts", plan_script),
              "goldenImages": ("/rest/golden-images", golden_image)}
    body: dict[str, Any] = {"name": name, "description": description}
    for key, (path, ids) in chosen.items():
        body[key] = [{"resourceUri": f"{path}/{segment(i)}", "readOnly": False} for i in ids or []]
    if not any(body[key] for key in chosen):
        raise UsageError("Choose what goes into the bundle.",
                         hints=["--deployment-plan ID, --build-plan ID, --plan-script ID or --golden-image ID."])
    with ApiClient.connect() as client:
        bundle = follow_created(client, client.post(PATH, body), "artifact bundle", wait, as_json)
    if bundle is not None:
        print_resource(bundle, FIELDS, as_json=as_json)


@app.command()
def download(
    bundle_id: IdArg,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="File or directory to write [default: NAME.zip, here].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Download a bundle zip; it is checked against its SHA-256 before it gets its name."""
    with ApiClient.connect() as client:
        bundle = client.get(f"{PATH}/{segment(bundle_id)}")
        destination = download_destination(output, f"{bundle.get('name') or bundle_id}.zip", force)
        written = fetch_verified(client, str(bundle["downloadURI"]), destination, bundle.get("size"),
                                 bundle.get("checkSum"), "artifact bundle")
    note(f"Saved {bundle.get('name')} ({size(written)}) to {destination}.")


@app.command()
def delete(bundle_id: IdArg) -> None:
    """Delete a bundle (what it was extracted into stays)."""
    with ApiClient.connect() as client:
        client.delete(f"{PATH}/{segment(bundle_id)}")
    note(f"Deleted artifact bundle {bundle_id}.")
