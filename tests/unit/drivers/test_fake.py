"""The in-memory driver: state, deterministic identity, injected faults and its console."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from appliance.drivers.base import DriverPolicy
from appliance.drivers.power import fake
from appliance.drivers.power.fake import FakePower
from appliance.drivers.types import BmcTarget, BootDevice, BootSetting, PowerAction, PowerState
from appliance.errors import BmcAuthError, BmcConnectionError, BmcVerifyFailed
from tests.unit.drivers.conftest import ManualClock

T = TypeVar("T")
TARGET = BmcTarget("fake", "10.1.2.3", None, "admin", "pw")
POLICY = DriverPolicy(timeout_s=5, retries=2, backoff_s=0.01, verify_timeout_s=5, verify_poll_s=1, circuit_failures=10)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def driver(executor: ThreadPoolExecutor, manual_clock: ManualClock) -> FakePower:
    return FakePower(TARGET, POLICY, executor, manual_clock, sleep=manual_clock.sleep)


def test_power_and_boot_round_trip(driver: FakePower) -> None:
    assert run(driver.power_state()) is PowerState.OFF
    assert run(driver.set_power(PowerAction.ON)) is PowerState.ON
    assert run(driver.set_boot_device(BootSetting(BootDevice.PXE, persistent=True))).device is BootDevice.PXE
    assert run(driver.boot_device()) == BootSetting(BootDevice.PXE, persistent=True)
    assert fake.get_machine(TARGET).commands == ["power on", "boot pxe"]


def test_identity_is_derived_from_the_address(driver: FakePower) -> None:
    first = run(driver.inventory())
    fake.reset_machines()
    again = run(driver.inventory())
    other = fake.get_machine(BmcTarget("fake", "10.1.2.4", None, "admin", "pw"))
    assert first == again
    assert first.serial_number != other.serial_number and first.uuid != other.uuid
    assert len(first.mac_addresses) == 2 and all(m.startswith("52:54:00:") for m in first.mac_addresses)


def test_settling_power_is_verified_by_polling(driver: FakePower, manual_clock: ManualClock) -> None:
    fake.get_machine(TARGET).settle_reads = 2
    assert run(driver.set_power(PowerAction.ON)) is PowerState.ON
    assert manual_clock.sleeps == [1.0, 1.0]


def test_stuck_machine_fails_verification(driver: FakePower) -> None:
    fake.get_machine(TARGET).stuck = True
    with pytest.raises(BmcVerifyFailed):
        run(driver.set_power(PowerAction.ON))
    with pytest.raises(BmcVerifyFailed, match="did not reach pxe"):
        run(driver.set_boot_device(BootSetting(BootDevice.PXE)))


def test_faults(driver: FakePower) -> None:
    machine = fake.get_machine(TARGET)
    machine.flaky = True
    assert run(driver.power_state()) is PowerState.OFF  # the failed odd call was retried
    machine.flaky, machine.dead = False, True
    with pytest.raises(BmcConnectionError):
        run(driver.power_state())
    machine.dead, machine.password = False, "other"
    with pytest.raises(BmcAuthError):
        run(driver.power_state())


def test_slow_machine_times_out(executor: ThreadPoolExecutor) -> None:
    fake.get_machine(TARGET).slow_s = 0.5
    driver = FakePower(TARGET, DriverPolicy(timeout_s=0.05, retries=0), executor)
    with pytest.raises(BmcConnectionError, match="no answer within"):
        run(driver.power_state())


def test_console_banner_echo_and_close(driver: FakePower) -> None:
    async def session() -> list[bytes]:
        console = await driver.open_console()
        chunks = [await asyncio.wait_for(console.read(), 5)]
        await console.write(b"root\r")
        chunks.append(await asyncio.wait_for(console.read(), 5))
        await console.close()
        chunks += [await asyncio.wait_for(console.read(), 5), await asyncio.wait_for(console.read(), 5)]
        return chunks

    banner, echo, end, still_end = run(session())
    assert banner.startswith(b"Fake serial console on 10.1.2.3")
    assert echo == b"root\r" and end == b"" and still_end == b""
