"""Per-server retries of idempotent deploy steps: a step whose failure is transient (the BMC did not
answer, a tool crashed, the guestfish appliance did not launch) is tried again after a pause, within
its phase, a bounded number of times (``provisioning.phase_retries``); anything else fails at once.

Only steps that are safe to repeat are wrapped: setting the boot device and the power (the BMC ends
in the state asked for however often it is asked), exporting an image (written anew), and running a
build plan whose appliance never launched (no script ran). The BMC driver pool retries each single
call already (``bmc.retries``); this covers an outage longer than that, such as a BMC rebooting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from appliance.config import ProvisioningSettings
from appliance.errors import ApplianceError, BmcError, ImageToolFailed, PlanScriptFailed
from appliance.tasks.handlers import PhaseReporter

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same step again may succeed: a BMC failure its driver calls retryable (not a
    rejected password), an image tool that failed, a build plan whose appliance did not launch."""
    if isinstance(exc, BmcError):
        return exc.retryable
    if isinstance(exc, PlanScriptFailed):
        return exc.transient
    return isinstance(exc, ImageToolFailed)


async def with_retries(phase: PhaseReporter, what: str, step: Callable[[], Awaitable[T]],
                       settings: ProvisioningSettings) -> T:
    """``step()``, tried again after a transient failure up to ``settings.phase_retries`` times, the pause
    doubling from ``settings.phase_retry_backoff_s``; each retry is said in the phase's status.

    :raises ApplianceError: the last failure, or the first one that is not transient.
    """
    attempt = 0
    while True:
        try:
            return await step()
        except ApplianceError as exc:
            if attempt >= settings.phase_retries or not is_transient(exc):
                raise
            attempt += 1
            delay = settings.phase_retry_backoff_s * 2 ** (attempt - 1)
            await phase.progress(0, f"{what} failed: {exc.message} Trying again in {delay:g} s "
                                    f"({attempt} of {settings.phase_retries}).")
            await asyncio.sleep(delay)
