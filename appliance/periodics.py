"""Housekeeping that runs while the appliance is up. Each job is short, idempotent and safe to run
on every node of a pair at once."""

from __future__ import annotations

import asyncio
import logging

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.services.auth import AuthService
from appliance.services.golden_images import check_store_space
from appliance.services.provisioning import expire_waits, wait_ttls
from appliance.services.server_hardware import ServerHardwareService

log = logging.getLogger(__name__)


def purge_expired_sessions(ctx: AppContext) -> int:
    with unit_of_work(ctx.session_factory) as db:
        return AuthService(db, ctx.settings.sessions, ctx.clock).purge_expired()


async def housekeeping(ctx: AppContext, interval_s: float = 300.0) -> None:
    """Run until cancelled; a failing round is logged and retried at the next interval."""
    while True:
        try:
            purged = await asyncio.to_thread(purge_expired_sessions, ctx)
            if purged:
                log.info("purged %d expired login sessions", purged)
            await asyncio.to_thread(_check_store_space, ctx)
            await asyncio.to_thread(_expire_waits, ctx)
        except Exception:
            log.exception("housekeeping round failed")
        await asyncio.sleep(interval_s)


def _check_store_space(ctx: AppContext) -> None:
    with unit_of_work(ctx.session_factory) as db:
        check_store_space(ctx.images, ctx.settings.images.low_space_percent, db, ctx.clock)


def _expire_waits(ctx: AppContext) -> None:
    """Servers whose wait state outlived its TTL fail (the work waiting on them may be gone)."""
    with unit_of_work(ctx.session_factory) as db:
        for transition in expire_waits(db, ctx.clock, wait_ttls(ctx.settings.provisioning)):
            log.warning("%s timed out in %s", transition.name, transition.before)


def queue_power_sync(ctx: AppContext) -> str:
    """Queue a fleet power sweep as an appliance task, unless one is already queued or running."""
    with unit_of_work(ctx.session_factory) as db:
        task = ServerHardwareService(db, ctx.secrets, ctx.clock).start_power_sync("appliance", task_type="Appliance")
        task_id = task.id
    ctx.wakeup.notify()
    return task_id


async def power_sync(ctx: AppContext) -> None:
    """Sweep the fleet's power state every ``bmc.sync_interval_s``. The sweep itself is a task, so
    it shows with progress in the UI, runs on whichever appliance claims it, and one at a time."""
    interval = ctx.settings.bmc.sync_interval_s
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(queue_power_sync, ctx)
        except Exception:
            log.exception("could not queue the power sync")
