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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from appliance.errors import NotFound
from appliance.models import ServerHardware, Task
from appliance.query import CollectionQuery, Condition, Op, SortKey
from appliance.repositories.server_hardware import ServerHardwareRepository
from appliance.roles import Role
from appliance.services.tasks import TaskService
from web.schemas.server_hardware import server_hardware_public
from web.ui.routes import PAGE_SIZE, UiRoute, View, _pager, view

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


@router.get("/ui/servers/{server_id}")
def server_page(request: Request, server_id: str) -> Response:
    with view(request, Role.READ_ONLY) as v:
        server = ServerHardwareRepository(v.db).get(server_id)
        if server is None:
            raise NotFound(kind="server hardware", ident=server_id)
        body = server_hardware_public(server)
        tasks = _server_tasks(v, Condition("associatedResource.resourceUri", Op.EQ, body["uri"]),
                              count=RECENT_TASKS)
        return v.render(
            "server.html", "servers", title=server.name, server=body, tasks=tasks,
            can_operate=v.may(Role.OPERATOR), can_admin=v.may(Role.INFRASTRUCTURE_ADMINISTRATOR),
            state_labels=STATE_LABELS, power_buttons=POWER_BUTTONS, boot_devices=BOOT_DEVICES,
            provision_buttons=PROVISION_BUTTONS,
        )
