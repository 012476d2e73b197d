"""``ingot plans``: plan scripts, OS build plans and deployment plans (list, show, create, delete),
and ``ingot render``: an answer file rendered here from an attributes file, without an appliance.

Scripts and attributes come from files, as staff keep them in version control: ``--file`` is a
plan script's guestfish command list, ``--attributes`` a JSON list of custom attributes in HPE's
shape (``name``, ``type``, ``value``, ``description``, ``constraints``) or, for render, a JSON
object of values (``Hostname``, ``NIC1``: {...}, ...).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from appliance.cli import bundles
from appliance.cli.client import ApiClient, decode, segment
from appliance.cli.errors import UsageError
from appliance.cli.output import Column, JsonOption, note, print_collection, print_resource, when
from plans.installer import installer_summary

app = typer.Typer(help="OS build plans: plan scripts, build plans and deployment plans.", no_args_is_help=True)
scripts_app = typer.Typer(help="Plan scripts: guestfish command lists with @tokens@.", no_args_is_help=True)
build_app = typer.Typer(help="OS build plans: ordered plan scripts and their custom attributes.",
                        no_args_is_help=True)
deployment_app = typer.Typer(help="Deployment plans: a golden image, a build plan and attribute defaults.",
                             no_args_is_help=True)
app.add_typer(scripts_app, name="scripts")
app.add_typer(build_app, name="build-plans")
app.add_typer(deployment_app, name="deployment-plans")
app.add_typer(bundles.app, name="bundles")

SCRIPTS, BUILD_PLANS, DEPLOYMENT_PLANS = "/rest/plan-scripts", "/rest/build-plans", "/rest/deployment-plans"
IdArg = Annotated[str, typer.Argument(help="Resource ID.")]


class PlanType(StrEnum):
    deploy = "deploy"
    capture = "capture"
    general = "general"


class BuildPlanType(StrEnum):
    deploy = "deploy"
    capture = "capture"


def _step(step: dict[str, Any]) -> str:
    return f"{step.get('serialNumber')}. {step.get('planScriptName') or step.get('planScriptUri')}"


def _last(uri: Any) -> str:
    return str(uri or "").rstrip("/").rsplit("/", 1)[-1]


SCRIPT_COLUMNS = (
    Column("ID", "id", no_wrap=True),
    Column("Name", "name"),
    Column("Type", "planType", no_wrap=True),
    Column("Attributes", lambda s: ", ".join(s.get("customAttributeNames") or []), drop=1),
    Column("Modified", lambda s: when(s.get("modified")), no_wrap=True, drop=2),
)
SCRIPT_FIELDS = (*SCRIPT_COLUMNS, Column("Description", "description"), Column("Content", "content"))
BUILD_COLUMNS = (
    Column("ID", "id", no_wrap=True),
    Column("Name", "name"),
    Column("Type", "oeBuildPlanType", no_wrap=True),
    Column("Steps", lambda b: len(b.get("buildStep") or []), justify="right"),
    Column("Attributes", lambda b: ", ".join(a.get("name", "") for a in b.get("customAttributes") or []), drop=1),
)
BUILD_FIELDS = (
    *BUILD_COLUMNS,
    Column("Description", "description"),
    Column("Step order", lambda b: "; ".join(_step(s) for s in b.get("buildStep") or [])),
)
DEPLOYMENT_COLUMNS = (
    Column("ID", "id", no_wrap=True),
    Column("Name", "name"),
    Column("Build plan", lambda d: _last(d.get("oeBuildPlanURI"))),
    Column("Golden image", lambda d: _last(d.get("goldenImageURI")) or "none", drop=1),
)
DEPLOYMENT_FIELDS = (
    *DEPLOYMENT_COLUMNS,
    Column("Installer", lambda d: installer_summary(d.get("installer")) or "none"),
    Column("Installer kernel arguments", lambda d: (d.get("installer") or {}).get("kernelArgs") or ""),
    Column("Description", "description"),
    Column("Attributes", lambda d: ", ".join(
        f"{a.get('name')}={a.get('value')}{'' if a.get('editable', True) else ' (fixed)'}"
        for a in d.get("customAttributes") or [])),
)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read the {what} {path}: {exc}") from None


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(_read_text(path, what))
    except ValueError as exc:
        raise UsageError(f"The {what} {path} is not JSON: {exc}") from None


def _delete(path: str, what: str, ident: str) -> None:
    with ApiClient.connect() as client:
        client.delete(f"{path}/{segment(ident)}")
    note(f"Deleted {what} {ident}.")


# -- plan scripts --------------------------------------------------------------------------------

@scripts_app.command("list")
def list_scripts(as_json: JsonOption = False) -> None:
    """List the plan scripts."""
    with ApiClient.connect() as client:
        body = client.get(SCRIPTS, {"sort": "name:ascending"})
    print_collection(body, SCRIPT_COLUMNS, as_json=as_json, empty="No plan scripts.")


@scripts_app.command("show")
def show_script(script_id: IdArg, as_json: JsonOption = False) -> None:
    """Show a plan script with its content and the attributes its tokens use."""
    with ApiClient.connect() as client:
        print_resource(client.get(f"{SCRIPTS}/{segment(script_id)}"), SCRIPT_FIELDS, as_json=as_json)


@scripts_app.command("create")
def create_script(
    name: Annotated[str, typer.Argument(help="Name of the plan script.")],
    file: Annotated[Path, typer.Option("--file", "-f", help="The guestfish command list.")],
    plan_type: Annotated[PlanType, typer.Option("--type", "-t", help="deploy, capture or general.")] = PlanType.deploy,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    as_json: JsonOption = False,
) -> None:
    """Add a plan script from a file; its custom attributes are the @tokens@ it uses."""
    body = {"type": "PlanScript", "name": name, "description": description, "planType": plan_type.value,
            "content": _read_text(file, "plan script"), "hpProvided": False}
    with ApiClient.connect() as client:
        print_resource(decode(client.post(SCRIPTS, body)), SCRIPT_FIELDS, as_json=as_json)


@scripts_app.command("update")
def update_script(
    script_id: IdArg,
    file: Annotated[Path, typer.Option("--file", "-f", help="The new guestfish command list.")],
    as_json: JsonOption = False,
) -> None:
    """Replace a plan script's content (the rest is kept)."""
    with ApiClient.connect() as client:
        script = client.get(f"{SCRIPTS}/{segment(script_id)}")
        script["content"] = _read_text(file, "plan script")
        print_resource(client.put(f"{SCRIPTS}/{segment(script_id)}", script), SCRIPT_FIELDS, as_json=as_json)


@scripts_app.command("delete")
def delete_script(script_id: IdArg) -> None:
    """Delete a plan script (refused while a build plan uses it)."""
    _delete(SCRIPTS, "plan script", script_id)


# -- build plans ---------------------------------------------------------------------------------

@build_app.command("list")
def list_build_plans(as_json: JsonOption = False) -> None:
    """List the OS build plans."""
    with ApiClient.connect() as client:
        body = client.get(BUILD_PLANS, {"sort": "name:ascending"})
    print_collection(body, BUILD_COLUMNS, as_json=as_json, empty="No build plans.")


@build_app.command("show")
def show_build_plan(plan_id: IdArg, as_json: JsonOption = False) -> None:
    """Show a build plan with its steps in order."""
    with ApiClient.connect() as client:
        print_resource(client.get(f"{BUILD_PLANS}/{segment(plan_id)}"), BUILD_FIELDS, as_json=as_json)


@build_app.command("create")
def create_build_plan(
    name: Annotated[str, typer.Argument(help="Name of the build plan.")],
    steps: Annotated[list[str] | None, typer.Option(
        "--step", "-s", help="Plan script ID, once per step, in the order they run.")] = None,
    plan_type: Annotated[BuildPlanType, typer.Option("--type", "-t", help="deploy or capture.")] = BuildPlanType.deploy,
    attributes: Annotated[Path | None, typer.Option(
        "--attributes", "-a", help="JSON list of custom attributes (name, type, value, description, "
        "constraints).")] = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    as_json: JsonOption = False,
) -> None:
    """Add a build plan: plan scripts in order, and the custom attributes they take."""
    custom = _read_json(attributes, "attributes file") if attributes is not None else []
    if not isinstance(custom, list):
        raise UsageError("The attributes file must hold a JSON list of custom attributes.")
    body = {"type": "OeBuildPlan", "name": name, "description": description, "oeBuildPlanType": plan_type.value,
            "hpProvided": False, "customAttributes": custom,
            "buildStep": [{"serialNumber": str(n), "planScriptUri": f"{SCRIPTS}/{script}", "parameters": ""}
                          for n, script in enumerate(steps or [], start=1)]}
    with ApiClient.connect() as client:
        print_resource(decode(client.post(BUILD_PLANS, body)), BUILD_FIELDS, as_json=as_json)


@build_app.command("delete")
def delete_build_plan(plan_id: IdArg) -> None:
    """Delete a build plan (refused while a deployment plan uses it)."""
    _delete(BUILD_PLANS, "build plan", plan_id)


# -- deployment plans ----------------------------------------------------------------------------

@deployment_app.command("list")
def list_deployment_plans(as_json: JsonOption = False) -> None:
    """List the deployment plans."""
    with ApiClient.connect() as client:
        body = client.get(DEPLOYMENT_PLANS, {"sort": "name:ascending"})
    print_collection(body, DEPLOYMENT_COLUMNS, as_json=as_json, empty="No deployment plans.")


@deployment_app.command("show")
def show_deployment_plan(plan_id: IdArg, as_json: JsonOption = False) -> None:
    """Show a deployment plan with its attribute values (passwords are never shown)."""
    with ApiClient.connect() as client:
        print_resource(client.get(f"{DEPLOYMENT_PLANS}/{segment(plan_id)}"), DEPLOYMENT_FIELDS, as_json=as_json)


@deployment_app.command("create")
def create_deployment_plan(
    name: Annotated[str, typer.Argument(help="Name of the deployment plan.")],
    build_plan: Annotated[str, typer.Option("--build-plan", "-b", help="Deploy build plan ID.")],
    golden_image: Annotated[str | None, typer.Option(
        "--golden-image", "-g", help="Golden image ID [default: none: an installer or an empty volume].")] = None,
    attributes: Annotated[Path | None, typer.Option(
        "--attributes", "-a", help="JSON list of {name, value, editable, visible} overriding the build "
        "plan's defaults.")] = None,
    installer: Annotated[str | None, typer.Option(
        "--installer", help="Run this installer instead of deploying a golden image: kickstart, preseed or "
        "autoinstall.")] = None,
    media: Annotated[str | None, typer.Option(
        "--media", help="The installer's directory under INGOT_HOME/boot/installers (vmlinuz, initrd.img).")] = None,
    os_name: Annotated[str | None, typer.Option("--os", help="The installer's OS, e.g. rhel, debian, ubuntu.")] = None,
    version: Annotated[str | None, typer.Option("--version", help="The OS version, e.g. 9.")] = None,
    arch: Annotated[str, typer.Option("--arch", help="x86_64 or aarch64.")] = "x86_64",
    kernel_args: Annotated[str, typer.Option(
        "--kernel-args", help="More arguments for the installer's kernel, e.g. inst.repo=URL.")] = "",
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    as_json: JsonOption = False,
) -> None:
    """Add a deployment plan: a build plan, a golden image or an installer, and attribute defaults."""
    custom = _read_json(attributes, "attributes file") if attributes is not None else []
    if not isinstance(custom, list):
        raise UsageError("The attributes file must hold a JSON list of {name, value, ...}.")
    body: dict[str, Any] = {"type": "OEDeploymentPlan", "name": name, "description": description,
                            "oeBuildPlanURI": f"{BUILD_PLANS}/{build_plan}", "hpProvided": False,
                            "customAttributes": custom}
    if golden_image:
        body["goldenImageURI"] = f"/rest/golden-images/{golden_image}"
    if installer is not None:
        body["installer"] = {"kind": installer, "media": media, "os": os_name, "version": version, "arch": arch,
                             "kernelArgs": kernel_args}
    elif media or os_name or version or kernel_args:
        raise UsageError("--media, --os, --version and --kernel-args describe an installer: add --installer KIND.")
    with ApiClient.connect() as client:
        print_resource(decode(client.post(DEPLOYMENT_PLANS, body)), DEPLOYMENT_FIELDS, as_json=as_json)


@deployment_app.command("delete")
def delete_deployment_plan(plan_id: IdArg) -> None:
    """Delete a deployment plan."""
    _delete(DEPLOYMENT_PLANS, "deployment plan", plan_id)


# -- render --------------------------------------------------------------------------------------

def render(
    kind: Annotated[str, typer.Argument(help="kickstart, preseed, autoinstall or unattend.")],
    attributes: Annotated[Path, typer.Option("--attributes", "-a", help="JSON object of attribute values.")],
    os_name: Annotated[str | None, typer.Option("--os", help="e.g. rhel, debian, ubuntu, windows.")] = None,
    version: Annotated[str | None, typer.Option("--version", help="e.g. 9, 12, 24.04, 2022.")] = None,
    arch: Annotated[str, typer.Option("--arch")] = "x86_64",
    callback_url: Annotated[str, typer.Option(
        "--callback-url", help="Where the installed system reports start, success and failure.")]
    = "http://appliance.invalid/callback",
    token: Annotated[str, typer.Option("--token", help="The deploy's token for those callbacks.")] = "TOKEN",  # noqa: S107 - a placeholder for trying a template
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", "-o", help="Write the files here instead of printing them.")] = None,
) -> None:
    """Render an answer file here (no appliance needed), as a deploy would: the most specific
    template for os/version/arch, attributes validated, passwords hashed or encoded."""
    from plans.render import RenderError
    from plans.render import render as render_files

    values = _read_json(attributes, "attributes file")
    if not isinstance(values, dict):
        raise UsageError("The attributes file must hold a JSON object: {\"Hostname\": ..., \"NIC1\": {...}}.")
    try:
        rendered = render_files(kind, os=os_name, version=version, arch=arch, attributes=values,
                                callback_url=callback_url, deploy_token=token)
    except RenderError as exc:
        raise UsageError(str(exc)) from None
    if output_dir is None:
        for name, text in rendered.files.items():
            if len(rendered.files) > 1:
                typer.echo(f"# --- {name}")
            typer.echo(text, nl=not text.endswith("\n"))
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.files.items():
        (output_dir / name).write_text(text, encoding="utf-8")
    note(f"Rendered {', '.join(rendered.files)} from {rendered.template} into {output_dir}.")
