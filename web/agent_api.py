"""``/agent/v1``: the deploy agent's API (docs/agent-api.md), on the plain-HTTP boot listener.

Thin: each route reads a bounded JSON body, calls :class:`~appliance.services.agents.AgentService`
in one transaction and answers. The agent token travels in ``X-Ingot-Agent-Token``; errors have the
OneView shape like the rest of the appliance. A successful lookup, inventory or command end is a
boot event, so the boot log shows an agent's life next to the DHCP, TFTP and HTTP of its boot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Header, Request
from fastapi.responses import FileResponse

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.errors import InvalidInput, NotFound, PayloadTooLarge
from appliance.services.agents import AgentService, Lookup
from appliance.services.disk_uploads import MAX_RANGE_BYTES, ContentRange, DiskUpload
from appliance.services.server_profiles import ServerProfileService

T = TypeVar("T")
TOKEN_HEADER = "X-Ingot-Agent-Token"  # noqa: S105 - a header name
MAX_BODY = 1 << 20  # an inventory of a large server is a few tens of KiB


async def read_json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, refused past :data:`MAX_BODY` without reading further."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise InvalidInput(f"The body must be a JSON object of at most {MAX_BODY} bytes.")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise InvalidInput(f"The body must be a JSON object of at most {MAX_BODY} bytes.")
    try:
        body = json.loads(bytes(data) or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("The body is not JSON.") from None
    if not isinstance(body, dict):
        raise InvalidInput("The body must be a JSON object.")
    return body


def _optional_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string.")
    return value


def agent_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/agent/v1")
    interval = ctx.settings.boot.agent_heartbeat_s

    def event(request: Request, action: str, detail: str, mac: str | None = None) -> None:
        client = request.client.host if request.client else None
        ctx.boot_events.add(service="http", action=action, mac=mac, client_ip=client, detail=detail, ok=True)

    async def transaction(work: Callable[[AgentService], T]) -> T:
        """``work`` in one transaction in a worker thread: never block the event loop on the database."""

        def run() -> T:
            with unit_of_work(ctx.session_factory) as db:
                return work(AgentService(db, ctx.clock))

        return await asyncio.to_thread(run)

    @router.post("/lookup")
    async def lookup(request: Request) -> dict[str, Any]:
        body = await read_json_body(request)
        macs = body.get("macs")
        token = body.get("token")
        if not isinstance(macs, list) or not all(isinstance(m, str) for m in macs) or not isinstance(token, str):
            raise InvalidInput("lookup needs token (a string) and macs (a list of MAC addresses).")
        client = request.client.host if request.client else None

        def work(agents: AgentService) -> tuple[Lookup, str]:
            found = agents.lookup(token, macs, _optional_text(body, "agentVersion"), client)
            return found, agents.authenticate(found.node, found.agent_token).mac

        found, mac = await transaction(work)
        event(request, "AGENT", "lookup", mac)
        return {"node": found.node, "agentToken": found.agent_token, "heartbeatIntervalS": interval}

    @router.post("/nodes/{node}/inventory")
    async def inventory(node: str, request: Request,
                        token: str | None = Header(None, alias=TOKEN_HEADER)) -> dict[str, str]:
        body = await read_json_body(request)

        def work(agents: AgentService) -> str:
            session = agents.authenticate(node, token)
            agents.record_inventory(session, body)
            return session.mac

        event(request, "AGENT", "inventory", await transaction(work))
        return {"status": "OK"}

    @router.post("/nodes/{node}/heartbeat")
    async def heartbeat(node: str, request: Request,
                        token: str | None = Header(None, alias=TOKEN_HEADER)) -> dict[str, Any]:
        body = await read_json_body(request)
        uptime = body.get("uptimeS")
        if uptime is not None and (not isinstance(uptime, int | float) or isinstance(uptime, bool)):
            raise InvalidInput("uptimeS must be a number.")

        def work(agents: AgentService) -> list[dict[str, Any]]:
            session = agents.authenticate(node, token)
            commands = agents.heartbeat(session, float(uptime) if uptime is not None else None,
                                        _optional_text(body, "address"))
            return [{"id": c.id, "name": c.name, "params": c.params} for c in commands]

        return {"heartbeatIntervalS": interval, "commands": await transaction(work)}

    @router.get("/nodes/{node}/image")
    def image(node: str, request: Request, token: str | None = Header(None, alias=TOKEN_HEADER)) -> FileResponse:
        """The raw export of the OS volume this node's server profile deploys (Range: resumable)."""
        with unit_of_work(ctx.session_factory) as db:
            mac = AgentService(db, ctx.clock).authenticate(node, token).mac
            profile = ServerProfileService(db, ctx.secrets, ctx.clock).of_server(node)
            if profile is None or profile.os_volume_id is None:
                raise NotFound(kind="OS volume export for node", ident=node)
            exported = ctx.images.exported(profile.os_volume_id, "raw")
        if exported is None:
            raise NotFound(kind="OS volume export for node", ident=node)
        if "range" not in request.headers:  # resumed reads would flood the boot log
            event(request, "AGENT", f"image {exported.size} bytes", mac)
        return FileResponse(exported.path, media_type="application/octet-stream")

    @router.get("/nodes/{node}/disk/{command_id}")
    async def disk_status(node: str, command_id: str,
                          token: str | None = Header(None, alias=TOKEN_HEADER)) -> dict[str, Any]:
        """How much of a ``read_disk`` upload has arrived: the agent resumes from ``committed``."""

        def work(agents: AgentService) -> dict[str, Any]:
            agents.uploading(agents.authenticate(node, token), command_id)
            return DiskUpload(ctx.images.incoming_dir, command_id).status().public()

        return await transaction(work)

    @router.put("/nodes/{node}/disk/{command_id}")
    async def disk_range(node: str, command_id: str, request: Request,
                         token: str | None = Header(None, alias=TOKEN_HEADER)) -> dict[str, Any]:
        """One range of the disk a ``read_disk`` command streams back (Content-Range), or its end."""
        where = ContentRange.parse(request.headers.get("content-range"), ctx.settings.images.max_virtual_size)
        await transaction(lambda agents: agents.uploading(agents.authenticate(node, token), command_id))
        body = bytearray()
        async for chunk in request.stream():  # a cut connection raises here: nothing is written
            body += chunk
            if len(body) > MAX_RANGE_BYTES:
                raise PayloadTooLarge(limit=MAX_RANGE_BYTES)
        upload = DiskUpload(ctx.images.incoming_dir, command_id)
        status = await asyncio.to_thread(upload.receive, where, body)  # no copy of up to 16 MiB
        return status.public()

    @router.post("/nodes/{node}/commands/{command_id}")
    async def report(node: str, command_id: str, request: Request,
                     token: str | None = Header(None, alias=TOKEN_HEADER)) -> dict[str, str]:
        body = await read_json_body(request)
        percent = body.get("percent")
        result = body.get("result")
        if percent is not None and (not isinstance(percent, int) or isinstance(percent, bool)):
            raise InvalidInput("percent must be an integer.")
        if result is not None and not isinstance(result, dict):
            raise InvalidInput("result must be an object.")
        state = _optional_text(body, "state") or ""

        def work(agents: AgentService) -> tuple[str, str, str]:
            session = agents.authenticate(node, token)
            command = agents.report(session, command_id, state, percent, _optional_text(body, "message"), result,
                                    _optional_text(body, "error"))
            return command.state, command.name, session.mac

        ended, name, mac = await transaction(work)
        if ended in ("succeeded", "failed"):
            event(request, "AGENT", f"{name} {ended}", mac)
        return {"status": "OK"}

    return router
