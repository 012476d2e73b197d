"""UI pages for server hardware: the server list (power buttons, provision states, add, power sync,
discovery) and a server's page (inventory, sensors, boot device, power, refresh, remove, serial
console, provision state with its events, and the hardware inspection found).

The pages are rendered from the same wire shape the REST API sends (``server_hardware_public``),
so ``static/hardware.js`` can refresh a row from ``GET /rest/server-hardware/{id}`` with the same
field names. Every action calls the REST API from the browser (cookie + CSRF header, as the other
pages do) and starts a task; its progress bar is polled by ``ui.js`` and, when the task ends,
``hardware.js`` re-reads the servers it touched. Provision events other than ``inspect`` answer with
the server at once, which ``hardware.js`` shows in place. BMC-provided strings (model, serial,
sensor names...) and the agent's inventory are untrusted: the templates autoescape them and the JS
only ever sets ``textContent``.

**Capture golden image** (a ``deployed`` or ``capture-failed`` server, operators) is the one plain
form on the server's page: it posts to ``/ui/servers/{id}/capture`` with the session's CSRF token
(as the Users page does), which starts ``server_capture.start_server_capture`` (the service behind
``POST /rest/golden-images`` with ``serverHardwareUri``) and answers 303 back to the server's page.
There the Provisioning panel shows the server's latest capture (found by the task's ``serverId``
argument: its resource is the new golden image, not the server) with its progress bar and the
timeline of its phases; ``hardware.js`` adds a phase that starts meanwhile, re-reads the server as
the task moves on, and loads the page again when it ends. A refused capture (409: the server is not
deployed any more, or the name is taken; 400: the plan is not a capture plan) is the server's page
again, with that status, the error at the form and the fields as they were typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from appliance.errors import AlreadyExists, ApplianceError, Forbidden, InvalidInput, NotFound
from appliance.models import BuildPlan, ServerHardware, Task
from appliance.query import CollectionQuery, Condition, Op, SortKey
from appliance.repositories.build_plans import BuildPlanRepository
from appliance.repositories.server_hardware import ServerHardwareRepository
from appliance.roles import Role
from appliance.services.build_plans import build_plan_uri
from appliance.services.golden_images import GoldenImageService
from appliance.services.server_capture import TASK_SERVER_CAPTURE, start_server_capture
from appliance.services.tasks import TaskService
from appliance.tasks.states import ACTIVE_STATES
from web.schemas.server_hardware import server_hardware_public
from web.ui.routes import PAGE_SIZE, CsrfField, CsrfRejected, UiRoute, View, _pager, view

router = APIRouter(route_class=UiRoute, include_in_schema=False)

CATEGORY = "server-hardware"
FLEET_URI = "/rest/server-hardware"  # the resource of fleet-wide tasks (power sync, discovery)
STATE_LABELS = {"NoProfileApplied": "No profile applied"}
# (label, powerState, powerControl, confirmation question or "")
POWER_BUTTONS = (
    ("Power on", "On", "MomentaryPress", ""),
    ("Shut down", "Off", "MomentaryPress", "Ask the operating system of {name} to shut down?"),
    ("Force off", "Off", "PressAndHold", "Cut the power of {name} at once? Unsaved work is lost."),
    ("Power cycle", "On", "ColdBoot", "Power {name} off and on again? Unsaved work is lost."),
    ("Reset", "On", "Reset", "Reset {name}? Unsaved work is lost."),
)
# (event, label, confirmation question or "") of the operator's provision events, in the order shown.
# The page renders every button; the ones the provision state does not allow now are hidden, and
# hardware.js shows and hides them from ``provisionEvents`` as the state changes.
PROVISION_BUTTONS = (
    ("inspect", "Inspect", "Inspect {name}? It is network-booted into the deploy agent, which reads its hardware; "
                           "a running server is power-cycled and unsaved work is lost."),
    ("abort", "Abort", ""),
    ("manage", "Manage", ""),
    ("maintain", "Maintain", ""),
    ("unmaintain", "Unmaintain", ""),
    ("retire", "Retire", "Retire {name}? A retired server takes no further provision events."),
)
BOOT_DEVICES = (("none", "No override (firmware order)"), ("pxe", "Network (PXE)"), ("disk", "Disk"),
                ("cd", "CD/DVD"), ("bios", "Firmware setup"))
RECENT_TASKS = 10
_LATEST_WINDOW = 200  # recent server tasks scanned for each row's latest task
_CAPTURE_WINDOW = 100  # recent captures scanned for a server's latest (its id is in the task's args)
CAPTURE_PLANS_LISTED = 200  # capture build plans offered by the form; a site has a few
NAME_MAX, DESCRIPTION_MAX = 255, 4096  # as POST /rest/golden-images (web/schemas/golden_images.py)
PLAN_ID_MAX = 64
ACTIVE = frozenset(s.value for s in ACTIVE_STATES)


def _public(servers: Sequence[ServerHardware]) -> list[dict[str, Any]]:
    return [server_hardware_public(s) for s in servers]


def _server_tasks(v: View, *conditions: Condition, count: int) -> list[Task]:
    query = CollectionQuery(count=count, conditions=(
        Condition("associatedResource.resourceCategory", Op.EQ, CATEGORY), *conditions))
    return TaskService(v.db, v.ctx.clock).list(query).members


@router.get("/ui/servers")
def servers_page(request: Request, start: Annotated[int | None, Query(ge=0)] = None) -> Response:
    with view(request, Role.READ_ONLY) as v:
        page = ServerHardwareRepository(v.db).page(
            CollectionQuery(start=max(0, start or 0), count=PAGE_SIZE, sort=(SortKey("name"),)))
        servers = _public(page.members)
        recent = _server_tasks(v, count=_LATEST_WINDOW)
        latest: dict[str, Task] = {}
        for task in recent:  # newest first: keep the first seen per server
            if task.resource_uri and task.resource_uri != FLEET_URI:
                latest.setdefault(task.resource_uri, task)
        return v.render(
            "servers.html", "servers", title="Servers", servers=servers, total=page.total, latest=latest,
            tasks=recent[:RECENT_TASKS], can_operate=v.may(Role.OPERATOR),
            can_admin=v.may(Role.INFRASTRUCTURE_ADMINISTRATOR), state_labels=STATE_LABELS,
            pager=_pager("/ui/servers", page.start, page.total, {}),
        )


def _latest_capture(v: View, server_id: str) -> Task | None:
    """The newest capture of this server's disk (newest first; the server is in the task's args)."""
    captures = TaskService(v.db, v.ctx.clock).list(CollectionQuery(
        count=_CAPTURE_WINDOW, conditions=(Condition("kind", Op.EQ, TASK_SERVER_CAPTURE),))).members
    return next((t for t in captures if (t.args or {}).get("serverId") == server_id), None)


def _capture_plans(v: View, chosen: str) -> list[tuple[str, str]]:
    """(id, label) of the capture build plans; a chosen plan that is not one (any more) stays chosen,
    said to be wrong, rather than the form quietly falling back to "none" and capturing as it is."""
    repo = BuildPlanRepository(v.db)
    plans: list[BuildPlan] = list(repo.page(CollectionQuery(
        count=CAPTURE_PLANS_LISTED, conditions=(Condition("oeBuildPlanType", Op.EQ, "capture"),),
        sort=(SortKey("name"),))).members)
    choices = [(plan.id, plan.name) for plan in plans]
    if chosen and all(plan_id != chosen for plan_id, _ in choices):
        found = repo.get(chosen)
        choices.append((chosen, f"{found.name} (a {found.plan_type} build plan)" if found is not None
                        else f"{chosen} (no such build plan)"))
    return choices


def _error_field(error: ApplianceError) -> str | None:
    """The form field a refused capture is about: marked there, the message above the fields."""
    if isinstance(error, AlreadyExists) or any(field == "name" for field, _ in error.nested):
        return "name"
    if any(field == "buildPlanUri" for field, _ in error.nested):
        return "build_plan"
    if any(field == "description" for field, _ in error.nested):
        return "description"
    return None


def _server_view(v: View, server_id: str, status: int = 200, capture_form: dict[str, Any] | None = None,
                 capture_error: ApplianceError | None = None) -> HTMLResponse:
    server = ServerHardwareRepository(v.db).get(server_id)
    if server is None:
        raise NotFound(kind="server hardware", ident=server_id)
    body = server_hardware_public(server)
    tasks = _server_tasks(v, Condition("associatedResource.resourceUri", Op.EQ, body["uri"]),
                          count=RECENT_TASKS)
    capture = _latest_capture(v, server.id)
    can_operate = v.may(Role.OPERATOR)
    # The form: while the state allows a capture, or to show why one was refused with what was typed.
    show_form = can_operate and ("capture" in body["provisionEvents"] or capture_error is not None)
    form = capture_form or {"name": "", "description": "", "build_plan": "", "compress": False}
    return v.render(
        "server.html", "servers", status=status, title=server.name, server=body, tasks=tasks,
        can_operate=can_operate, can_admin=v.may(Role.INFRASTRUCTURE_ADMINISTRATOR),
        state_labels=STATE_LABELS, power_buttons=POWER_BUTTONS, boot_devices=BOOT_DEVICES,
        provision_buttons=PROVISION_BUTTONS,
        capture=capture, capture_phases=TaskService(v.db, v.ctx.clock).children(capture.id) if capture else [],
        capture_running=capture is not None and capture.state in ACTIVE,
        show_capture_form=show_form, capture_plans=_capture_plans(v, form["build_plan"]) if show_form else [],
        capture_form=form,
        capture_error=capture_error,
        capture_error_field=_error_field(capture_error) if capture_error is not None else None,
        name_max=NAME_MAX, description_max=DESCRIPTION_MAX,
    )


@router.get("/ui/servers/{server_id}")
def server_page(request: Request, server_id: str) -> Response:
    with view(request, Role.READ_ONLY) as v:
        return _server_view(v, server_id)


@router.post("/ui/servers/{server_id}/capture")
def capture_server(
    request: Request,
    server_id: str,
    csrf: CsrfField = "",
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    build_plan: Annotated[str, Form()] = "",
    compress: Annotated[bool, Form()] = False,
) -> Response:
    """The form of the Provisioning panel: start capturing the server's disk into a new golden image."""
    form = {"name": name, "description": description, "compress": compress,
            "build_plan": build_plan if len(build_plan) <= PLAN_ID_MAX else ""}  # (a select's value: no more)
    try:
        with view(request, Role.OPERATOR, csrf, check_csrf=True) as v:
            if len(name) > NAME_MAX:
                raise InvalidInput(reason=f"the name is longer than {NAME_MAX} characters",
                                   nested=[("name", f"at most {NAME_MAX} characters")])
            if len(description) > DESCRIPTION_MAX:
                raise InvalidInput(reason=f"the description is longer than {DESCRIPTION_MAX} characters",
                                   nested=[("description", f"at most {DESCRIPTION_MAX} characters")])
            if len(build_plan) > PLAN_ID_MAX:
                raise InvalidInput(reason="choose a capture build plan from the list",
                                   nested=[("buildPlanUri", "no such build plan")])
            server = ServerHardwareRepository(v.db).get(server_id)
            if server is None:
                raise NotFound(kind="server hardware", ident=server_id)
            tasks = TaskService(v.db, v.ctx.clock, v.ctx.wakeup.notify)
            images = GoldenImageService(v.db, v.ctx.images, v.ctx.clock, tasks)
            start_server_capture(v.db, v.ctx.clock, tasks, images, name.strip(), description, server.id,
                                 build_plan_uri(build_plan) if build_plan else None, compress, v.principal.name)
            request.state.audit_message = f"capture of server {server.name} into golden image {name.strip()} (web UI)"
            page = f"/ui/servers/{server.id}#capture"
    except (CsrfRejected, Forbidden, NotFound):
        raise  # no form to show the error at: the error page
    except ApplianceError as exc:  # shown at the form, with what was typed
        with view(request, Role.OPERATOR) as v:
            return _server_view(v, server_id, status=exc.http_status, capture_form=form, capture_error=exc)
    return RedirectResponse(page, status_code=303)
