"""The composition root of ``ingot serve``: settings → database → services → one asyncio loop
running the HTTPS API/UI, the plain-HTTP boot listener and the task runner, until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import uvicorn
from sqlalchemy import select

from appliance import logs
from appliance.config import Settings
from appliance.context import AppContext
from appliance.db import migrate
from appliance.db.session import make_engine, make_session_factory, unit_of_work
from appliance.models import Task
from appliance.netboot.runtime import NetbootRuntime
from appliance.periodics import housekeeping, power_sync
from appliance.services.alerts import AlertService
from appliance.services.backups import sweep_temp_files
from appliance.services.golden_images import reconcile_store
from appliance.services.users import UserService
from appliance.tasks.handlers import HandlerFactory, discover_handlers
from appliance.tasks.runner import TaskRunner
from appliance.tasks.states import ACTIVE_STATES
from appliance.tls import ensure_certificate, restrict_versions
from web.app import create_app
from web.boot import create_boot_app

log = logging.getLogger(__name__)
NODE_FILE = "node-name"


def node_name(settings: Settings) -> str:
    """A stable name for this appliance, kept in INGOT_HOME so a restart recognises its own leases."""
    if settings.node_name:
        return settings.node_name
    path = settings.home / NODE_FILE
    if path.is_file():
        return path.read_text().strip()
    name = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    path.write_text(name + "\n")
    return name


def prepare(settings: Settings) -> AppContext:
    """Everything that must be true before listeners open: home, schema, first user, clean temp."""
    settings.home.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.home, 0o700)
    engine = make_engine(settings.effective_database_url)
    migrate.upgrade(engine)
    ctx = AppContext(settings=settings, engine=engine, session_factory=make_session_factory(engine),
                     node_name=node_name(settings))
    with unit_of_work(ctx.session_factory) as db:
        password = settings.admin_password.get_secret_value() if settings.admin_password else None
        UserService(db, ctx.clock).ensure_administrator(password, settings.home)
        active = set(db.scalars(select(Task.id).where(Task.state.in_([s.value for s in ACTIVE_STATES]))))
        leftovers = reconcile_store(ctx.images, db)
    for path in sweep_temp_files(settings.home, active):
        log.info("removed leftover temp file %s", path)
    for name in leftovers:
        log.info("image store: removed leftover %s", name)
    return ctx


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` owns SIGTERM for all listeners."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:
        return None


class _TlsConfig(uvicorn.Config):
    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            restrict_versions(self.ssl)


def _alert_on_self_signed(ctx: AppContext, self_signed: bool) -> None:
    with unit_of_work(ctx.session_factory) as db:
        alerts = AlertService(db, ctx.clock)
        if self_signed:
            alerts.raise_alert(
                alert_type="Ingot.Security.SelfSignedCertificate",
                severity="Warning",
                description="The appliance is serving HTTPS with a self-signed certificate.",
                corrective_action="Configure a CA-signed certificate with INGOT_TLS_CERT and INGOT_TLS_KEY.",
            )
        else:
            alerts.clear_condition("Ingot.Security.SelfSignedCertificate", None)


async def serve(settings: Settings, extra_handlers: Iterable[HandlerFactory] = (),
                ready_file: Path | None = None) -> None:
    logs.configure(settings.logging.level, settings.logging.format)
    ctx = await asyncio.to_thread(prepare, settings)
    cert, key, self_signed = ensure_certificate(settings.home, settings.api.tls_cert, settings.api.tls_key)
    await asyncio.to_thread(_alert_on_self_signed, ctx, self_signed)

    api = settings.api
    https = _Server(_TlsConfig(create_app(ctx), host=api.bind_address, port=api.https_port,
                               ssl_certfile=str(cert), ssl_keyfile=str(key), log_config=None,
                               access_log=False, lifespan="off", timeout_graceful_shutdown=10))
    boot = _Server(uvicorn.Config(create_boot_app(ctx), host=api.bind_address, port=api.http_port,
                                  log_config=None, access_log=False, lifespan="off",
                                  timeout_graceful_shutdown=5))
    runner = TaskRunner(ctx, discover_handlers(extra_handlers))
    netboot = NetbootRuntime(ctx)
    await netboot.start()  # binds TFTP, DHCP and DNS first: a port in use stops the start here

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    jobs = [asyncio.create_task(https.serve(), name="https"), asyncio.create_task(boot.serve(), name="http-boot"),
            asyncio.create_task(runner.run(), name="task-runner")]
    chores = [asyncio.create_task(housekeeping(ctx), name="housekeeping"),
              asyncio.create_task(power_sync(ctx), name="power-sync")]
    try:
        while not (https.started and boot.started):
            if any(job.done() for job in jobs):
                break  # a listener failed to bind; its exception is raised below
            await asyncio.sleep(0.05)
        else:
            log.info("appliance %s listening: https://%s:%d (API and UI), http://%s:%d (boot)", ctx.node_name,
                     api.bind_address, _bound_port(https), api.bind_address, _bound_port(boot))
            if ready_file is not None:
                ready_file.write_text(f"{_bound_port(https)} {_bound_port(boot)}\n")
            _done, _ = await asyncio.wait([asyncio.create_task(stop.wait()), *jobs],
                                         return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down")
    finally:
        for chore in chores:
            chore.cancel()
        await runner.stop()
        await netboot.stop()
        if "bmcs" in ctx.__dict__:  # the driver pool was built: log out of BMC sessions
            await ctx.bmcs.close()
        if "nbd" in ctx.__dict__:  # volumes were exported over NBD: end them (qemu-nbd flushes)
            await asyncio.to_thread(ctx.nbd.close)
        https.should_exit = boot.should_exit = True
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        ctx.engine.dispose()
    failures = [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
    if failures:
        raise failures[0]
    for server in (https, boot):
        if not server.started:
            raise SystemExit(f"could not start the listener on port {server.config.port}")
    log.info("stopped")


def _bound_port(server: uvicorn.Server) -> int:
    for srv in server.servers:
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    return int(server.config.port)
