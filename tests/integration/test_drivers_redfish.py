"""The Redfish driver against sushy-tools' emulator (fake driver, basic auth).

The emulator applies power changes 1-11 s after the request, so verification has a generous
timeout and no test asserts elapsed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from appliance.drivers.base import DriverPolicy, make_bmc_executor
from appliance.drivers.loader import make_driver
from appliance.drivers.power.redfish import RedfishPower, base_url
from appliance.drivers.types import BmcTarget, BootDevice, BootSetting, PowerAction, PowerState
from appliance.errors import BmcAuthError, BmcUnsupported
from tests.support.sushy import (  # noqa: F401 - fixture
    PASSWORD,
    SYSTEM_MAC,
    SYSTEM_UUID,
    USER,
    SushyEmulator,
    sushy_emulator_fixture,
)

pytestmark = pytest.mark.slow
T = TypeVar("T")
POLICY = DriverPolicy(timeout_s=10, retries=1, backoff_s=0.1, verify_timeout_s=40, verify_poll_s=0.5)


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = make_bmc_executor(8)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def driver_for(emulator: SushyEmulator, executor: ThreadPoolExecutor, password: str = PASSWORD) -> RedfishPower:
    driver = make_driver(BmcTarget("redfish", emulator.url, None, USER, password), POLICY, executor)
    assert isinstance(driver, RedfishPower)
    return driver


def test_base_url() -> None:
    assert base_url("10.0.0.5", None) == "https://10.0.0.5:443"
    assert base_url("bmc.example", 8443) == "https://bmc.example:8443"
    assert base_url("fe80::1", None) == "https://[fe80::1]:443"
    assert base_url("http://127.0.0.1:8000/redfish/v1/", None) == "http://127.0.0.1:8000"
    assert base_url("https://bmc.example", 8443) == "https://bmc.example:8443"


def test_power_on_and_off_verified(sushy_emulator: SushyEmulator, executor: ThreadPoolExecutor) -> None:
    driver = driver_for(sushy_emulator, executor)

    async def scenario() -> None:
        assert await driver.set_power(PowerAction.ON) is PowerState.ON
        assert sushy_emulator.system()["PowerState"] == "On"
        assert await driver.set_power(PowerAction.OFF) is PowerState.OFF
        assert sushy_emulator.system()["PowerState"] == "Off"
        await driver.close()

    run(scenario())


def test_pxe_once(sushy_emulator: SushyEmulator, executor: ThreadPoolExecutor) -> None:
    driver = driver_for(sushy_emulator, executor)
    assert run(driver.set_boot_device(BootSetting(BootDevice.PXE))).device is BootDevice.PXE
    assert run(driver.boot_device()).device is BootDevice.PXE
    boot = sushy_emulator.system()["Boot"]
    assert isinstance(boot, dict) and boot["BootSourceOverrideTarget"] == "Pxe"


def test_inventory(sushy_emulator: SushyEmulator, executor: ThreadPoolExecutor) -> None:
    inventory = run(driver_for(sushy_emulator, executor).inventory())
    assert inventory.uuid == SYSTEM_UUID
    assert inventory.manufacturer == "Sushy Emulator"
    assert inventory.mac_addresses == (SYSTEM_MAC,)


def test_wrong_password_is_an_auth_error(sushy_emulator: SushyEmulator, executor: ThreadPoolExecutor) -> None:
    driver = driver_for(sushy_emulator, executor, password="not-the-password")
    with pytest.raises(BmcAuthError) as info:
        run(driver.power_state())
    assert "not-the-password" not in str(info.value)
    assert driver.circuit.failures == 1  # not retried


def test_no_console(sushy_emulator: SushyEmulator, executor: ThreadPoolExecutor) -> None:
    with pytest.raises(BmcUnsupported):
        run(driver_for(sushy_emulator, executor).open_console())
