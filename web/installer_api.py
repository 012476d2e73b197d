"""``/installer``: what an installer booted by an installer deploy asks of the appliance, on the
plain-HTTP boot listener (docs/profiles.md, "Installer deploys").

- ``GET /installer/{token}/{file}``: its answer file (``ks.cfg``, ``preseed.cfg``, or autoinstall's
  ``user-data``, ``meta-data`` and ``network-config``), rendered for this server now;
- ``POST /installer/events`` with ``Authorization: Bearer <token>`` and ``{"event": "start" |
  "success" | "failure", "detail"?}``: the callbacks the answer files make;
- ``GET /installer/events/{token}/{event}``: the same callback for installers whose only HTTP client
  cannot send a header or a body (Debian 12's debian-installer has a busybox ``wget`` without
  ``--header`` and ``--post-data``): a GET that changes state, for want of anything else there.

The token is the one in the installer's boot script; it dies with the deploy. Each request is a
boot event, so the boot log shows the installer's life beside its DHCP and HTTP.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy.orm import Session

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.errors import ApplianceError
from appliance.models import ServerHardware
from appliance.services.installer import InstallerService, InstallerTokenInvalid
from web.agent_api import read_json_body

ANSWER_MEDIA_TYPE = "text/plain; charset=utf-8"


def installer_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/installer")

    def event(request: Request, detail: str, *, ok: bool = True) -> None:
        client = request.client.host if request.client else None
        ctx.boot_events.add(service="http", action="INSTALLER", mac=None, client_ip=client, detail=detail, ok=ok)

    def service(db: Session) -> InstallerService:
        return InstallerService(db, ctx.secrets, ctx.settings, ctx.clock)

    def server_name(db: Session, server_id: str) -> str:
        row = db.get(ServerHardware, server_id)
        return row.name if row is not None else server_id

    @router.get("/{token}/{name}")
    def answer_file(token: str, name: str, request: Request) -> PlainTextResponse:
        try:
            with unit_of_work(ctx.session_factory) as db:
                row, text = service(db).answer_file(token, name, str(request.base_url))
                who = server_name(db, row.server_hardware_id)
        except ApplianceError as exc:
            event(request, f"answer file {name} refused: {exc.message}", ok=False)
            raise
        event(request, f"answer file {name} for {who}")
        return PlainTextResponse(text, media_type=ANSWER_MEDIA_TYPE)

    async def record(request: Request, token: str, body: dict[str, Any]) -> dict[str, str]:
        def work() -> tuple[str, str]:
            with unit_of_work(ctx.session_factory) as db:
                row = service(db).report(token, body)
                return server_name(db, row.server_hardware_id), str(body["event"])

        try:
            who, reported = await asyncio.to_thread(work)
        except ApplianceError as exc:
            event(request, f"callback refused: {exc.message}", ok=False)
            raise
        event(request, f"installer {reported} on {who}")
        return {"status": "recorded", "event": reported}

    @router.post("/events")
    async def callback(request: Request, authorization: str | None = Header(None)) -> dict[str, str]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            event(request, "callback without a bearer token", ok=False)
            raise InstallerTokenInvalid()
        return await record(request, token.strip(), await read_json_body(request))

    @router.get("/events/{token}/{name}")
    async def callback_by_get(token: str, name: str, request: Request) -> dict[str, str]:
        return await record(request, token, {"event": name})

    return router
