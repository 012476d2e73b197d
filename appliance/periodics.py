"""Housekeeping that runs while the appliance is up. Each job is short, idempotent and safe to run
on every node of a pair at once."""

from __future__ import annotations

import asyncio
import logging

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.services.auth import AuthService

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
        except Exception:
            log.exception("housekeeping round failed")
        await asyncio.sleep(interval_s)
