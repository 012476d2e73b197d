"""Per-server retries of idempotent deploy steps (appliance/services/phase_retry.py): which failures are
worth another try, how often, with what pause, and what the phase says meanwhile."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appliance.config import ProvisioningSettings
from appliance.errors import BmcAuthError, BmcConnectionError, ImageToolFailed, InvalidInput, PlanScriptFailed
from appliance.services import phase_retry
from appliance.services.phase_retry import is_transient, with_retries


class Phase:
    def __init__(self) -> None:
        self.said: list[tuple[int, str | None]] = []

    async def progress(self, percent: int, message: str | None = None) -> None:
        self.said.append((percent, message))


def launch_failed(transient: bool) -> PlanScriptFailed:
    error = PlanScriptFailed(plan="p", where="", reason="appliance launch failed: qemu timed out")
    error.transient = transient
    return error


def test_which_failures_are_transient() -> None:
    assert is_transient(BmcConnectionError(bmc="10.0.0.9", reason="no answer"))
    assert not is_transient(BmcAuthError(bmc="10.0.0.9", reason="wrong password"))  # asking again will not help
    assert is_transient(ImageToolFailed(reason="qemu-img crashed"))
    assert is_transient(launch_failed(True)) and not is_transient(launch_failed(False))
    assert not is_transient(InvalidInput("bad")) and not is_transient(ValueError("x"))


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    taken: list[float] = []

    async def sleep(seconds: float) -> None:
        taken.append(seconds)

    monkeypatch.setattr(phase_retry.asyncio, "sleep", sleep)
    return taken


def run(failures: list[Exception], retries: int = 2) -> tuple[Any, Phase, list[int]]:
    phase, calls = Phase(), [0]

    async def step() -> str:
        calls[0] += 1
        if failures:
            raise failures.pop(0)
        return "done"

    settings = ProvisioningSettings(phase_retries=retries, phase_retry_backoff_s=5)
    return asyncio.run(with_retries(phase, "Booting", step, settings)), phase, calls  # type: ignore[arg-type]


def test_a_transient_failure_is_tried_again_with_a_doubling_pause(sleeps: list[float]) -> None:
    down = BmcConnectionError(bmc="10.0.0.9", reason="no answer")
    result, phase, calls = run([down, down])
    assert result == "done" and calls == [3] and sleeps == [5, 10]
    assert [message for _, message in phase.said] == [
        "Booting failed: The BMC at 10.0.0.9 did not answer: no answer Trying again in 5 s (1 of 2).",
        "Booting failed: The BMC at 10.0.0.9 did not answer: no answer Trying again in 10 s (2 of 2)."]


def test_the_last_failure_is_raised_when_the_retries_are_spent(sleeps: list[float]) -> None:
    failures: list[Exception] = [ImageToolFailed(reason=f"crash {n}") for n in range(3)]
    with pytest.raises(ImageToolFailed, match="crash 2"):
        run(failures)
    assert sleeps == [5, 10]


def test_a_lasting_failure_is_not_retried(sleeps: list[float]) -> None:
    with pytest.raises(BmcAuthError):
        run([BmcAuthError(bmc="10.0.0.9", reason="wrong password")])
    with pytest.raises(ImageToolFailed):
        run([ImageToolFailed(reason="x")], retries=0)
    assert sleeps == []
