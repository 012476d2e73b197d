"""``/rest/server-hardware``: enrol, list, read, remove; power, boot device and refresh as tasks;
the fleet power sync and BMC discovery; the Serial-over-LAN console as a websocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.drivers.base import Console
from appliance.drivers.types import BmcTarget, bmc_key
from appliance.errors import ApplianceError, AuthenticationFailed, BmcError, Forbidden, NotFound, SessionInvalid
from appliance.models import ServerHardware
from appliance.roles import Role
from appliance.services.audit import AuditRecord, AuditService
from appliance.services.auth import AuthService
from appliance.services.server_hardware import ServerHardwareService, server_uri
from appliance.services.tasks import TaskService
from web.collection import QueryDep, envelope
from web.deps import Admin, AppDep, DbDep, Operator, ReadOnly, credential_from
from web.etag import resource_response
from web.routers.common import accepted
from web.schemas.server_hardware import (
    BootDeviceChange,
    DiscoveryScan,
    PowerStateChange,
    ProvisionEvent,
    RefreshStateChange,
    ServerHardwareAdd,
    server_hardware_public,
)

router = APIRouter(tags=["server-hardware"])
log = logging.getLogger(__name__)

BASE = "/rest/server-hardware"
# Websocket close codes: 4000 + the HTTP status the same failure gets on a REST call.
CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_BMC_FAILED = 4401, 4403, 4404, 1011


def _service(db: DbDep, ctx: AppContext) -> ServerHardwareService:
    return ServerHardwareService(db, ctx.secrets, ctx.clock, TaskService(db, ctx.clock, ctx.wakeup.notify),
                                 ctx.settings.bmc.discovery_max_addresses)


def _public(ctx: AppContext, server: ServerHardware) -> dict[str, Any]:
    # The breaker lives in this process's driver pool; only a driver already built has one to show.
    return server_hardware_public(server, ctx.bmcs.peek(bmc_key(server.driver, server.address, server.port)))


@router.get(BASE)
def list_server_hardware(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    page = _service(db, ctx).list(params.query)
    return envelope(BASE, "server-hardware", "server-hardware-list-12", page, lambda s: _public(ctx, s), params)


@router.post(BASE, status_code=202)
def add_server_hardware(body: ServerHardwareAdd, db: DbDep, ctx: AppDep, principal: Admin) -> Response:
    _server, task = _service(db, ctx).start_add(body.enrollment(), principal.name)
    return accepted(task)


@router.post(f"{BASE}/power-sync", status_code=202)
def sync_power(db: DbDep, ctx: AppDep, principal: Operator) -> Response:
    return accepted(_service(db, ctx).start_power_sync(principal.name))


@router.post(f"{BASE}/discover", status_code=202)
def discover(body: DiscoveryScan, db: DbDep, ctx: AppDep, principal: Admin) -> Response:
    return accepted(_service(db, ctx).start_discover(body.request(), principal.name))


@router.get(BASE + "/{server_id}")
def get_server_hardware(server_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    return resource_response(request, _public(ctx, _service(db, ctx).get(server_id)))


@router.delete(BASE + "/{server_id}", status_code=202)
def remove_server_hardware(server_id: str, db: DbDep, ctx: AppDep, principal: Admin) -> Response:
    return accepted(_service(db, ctx).start_remove(server_id, principal.name))


@router.put(BASE + "/{server_id}/powerState", status_code=202)
def set_power_state(server_id: str, body: PowerStateChange, db: DbDep, ctx: AppDep, principal: Operator) -> Response:
    return accepted(_service(db, ctx).start_power(server_id, body.power_state, body.power_control, principal.name))


@router.put(BASE + "/{server_id}/refreshState", status_code=202)
def refresh(server_id: str, body: RefreshStateChange, db: DbDep, ctx: AppDep, principal: Operator) -> Response:
    return accepted(_service(db, ctx).start_refresh(server_id, principal.name))


@router.put(BASE + "/{server_id}/bootDevice", status_code=202)
def set_boot_device(server_id: str, body: BootDeviceChange, db: DbDep, ctx: AppDep, principal: Operator) -> Response:
    return accepted(_service(db, ctx).start_boot_device(server_id, body.device, body.persistent, body.mode,
                                                        principal.name))


@router.put(BASE + "/{server_id}/provisionState")
def provision(server_id: str, body: ProvisionEvent, request: Request, db: DbDep, ctx: AppDep,
              principal: Operator) -> Response:
    """Ingot's provision events (appliance/states.py): ``inspect`` answers 202 with its task, the
    others change the state at once and answer 200 with the server hardware."""
    service = _service(db, ctx)
    task = service.provision(server_id, body.event, principal.name)
    if task is not None:
        return accepted(task)
    db.flush()
    return resource_response(request, _public(ctx, service.get(server_id)))


# --- Serial-over-LAN console -------------------------------------------------------------------
def _authorize_console(ctx: AppContext, websocket: WebSocket, server_id: str) -> tuple[str, str, BmcTarget]:
    """Who is asking, and for which BMC. Browsers cannot set headers on a websocket, so a cookie
    session must prove it comes from our page with its CSRF token as a query parameter."""
    credential, from_cookie = credential_from(websocket)
    with unit_of_work(ctx.session_factory) as db:
        principal = AuthService(db, ctx.settings.sessions, ctx.clock).resolve(credential)
        if from_cookie and (not principal.csrf_token or websocket.query_params.get("csrf") != principal.csrf_token):
            raise SessionInvalid("The console request did not carry this session's CSRF token.")
        principal.require(Role.OPERATOR)
        service = ServerHardwareService(db, ctx.secrets, ctx.clock)
        server = service.get(server_id)
        AuditService(db, ctx.clock).record(AuditRecord(
            user_name=principal.name, source_ip=websocket.client.host if websocket.client else "",
            method="WS", path=websocket.url.path, status_code=101, resource_uri=server_uri(server.id),
            request_id=str(uuid.uuid4()), message=f"Opened the serial console of {server.name}.",
        ))
        return principal.name, server.name, service.target(server)


def _close_code(error: ApplianceError) -> int:
    if isinstance(error, SessionInvalid | AuthenticationFailed):
        return CLOSE_UNAUTHENTICATED
    if isinstance(error, Forbidden):
        return CLOSE_FORBIDDEN
    if isinstance(error, NotFound):
        return CLOSE_NOT_FOUND
    return CLOSE_BMC_FAILED


@router.websocket(BASE + "/{server_id}/console")
async def console(websocket: WebSocket, server_id: str) -> None:
    ctx: AppContext = websocket.app.state.ctx
    # Accept first: a close before accept is an HTTP 403 without a reason the client can show.
    await websocket.accept()
    try:
        user, name, target = await asyncio.to_thread(_authorize_console, ctx, websocket, server_id)
        session = await ctx.bmcs.driver(target).open_console()
    except (ApplianceError, BmcError) as exc:
        await websocket.close(_close_code(exc), reason=exc.message[:120])
        return
    log.info("console of %s opened by %s", name, user)
    # Like ipmitool's "SOL Session operational": tells people (and scripts) that from now on what
    # the server prints will arrive; anything printed before this moment is gone.
    await websocket.send_bytes(f"[Ingot: serial console of {name} connected]\r\n".encode())
    try:
        await _pump(websocket, session)
    finally:
        await session.close()
        log.info("console of %s closed by %s", name, user)


async def _pump(websocket: WebSocket, session: Console) -> None:
    """Copy BMC output to the websocket and keystrokes back until either side ends."""

    async def to_browser() -> None:
        while data := await session.read():
            await websocket.send_bytes(data)
        with contextlib.suppress(RuntimeError):  # already closed by the other side
            await websocket.close(1000, reason="The BMC ended the console session.")

    async def to_bmc() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes") or (message.get("text") or "").encode()
                if data:
                    await session.write(data)

    tasks = [asyncio.create_task(to_browser()), asyncio.create_task(to_bmc())]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        exc = task.exception()
        if isinstance(exc, BmcError):
            with contextlib.suppress(RuntimeError):
                await websocket.close(CLOSE_BMC_FAILED, reason=exc.message[:120])
