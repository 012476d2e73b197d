"""``ingot profiles``: server profiles (OneView ``/rest/server-profiles``): list, show, create,
apply again and delete; ``ingot deploy``: one profile per server for a deployment plan, all
followed at once; and ``ingot capture``: a new golden image from a deployed server's disk.

A profile assigns a server, a deployment plan and the plan's attribute values; creating it deploys
the server (see docs/profiles.md). The deploy is a task with one child task per phase (create the
OS volume, personalize, export the image, boot the deploy agent, write the image, boot the
operating system); the progress bar shows the phase running now. A profile is named by its name
or ID (or ``/rest/server-profiles/<id>`` URI), a server and a deployment plan by name or ID.

Attribute values are ``--attr Name=value`` (a NIC's fields as ``--attr NIC1.ipaddress=10.0.0.5``).
Values are sent as given, passwords too; nothing here prints them (the API shows a profile's
passwords as ``********``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

import typer

from appliance.cli import hardware, images
from appliance.cli.client import ApiClient, segment
from appliance.cli.errors import EXIT_FAILED, ApiError, CliError, UsageError, render_error
from appliance.cli.output import (
    Column,
    JsonOption,
    note,
    print_collection,
    print_json,
    print_resource,
    print_table,
    stderr,
    when,
)
from appliance.cli.progress import current_phase, follow_created, has_failed, start_task, watch_tasks

app = typer.Typer(help="Server profiles: a server, a deployment plan and its values; applying one deploys the server.",
                  no_args_is_help=True)

BASE = "/rest/server-profiles"
DEPLOYMENT_PLANS = "/rest/deployment-plans"
OS_DEPLOYMENT_PLANS = "/rest/os-deployment-plans"
REAPPLY = [{"op": "replace", "path": "/osDeploymentSettings/reapplyState", "value": "ApplyPending"}]
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the task with a progress bar.")]
ProfileArg = Annotated[str, typer.Argument(help="Server profile name or ID.", show_default=False)]
AttrOption = Annotated[list[str] | None, typer.Option(
    "--attr", "-a", help="A custom attribute value, Name=value (repeatable).", show_default=False)]


# --- names, IDs and values -----------------------------------------------------------------------
def last_segment(uri: Any) -> str:
    return str(uri or "").rstrip("/").rsplit("/", 1)[-1]


def _by_name(client: ApiClient, base: str, text: str, what: str, hint: str) -> dict[str, Any]:
    """The resource of ``base`` with this ID (or URI) if it looks like one, else the one with this name."""
    text = text.strip()
    if not text:
        raise UsageError(f"Name a {what} (its name or ID).")
    for prefix in (base + "/", OS_DEPLOYMENT_PLANS + "/") if base == DEPLOYMENT_PLANS else (base + "/",):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if _UUID.fullmatch(text):
        found: dict[str, Any] = client.get(f"{base}/{segment(text)}")
        return found
    body = client.get(base, {"filter": f"name='{hardware.quote_filter(text)}'"})
    members = [m for m in body.get("members", []) if isinstance(m, dict)]
    exact = [m for m in members if m.get("name") == text] or members
    if not exact:
        raise CliError(f"No {what} is named {text!r}.", hints=[hint])
    if len(exact) > 1:
        ids = ", ".join(str(m.get("id")) for m in exact)
        raise UsageError(f"More than one {what} is named {text!r} ({ids}).", hints=["Name it by its ID instead."])
    return exact[0]


def resolve(client: ApiClient, name_or_id: str) -> dict[str, Any]:
    """The server profile with this ID (or URI) or name.

    :raises CliError: (exit 1) if there is none; (exit 2) if the name is ambiguous.
    """
    return _by_name(client, BASE, name_or_id, "server profile", "List them with `ingot profiles list`.")


def resolve_plan(client: ApiClient, name_or_id: str) -> dict[str, Any]:
    return _by_name(client, DEPLOYMENT_PLANS, name_or_id, "deployment plan",
                    "List them with `ingot plans deployment-plans list`.")


def parse_attributes(pairs: Iterable[str]) -> dict[str, str]:
    """``Name=value`` pairs as a dict (a later pair wins). A malformed pair is never echoed in the
    error: it may be a password typed without its name."""
    values: dict[str, str] = {}
    for number, pair in enumerate(pairs, start=1):
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--attr takes Name=value: value {number} has {'no name' if sep else 'no ='}.",
                             hints=["e.g. --attr Hostname=web-1"])
        values[name] = value
    return values


def parse_per_server(pairs: Iterable[str], servers: Sequence[str]) -> dict[str, dict[str, str]]:
    """``SERVER:Name=value`` pairs by server (as named in ``servers``)."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        server, sep, rest = pair.partition(":")
        server = server.strip()
        if not sep or not server or not rest.partition("=")[0].strip() or "=" not in rest:
            raise UsageError("--attr-per-server takes SERVER:Name=value.",
                             hints=["e.g. --attr-per-server web-1:Hostname=web-1"])
        if server not in servers:
            raise UsageError(f"--attr-per-server names {server!r}, which is not in --servers.",
                             hints=["Use the server as it is written in --servers."])
        out.setdefault(server, {}).update(parse_attributes([rest]))
    return out


def merge_attributes(entries: Sequence[Any], values: Mapping[str, str]) -> list[dict[str, Any]]:
    """A profile's ``osCustomAttributes`` with ``values`` replacing (or added to) them; the other
    entries are sent back as the API gave them (a ``********`` keeps a stored password)."""
    out = [{"name": e.get("name"), "value": e.get("value")} for e in entries if isinstance(e, dict)]
    index = {str(e["name"]): i for i, e in enumerate(out)}
    for name, value in values.items():
        if name in index:
            out[index[name]]["value"] = value
        else:
            out.append({"name": name, "value": value})
    return out


def profile_body(name: str, server: Mapping[str, Any], plan: Mapping[str, Any], values: Mapping[str, str],
                 description: str = "") -> dict[str, Any]:
    return {"type": "ServerProfileV12", "name": name, "description": description,
            "serverHardwareUri": server.get("uri") or f"{hardware.BASE}/{server.get('id')}",
            "osDeploymentSettings": {
                "osDeploymentPlanUri": f"{OS_DEPLOYMENT_PLANS}/{plan.get('id')}",
                "osCustomAttributes": [{"name": k, "value": v} for k, v in values.items()]}}


# --- how profiles look ---------------------------------------------------------------------------
def _settings(profile: Mapping[str, Any]) -> dict[str, Any]:
    settings = profile.get("osDeploymentSettings")
    return settings if isinstance(settings, dict) else {}


class Names:
    """Server and deployment plan names (and the servers' provision states) for profile tables."""

    def __init__(self, client: ApiClient, servers: Iterable[dict[str, Any]] = (),
                 plans: Iterable[dict[str, Any]] = ()) -> None:
        self.client = client
        self.servers = {str(s.get("uri")): s for s in servers}
        self.plans = {str(p.get("id")): str(p.get("name")) for p in plans}

    @classmethod
    def load(cls, client: ApiClient) -> Names:
        servers = client.get(hardware.BASE, {"count": -1}).get("members", [])
        plans = client.get(DEPLOYMENT_PLANS, {"count": -1}).get("members", [])
        return cls(client, servers, plans)

    def server(self, profile: Mapping[str, Any]) -> dict[str, Any]:
        uri = profile.get("serverHardwareUri")
        if not uri:
            return {}
        if uri not in self.servers:
            try:
                self.servers[uri] = self.client.get(uri)
            except ApiError:
                self.servers[uri] = {"name": last_segment(uri)}
        return self.servers[uri]

    def plan(self, profile: Mapping[str, Any]) -> str:
        plan_id = last_segment(_settings(profile).get("osDeploymentPlanUri"))
        return self.plans.get(plan_id, plan_id)

    def annotate(self, profile: dict[str, Any]) -> dict[str, Any]:
        server = self.server(profile)
        return {**profile, "_server": server.get("name") or "", "_provision": hardware.provision_of(server),
                "_lastError": server.get("lastError") or "", "_plan": self.plan(profile)}


PROFILE_COLUMNS = (
    Column("Name", "name", no_wrap=True),
    Column("State", "state", no_wrap=True),
    Column("Status", "status", no_wrap=True),
    Column("Server", "_server", no_wrap=True),
    Column("Provision", "_provision", no_wrap=True),
    Column("Deployment plan", "_plan", drop=1),
    Column("OS volume", lambda p: last_segment(_settings(p).get("osVolumeUri")), no_wrap=True, drop=2),
)
PROFILE_FIELDS = (
    Column("Name", "name"),
    Column("ID", "id"),
    Column("Description", "description"),
    Column("State", "state"),
    Column("Status", "status"),
    Column("State reason", "stateReason"),
    Column("Server", "_server"),
    Column("Provision state", "_provision"),
    Column("Last error", "_lastError"),
    Column("Deployment plan", "_plan"),
    Column("OS volume", lambda p: _settings(p).get("osVolumeUri") or "none yet"),
    Column("Root device hints", lambda p: ", ".join(f"{k}={v}" for k, v in (p.get("rootDeviceHints") or {}).items())),
    Column("Last task", "taskUri"),
    Column("Created", lambda p: when(p.get("created"))),
    Column("Modified", lambda p: when(p.get("modified"))),
    Column("URI", "uri"),
)
ATTRIBUTE_COLUMNS = (Column("Attribute", "name", no_wrap=True), Column("Value", "value"))
PHASE_COLUMNS = (
    Column("Phase", "name"),
    Column("State", "taskState", no_wrap=True),
    Column("%", "percentComplete", justify="right", no_wrap=True),
    Column("Status", "taskStatus"),
)


def with_state_hint(error: ApiError, server: str) -> ApiError:
    """A refused deploy: say how to see (and change) the server's provision state."""
    if error.code == "INVALID_PROVISION_STATE":
        error.hints = [*error.hints, f"A profile deploys an available server: see `ingot hardware show {server}`; "
                                     f"`ingot hardware inspect {server}` makes a manageable server available."]
    return error


# --- following tasks -----------------------------------------------------------------------------
def _task_error(task: Mapping[str, Any]) -> CliError:
    errors = task.get("taskErrors") or []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    message = first.get("message") or task.get("taskStatus") or "no error message"
    return CliError(str(message), details=str(first.get("details") or ""),
                    hints=[str(a) for a in first.get("recommendedActions") or []], code=first.get("errorCode"))


def report_failure(what: str, error: CliError) -> None:
    error.message = f"{what}: {error.message}"
    render_error(error, stderr())


def follow(client: ApiClient, task_ids: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Follow the tasks (label → task ID) with one progress bar each, showing the running phase;
    the last body of each task by label."""
    labels = list(task_ids)
    tasks = watch_tasks(client, [task_ids[label] for label in labels],
                        labels={task_id: label for label, task_id in task_ids.items()}, status=current_phase)
    return dict(zip(labels, tasks, strict=True))


def _follow_one(client: ApiClient, response: Any, label: str, wait: bool, what: str) -> dict[str, Any] | None:
    """Follow the 202's task (exit 1 with its error if it fails); ``None`` with --no-wait."""
    task_id, _ = start_task(response)
    if not wait:
        note(f"{what}: task {task_id}. Follow it with `ingot tasks watch {task_id}`.")
        return None
    task = follow(client, {label: task_id})[label]
    if has_failed(task):
        report_failure(f"{what} ended {task.get('taskState')}", _task_error(task))
        raise typer.Exit(EXIT_FAILED)
    return task


def _phase_rows(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [c for c in task.get("childTasks") or [] if isinstance(c, dict)]


# --- commands ------------------------------------------------------------------------------------
@app.command("list")
def list_profiles(
    filter_: Annotated[str | None, typer.Option(
        "--filter", help="A OneView filter, e.g. \"state='Error'\".", show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """List server profiles: state, server and its provision state, deployment plan, OS volume."""
    params: dict[str, Any] = {"sort": "name:asc", "count": -1}
    if filter_:
        params["filter"] = filter_
    with ApiClient.connect() as client:
        body = client.get(BASE, params)
        if as_json:
            print_json(body)
            return
        names = Names.load(client)
        body = {**body, "members": [names.annotate(p) for p in body.get("members", []) if isinstance(p, dict)]}
    print_collection(body, PROFILE_COLUMNS, as_json=False, empty="No server profiles.")


@app.command()
def show(profile: ProfileArg, as_json: JsonOption = False) -> None:
    """Show a profile: its server (provision state, last error), deployment plan, OS volume,
    attribute values (passwords as ********) and the phases of its last task."""
    with ApiClient.connect() as client:
        body = resolve(client, profile)
        if as_json:
            print_json(body)
            return
        names = Names(client)
        plan_id = last_segment(_settings(body).get("osDeploymentPlanUri"))
        if plan_id:
            with contextlib.suppress(ApiError):  # a plan gone meanwhile: its ID is shown
                names.plans[plan_id] = str(client.get(f"{DEPLOYMENT_PLANS}/{segment(plan_id)}").get("name"))
        shown = names.annotate(body)
        task: dict[str, Any] | None = None
        if body.get("taskUri"):
            try:
                task = client.get(str(body["taskUri"]))
            except ApiError:
                task = None
    print_resource(shown, PROFILE_FIELDS, as_json=False)
    note("")
    attributes = [a for a in _settings(body).get("osCustomAttributes") or [] if isinstance(a, dict)]
    print_table(attributes, ATTRIBUTE_COLUMNS, empty="No attribute values (the deployment plan's defaults apply).")
    if task is not None:
        note("")
        note(f"Task {task.get('name')} ({task.get('id')}): {task.get('taskState')}, {task.get('percentComplete', 0)}%"
             + (f": {task['taskStatus']}" if task.get("taskStatus") else ""))
        print_table(_phase_rows(task), PHASE_COLUMNS, empty="No phases yet.")


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Name of the profile.", show_default=False)],
    server: Annotated[str, typer.Option("--server", "-s", help="Server name or ID (provision state available).",
                                        show_default=False)],
    plan: Annotated[str, typer.Option("--plan", "-p", help="Deployment plan name or ID.", show_default=False)],
    attributes: AttrOption = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    wait: Wait = True,
) -> None:
    """Create a profile, which deploys the server: one progress bar showing the current phase."""
    values = parse_attributes(attributes or [])
    with ApiClient.connect() as client:
        target = hardware.resolve(client, server)
        chosen = resolve_plan(client, plan)
        try:
            response = client.post(BASE, profile_body(name, target, chosen, values, description))
        except ApiError as exc:
            raise with_state_hint(exc, str(target.get("name"))) from None
        task = _follow_one(client, response, name, wait, f"Deploying {name} on {target.get('name')}")
        if task is None:
            return
    note(f"Deployed {name} on {target.get('name')} with {chosen.get('name')}.")


@app.command()
def apply(profile: ProfileArg, attributes: AttrOption = None, wait: Wait = True) -> None:
    """Deploy a profile again: with the values it has (no --attr), or with the --attr values changed."""
    values = parse_attributes(attributes or [])
    with ApiClient.connect() as client:
        body = resolve(client, profile)
        path = f"{BASE}/{segment(str(body['id']))}"
        if values:
            settings = _settings(body)
            body["osDeploymentSettings"] = {**settings, "osCustomAttributes": merge_attributes(
                settings.get("osCustomAttributes") or [], values)}
            response = client.request("PUT", path, json=body)
        else:
            response = client.request("PATCH", path, json=REAPPLY)
        task = _follow_one(client, response, str(body.get("name")), wait, f"Applying {body.get('name')}")
        if task is None:
            return
        after = client.get(path)
    note(f"Applied {after.get('name')}: {after.get('state')}"
         + (f" ({task['taskStatus']})" if task.get("taskStatus") else "."))


@app.command()
def delete(profile: ProfileArg, wait: Wait = True) -> None:
    """Delete a profile: a deploy in progress is aborted, the server is powered off, erased by the
    deploy agent and given back (available), and the OS volume is deleted."""
    with ApiClient.connect() as client:
        body = resolve(client, profile)
        response = client.request("DELETE", f"{BASE}/{segment(str(body['id']))}")
        if _follow_one(client, response, str(body.get("name")), wait, f"Deleting {body.get('name')}") is None:
            return
    note(f"Deleted {body.get('name')}.")


def deploy(
    plan: Annotated[str, typer.Argument(help="Deployment plan name or ID.", show_default=False)],
    servers: Annotated[str, typer.Option("--servers", help="Servers to deploy, comma-separated names or IDs.",
                                         show_default=False)],
    attributes: AttrOption = None,
    per_server: Annotated[list[str] | None, typer.Option(
        "--attr-per-server", help="A value for one server, SERVER:Name=value (repeatable).",
        show_default=False)] = None,
    name_prefix: Annotated[str, typer.Option(
        "--name-prefix", help="Profile names are this followed by the server's name.")] = "",
    wait: Wait = True,
) -> None:
    """Deploy a plan onto several servers: one profile each, followed at once with a progress bar
    per server; exit 1 if any deploy fails (each failure is printed)."""
    wanted = list(dict.fromkeys(s.strip() for s in servers.split(",") if s.strip()))
    if not wanted:
        raise UsageError("--servers needs at least one server.")
    common = parse_attributes(attributes or [])
    extra = parse_per_server(per_server or [], wanted)
    failures: list[tuple[str, CliError]] = []
    started: dict[str, str] = {}  # profile name -> task ID
    with ApiClient.connect() as client:
        chosen = resolve_plan(client, plan)
        targets = {given: hardware.resolve(client, given) for given in wanted}
        for given, target in targets.items():
            name = f"{name_prefix}{target.get('name')}"
            values = {**common, **extra.get(given, {})}
            try:
                task_id, _ = start_task(client.post(BASE, profile_body(name, target, chosen, values)))
            except ApiError as exc:
                failures.append((f"Deploying {name} on {target.get('name')} was refused",
                                 with_state_hint(exc, str(target.get("name")))))
                continue
            except CliError as exc:
                failures.append((f"Deploying {name} on {target.get('name')} was refused", exc))
                continue
            started[name] = task_id
        if started and not wait:
            for name, task_id in started.items():
                note(f"Deploying {name}: task {task_id}.")
            note("Follow them with `ingot tasks watch " + " ".join(started.values()) + "`.")
        elif started:
            tasks = follow(client, started)
            for name, task in tasks.items():
                if has_failed(task):
                    failures.append((f"Deploying {name} ended {task.get('taskState')}", _task_error(task)))
                else:
                    note(f"Deployed {name}.")
    for what, error in failures:
        report_failure(what, error)
    if failures:
        codes = {error.exit_code for _, error in failures}
        raise typer.Exit(codes.pop() if len(codes) == 1 else EXIT_FAILED)
    if not wait:
        return
    note(f"Deployed {chosen.get('name')} on {len(started)} server{'' if len(started) == 1 else 's'}.")


def capture(
    server: Annotated[str, typer.Argument(help="The deployed server to capture, by name or ID.", show_default=False)],
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the new golden image.", show_default=False)],
    plan: Annotated[str, typer.Option(
        "--plan", help="Capture build plan (name or ID) that generalizes the copy: hostname, machine-id, "
                       "SSH host keys, logs. Default: none, the disk as it is.")] = "",
    description: Annotated[str, typer.Option("--description", "-d", help="Free text.")] = "",
    compress: Annotated[bool, typer.Option("--compress", help="Compress the captured qcow2.")] = False,
    wait: Wait = True,
    as_json: JsonOption = False,
) -> None:
    """Capture a new golden image from a running server: boot it into the deploy agent, stream its
    disk back, boot it into its own OS again, then generalize the copy and store it (a task)."""
    with ApiClient.connect() as client:
        target = hardware.resolve(client, server)
        body: dict[str, Any] = {"type": "GoldenImage", "name": name, "description": description,
                                "imageCapture": True, "serverHardwareUri": target.get("uri"), "compress": compress}
        if plan:
            body["buildPlanUri"] = _by_name(client, "/rest/build-plans", plan, "build plan",
                                            "List them with `ingot plans build-plans list`.").get("uri")
        try:
            response = client.post(images.PATH, body)
        except ApiError as exc:
            if exc.code == "INVALID_PROVISION_STATE":
                exc.hints = [*exc.hints, f"Only a deployed server (or one whose capture failed) is captured: see "
                                         f"`ingot hardware show {target.get('name')}`."]
            raise
        image = follow_created(client, response, "golden image", wait, as_json)
    if image is not None:
        print_resource(image, images.IMAGE_FIELDS, as_json=as_json)
