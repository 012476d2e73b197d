"""The policy BmcDriver enforces: retries, fatal errors, verification, breaker, pacing, limits."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

import pytest

from appliance.config import BmcSettings
from appliance.drivers.base import BmcDriver, DriverPolicy, ErrorRule
from appliance.drivers.types import BmcTarget, BootDevice, BootSetting, Inventory, PowerAction, PowerState
from appliance.errors import (
    BmcAuthError,
    BmcCircuitOpen,
    BmcConnectionError,
    BmcError,
    BmcUnsupported,
    BmcVerifyFailed,
)
from tests.unit.drivers.conftest import ManualClock

T = TypeVar("T")
SECRET = "hunter2-Zq9"
TARGET = BmcTarget("scripted", "10.0.0.9", None, "admin", SECRET)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class LibraryDown(Exception):
    pass


class ScriptedDriver(BmcDriver):
    """Each ``_get_power`` takes the next step of ``script``: an exception to raise, or a state."""

    name = "scripted"
    default_port = 623
    error_rules: ClassVar[tuple[ErrorRule, ...]] = (
        (re.compile(r"bad password", re.I), BmcAuthError),
        (LibraryDown, BmcConnectionError),
    )

    def __init__(self, *args: Any, script: list[object] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.script = list(script or [])
        self.calls = 0
        self.threads: list[str] = []
        self.forgotten = 0

    def _get_power(self) -> PowerState:
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        step = self.script.pop(0) if self.script else PowerState.ON
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            return step()  # type: ignore[no-any-return]
        assert isinstance(step, PowerState)
        return step

    def _set_power(self, action: PowerAction) -> None:
        pass

    def _get_boot(self) -> BootSetting:
        return BootSetting(BootDevice.NONE)

    def _set_boot(self, setting: BootSetting) -> None:
        pass

    def _inventory(self) -> Inventory:
        return Inventory()

    def _close(self) -> None:
        pass

    def _forget_session(self) -> None:
        self.forgotten += 1


def make(executor: ThreadPoolExecutor, clock: ManualClock, script: list[object] | None = None,
         **policy: Any) -> ScriptedDriver:
    base = {"timeout_s": 5.0, "retries": 2, "backoff_s": 1.0, "circuit_failures": 3, "circuit_reset_s": 60.0,
            "verify_timeout_s": 10.0, "verify_poll_s": 1.0}
    return ScriptedDriver(TARGET, DriverPolicy(**{**base, **policy}), executor, clock, sleep=clock.sleep,
                          script=script)


def test_policy_from_settings() -> None:
    settings = BmcSettings(timeout_s=3, retries=5, circuit_failures=7)
    policy = DriverPolicy.from_settings(settings)
    assert (policy.timeout_s, policy.retries, policy.circuit_failures) == (3, 5, 7)
    assert policy.verify_poll_s == settings.verify_poll_s


def test_hooks_run_on_named_executor_threads(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock)
    assert run(driver.power_state()) is PowerState.ON
    assert driver.threads[0].startswith("bmc-")
    assert driver.threads[0] != threading.current_thread().name


def test_retryable_errors_are_retried_with_exponential_backoff(executor: ThreadPoolExecutor,
                                                               manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock, [LibraryDown("gone"), LibraryDown("gone"), PowerState.OFF])
    assert run(driver.power_state()) is PowerState.OFF
    assert driver.calls == 3
    first, second = manual_clock.sleeps
    assert 1.0 <= first <= 1.5 and 2.0 <= second <= 3.0  # backoff_s * 2**n plus up to 50 % jitter
    assert driver.forgotten == 2  # a connection failure drops the cached session
    assert driver.circuit.state == "closed" and driver.circuit.failures == 0


def test_retries_are_bounded(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock, [LibraryDown("gone")] * 10, circuit_failures=10)
    with pytest.raises(BmcConnectionError, match="gone"):
        run(driver.power_state())
    assert driver.calls == 3


def test_unknown_exceptions_become_retryable_bmc_errors(executor: ThreadPoolExecutor,
                                                         manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock, [ValueError("odd reply")] * 3)
    with pytest.raises(BmcError, match="ValueError: odd reply") as info:
        run(driver.power_state())
    assert type(info.value) is BmcError
    assert driver.calls == 3


@pytest.mark.parametrize("error", [RuntimeError("Bad password for admin"),
                                   BmcUnsupported(driver="scripted", action="x", bmc="b")])
def test_fatal_errors_are_not_retried(executor: ThreadPoolExecutor, manual_clock: ManualClock,
                                      error: Exception) -> None:
    driver = make(executor, manual_clock, [error, PowerState.ON])
    with pytest.raises((BmcAuthError, BmcUnsupported)):
        run(driver.power_state())
    assert driver.calls == 1 and manual_clock.sleeps == []


def test_console_is_unsupported_by_default(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> None:
    with pytest.raises(BmcUnsupported, match="cannot open a serial console"):
        run(make(executor, manual_clock).open_console())


def test_power_verification_polls_until_the_state_shows(executor: ThreadPoolExecutor,
                                                         manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock, [PowerState.ON, PowerState.POWERING_OFF, PowerState.OFF])
    assert run(driver.set_power(PowerAction.OFF)) is PowerState.OFF
    assert driver.calls == 3 and manual_clock.sleeps == [1.0, 1.0]


def test_power_verification_gives_up_after_the_verify_timeout(executor: ThreadPoolExecutor,
                                                               manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock, [PowerState.OFF] * 100)
    with pytest.raises(BmcVerifyFailed, match=r"did not reach On \(it reports Off\)"):
        run(driver.set_power(PowerAction.ON))
    assert driver.calls == 11  # verify_timeout_s / verify_poll_s + the first read
    assert driver.circuit.failures == 0  # the BMC answered: not a reachability problem


@pytest.mark.parametrize("action", [PowerAction.CYCLE, PowerAction.RESET])
def test_cycle_and_reset_are_done_when_the_server_is_on(executor: ThreadPoolExecutor, manual_clock: ManualClock,
                                                        action: PowerAction) -> None:
    driver = make(executor, manual_clock, [PowerState.ON])
    assert run(driver.set_power(action)) is PowerState.ON


def test_no_verification_when_not_asked(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock)
    assert run(driver.set_power(PowerAction.SOFT_OFF, verify=False)) is PowerState.OFF
    assert driver.calls == 0


def test_circuit_opens_fails_fast_then_half_opens(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock, [LibraryDown("gone")] * 3, retries=0)
    for _ in range(3):
        with pytest.raises(BmcConnectionError) as info:
            run(driver.power_state())
        assert not isinstance(info.value, BmcCircuitOpen)
    assert driver.circuit.state == "open" and driver.circuit.failures == 3
    with pytest.raises(BmcCircuitOpen, match="60 s after 3 failures"):
        run(driver.power_state())
    assert driver.calls == 3  # failed fast: the BMC was not contacted

    manual_clock.now += 61
    assert driver.circuit.state == "half-open"
    driver.script = [LibraryDown("still gone")]
    with pytest.raises(BmcConnectionError, match="still gone"):
        run(driver.power_state())  # the one trial call
    assert driver.circuit.state == "open" and driver.circuit.retry_in_s == pytest.approx(60)

    manual_clock.now += 61
    assert run(driver.power_state()) is PowerState.ON
    assert driver.circuit.state == "closed" and driver.circuit.failures == 0


def test_half_open_lets_exactly_one_trial_through(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock, [LibraryDown("gone")], retries=0, circuit_failures=1,
                  per_bmc_concurrency=4)
    with pytest.raises(BmcConnectionError):
        run(driver.power_state())
    manual_clock.now += 61
    release = threading.Event()
    driver.script = [lambda: (release.wait(5), PowerState.ON)[1]]

    async def two_calls() -> list[object]:
        trial = asyncio.ensure_future(driver.power_state())
        await asyncio.sleep(0.05)
        second: object
        try:
            second = await driver.power_state()
        except BmcCircuitOpen as exc:
            second = exc
        release.set()
        return [await trial, second]

    first, second = run(two_calls())
    assert first is PowerState.ON and isinstance(second, BmcCircuitOpen)


def test_auth_failure_reports_auth_even_when_it_trips_the_breaker(executor: ThreadPoolExecutor,
                                                                   manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock, [RuntimeError("bad password")], circuit_failures=1)
    with pytest.raises(BmcAuthError):
        run(driver.power_state())
    with pytest.raises(BmcCircuitOpen):
        run(driver.power_state())


def test_a_retry_stops_when_the_breaker_opens(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock, [LibraryDown("gone")] * 5, retries=4, circuit_failures=2)
    with pytest.raises(BmcConnectionError) as info:
        run(driver.power_state())
    assert not isinstance(info.value, BmcCircuitOpen)
    assert driver.calls == 2


def test_commands_to_one_bmc_are_paced(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock, min_interval_s=5.0)

    async def three() -> None:
        for _ in range(3):
            await driver.power_state()

    run(three())
    assert manual_clock.sleeps == [5.0, 5.0]


def test_concurrency_per_bmc_is_limited(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    def slow() -> PowerState:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return PowerState.ON

    driver = make(executor, manual_clock, [slow] * 6, per_bmc_concurrency=2)

    async def many() -> None:
        await asyncio.gather(*(driver.power_state() for _ in range(6)))

    run(many())
    assert peak == 2


def test_a_hung_hook_times_out(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> None:
    release = threading.Event()
    driver = make(executor, manual_clock, [lambda: (release.wait(10), PowerState.ON)[1]], timeout_s=0.1,
                  retries=0)
    try:
        with pytest.raises(BmcConnectionError, match=r"no answer within 0\.1 s"):
            run(driver.power_state())
    finally:
        release.set()


def test_password_never_appears(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock, [RuntimeError(f"bad password {SECRET}"), ValueError(f"echo {SECRET}")] * 2,
                  retries=0)
    texts = [repr(driver), repr(driver.target), str(driver.circuit)]
    for _ in range(2):
        with pytest.raises(BmcError) as info:
            run(driver.power_state())
        texts += [info.value.message, str(info.value), repr(info.value), repr(info.value.kwargs)]
    assert all(SECRET not in text for text in texts), texts
    assert "***" in texts[-1]


def test_close_is_best_effort(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> None:
    class Failing(ScriptedDriver):
        def _close(self) -> None:
            raise LibraryDown(f"cannot log out {SECRET}")

    driver = Failing(TARGET, DriverPolicy(), executor, manual_clock, sleep=manual_clock.sleep)
    run(driver.close())  # no exception


def test_a_cancelled_trial_does_not_wedge_the_breaker(executor: ThreadPoolExecutor,
                                                      manual_clock: ManualClock) -> None:
    driver = make(executor, manual_clock, [LibraryDown("gone")], retries=0, circuit_failures=1)
    with pytest.raises(BmcConnectionError):
        run(driver.power_state())
    manual_clock.now += 61
    started, release = threading.Event(), threading.Event()
    driver.script = [lambda: (started.set(), release.wait(5), PowerState.ON)[2], PowerState.OFF]

    async def cancel_then_call() -> PowerState:
        trial = asyncio.ensure_future(driver.power_state())
        assert await asyncio.to_thread(started.wait, 5)  # the trial is in the library call: cancel it there
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        release.set()
        return await driver.power_state()

    assert run(cancel_then_call()) is PowerState.OFF
    assert driver.circuit.state == "closed"
