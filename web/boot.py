"""The plain-HTTP listener for boot traffic: iPXE scripts, boot loaders for UEFI HTTP boot, the
ramdisk's kernel and initrd, and per-node content reachable only with the node's token.

Plain HTTP because firmware and iPXE builds without TLS support must reach it; nothing here needs
a login, so nothing here may reveal more than the machine asking is entitled to: files are served
only from their directories (the TFTP root's traversal rules), and anything about a particular
node needs that node's one-time token. Every request is a boot event.

Files are served with Range support (``FileResponse``), so iPXE and the deploy agent can resume.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, PlainTextResponse

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.errors import InvalidInput, NotFound
from appliance.netboot.runtime import BOOTLOADERS, tftp_root
from appliance.netboot.scripts import RAMDISK_FILES, boot_script, ramdisk_dir
from appliance.services.installer import installers_dir
from appliance.services.netboot import NetbootService, parse_mac
from plans.installer import INSTALLER_FILES, MEDIA_NAME
from pxe.tftp.files import FileError, resolve
from web import errors
from web.agent_api import agent_router
from web.installer_api import installer_router

IPXE_MEDIA_TYPE = "text/plain; charset=utf-8"


def create_boot_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(title="Ingot boot", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    errors.install(app)
    app.include_router(agent_router(ctx))
    app.include_router(installer_router(ctx))
    settings = ctx.settings

    def event(request: Request, action: str, detail: str, *, mac: str | None = None, ok: bool = True) -> None:
        client = request.client.host if request.client else None
        ctx.boot_events.add(service="http", action=action, mac=mac, client_ip=client, detail=detail, ok=ok)

    def serve_file(request: Request, root: Path, name: str, allowed: tuple[str, ...] | None = None) -> FileResponse:
        """``name`` under ``root``, never outside it; ``allowed`` limits it to a fixed set of names."""
        try:
            if (allowed is not None and name not in allowed) or not root.is_dir():
                raise NotFound(kind="boot file", ident=name)
            path = resolve(root, name)
            if not path.is_file():
                raise NotFound(kind="boot file", ident=name)
        except (FileError, NotFound, OSError):
            event(request, "GET", f"{request.url.path} refused", ok=False)
            raise NotFound(kind="boot file", ident=name) from None
        event(request, "GET", request.url.path)
        return FileResponse(path, media_type="application/octet-stream")

    @app.get("/boot/ping")
    def ping() -> dict[str, str]:
        return {"status": "OK"}

    @app.get("/ipxe/{mac}/boot.ipxe")
    def ipxe_script(mac: str, request: Request) -> PlainTextResponse:
        """The script iPXE gets from DHCP option 67 (``ipxe/<mac>/boot.ipxe`` in the boot-method table)."""
        try:
            key = parse_mac(mac)
        except InvalidInput:
            event(request, "GET", f"{request.url.path} bad MAC", ok=False)
            raise
        base = str(request.base_url)
        with unit_of_work(ctx.session_factory) as db:
            service = NetbootService(db, ctx.clock)
            policy = _unknown_policy(service, request, settings.dhcp.unknown_mac)
            script = boot_script(service, settings, key, base, policy)
        event(request, "GET", f"boot.ipxe -> {script.detail}", mac=key, ok=script.outcome != "refused")
        return PlainTextResponse(script.text, media_type=IPXE_MEDIA_TYPE)

    @app.get("/boot/ramdisk/{name}")
    def ramdisk(name: str, request: Request) -> FileResponse:
        return serve_file(request, ramdisk_dir(settings), name, RAMDISK_FILES)

    @app.get("/boot/installers/{media}/{name}")
    def installer_media(media: str, name: str, request: Request) -> FileResponse:
        """An installer's kernel and initrd (installer deploys); only those two names, only in their directory."""
        return serve_file(request, installers_dir(settings), f"{media}/{name}", tuple(
            f"{media}/{file}" for file in INSTALLER_FILES) if MEDIA_NAME.fullmatch(media) else ())

    @app.get("/boot/nodes/{token}/identity")
    def identity(token: str, request: Request) -> dict[str, Any]:
        """Who the machine holding ``token`` is: the deploy agent's first call after booting."""
        with unit_of_work(ctx.session_factory) as db:
            try:
                row = NetbootService(db, ctx.clock).redeem_token(token)
            except NotFound:
                event(request, "GET", "identity: invalid token", ok=False)
                raise
            body = {"mac": row.mac, "expires": row.expires.isoformat(),
                    "serverHardwareUri": f"/rest/server-hardware/{row.server_hardware_id}"
                    if row.server_hardware_id else None}
        event(request, "GET", "identity", mac=row.mac)
        return body

    @app.get("/boot/{name}")
    def bootloader(name: str, request: Request) -> FileResponse:
        """Boot loaders for UEFI HTTP boot (the same files TFTP serves)."""
        return serve_file(request, tftp_root(settings), name, BOOTLOADERS)

    return app


def _unknown_policy(service: NetbootService, request: Request, default: str) -> str:
    """The unknown-MAC policy of the subnet the request comes from (iPXE asks from its lease)."""
    try:
        subnet = service.subnet_for(IPv4Address(request.client.host)) if request.client else None
    except ValueError:
        subnet = None
    return subnet.unknown_mac if subnet is not None else default
