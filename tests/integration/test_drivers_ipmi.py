"""The IPMI driver against OpenIPMI's ipmi_sim, cross-checked with ipmitool and the chassis files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from appliance.drivers.base import DriverPolicy, make_bmc_executor
from appliance.drivers.loader import make_driver
from appliance.drivers.power.ipmi import IpmiPower
from appliance.drivers.types import BmcTarget, BootDevice, BootSetting, PowerAction, PowerState
from appliance.errors import BmcAuthError, BmcCircuitOpen, BmcConnectionError
from tests.support.ipmi_sim import FRU, PASSWORD, USER, IpmiSim, free_port, ipmi_sim_fixture  # noqa: F401 - fixture

pytestmark = pytest.mark.slow
T = TypeVar("T")
POLICY = DriverPolicy(timeout_s=5, retries=1, backoff_s=0.1, verify_timeout_s=20, verify_poll_s=0.2)


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = make_bmc_executor(8)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


def target(sim: IpmiSim, password: str = PASSWORD) -> BmcTarget:
    return BmcTarget("ipmi", "127.0.0.1", sim.port, USER, password)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def driver_for(sim: IpmiSim, executor: ThreadPoolExecutor, **policy: Any) -> IpmiPower:
    driver = make_driver(target(sim), POLICY if not policy else DriverPolicy(**{**POLICY.__dict__, **policy}),
                         executor)
    assert isinstance(driver, IpmiPower)
    return driver


def ipmitool_power(sim: IpmiSim) -> str:
    return sim.ipmitool("chassis", "power", "status").stdout.strip()


def test_power_on_off_cycle_verified_and_cross_checked(ipmi_sim: IpmiSim, executor: ThreadPoolExecutor) -> None:
    driver = driver_for(ipmi_sim, executor)

    async def scenario() -> None:
        assert await driver.set_power(PowerAction.ON) is PowerState.ON
        assert ipmitool_power(ipmi_sim) == "Chassis Power is on" and ipmi_sim.power_file() == "1"
        assert await driver.set_power(PowerAction.OFF) is PowerState.OFF
        assert ipmitool_power(ipmi_sim) == "Chassis Power is off" and ipmi_sim.power_file() == "0"
        await driver.set_power(PowerAction.ON)
        (ipmi_sim.root / "chassis.log").write_text("")
        assert await driver.set_power(PowerAction.CYCLE) is PowerState.ON
        for _ in range(100):  # ipmi_sim powers back on about a second after the off
            if ipmi_sim.power_file() == "1":
                break
            await asyncio.sleep(0.1)
        assert (ipmi_sim.root / "chassis.log").read_text().split("\n")[:2] == ["power 0", "power 1"]
        assert ipmitool_power(ipmi_sim) == "Chassis Power is on"
        await driver.close()

    run(scenario())


def test_cycle_of_a_server_that_is_off_powers_it_on(ipmi_sim: IpmiSim, executor: ThreadPoolExecutor) -> None:
    driver = driver_for(ipmi_sim, executor)
    ipmi_sim.ipmitool("chassis", "power", "off")
    assert run(driver.set_power(PowerAction.CYCLE)) is PowerState.ON
    assert ipmi_sim.power_file() == "1"


def test_one_time_pxe_boot(ipmi_sim: IpmiSim, executor: ThreadPoolExecutor) -> None:
    driver = driver_for(ipmi_sim, executor)
    ipmi_sim.ipmitool("chassis", "bootdev", "none")
    assert run(driver.boot_device()).device is BootDevice.NONE

    setting = run(driver.set_boot_device(BootSetting(BootDevice.PXE)))
    assert setting.device is BootDevice.PXE
    assert run(driver.boot_device()) == BootSetting(BootDevice.PXE, persistent=False, mode=None)
    assert "Boot Device Selector : Force PXE" in ipmi_sim.ipmitool("chassis", "bootparam", "get", "5").stdout
    assert ipmi_sim.boot_file() == "pxe"

    run(driver.set_boot_device(BootSetting(BootDevice.NONE)))
    assert "No override" in ipmi_sim.ipmitool("chassis", "bootparam", "get", "5").stdout


def test_boot_device_set_by_ipmitool_is_read(ipmi_sim: IpmiSim, executor: ThreadPoolExecutor) -> None:
    ipmi_sim.ipmitool("chassis", "bootdev", "cdrom")
    assert run(driver_for(ipmi_sim, executor).boot_device()).device is BootDevice.CD


def test_inventory_from_fru_and_guid(ipmi_sim: IpmiSim, executor: ThreadPoolExecutor) -> None:
    inventory = run(driver_for(ipmi_sim, executor).inventory())
    assert inventory.manufacturer == FRU["manufacturer"]
    assert inventory.model == FRU["product"]
    assert inventory.serial_number == FRU["serial"]
    assert inventory.part_number == FRU["part"]
    assert inventory.mac_addresses == (FRU["mac"],)
    # ipmi_sim sends the lan.conf GUID bytes as written; pyghmi decodes the first three fields
    # little-endian, as SMBIOS does.
    assert inventory.uuid == "674523a1-ab89-efcd-a123-456789abcdef"
    assert inventory.bmc_firmware == "9.08"  # mc_add firmware revision 9, 8


def test_wrong_password_is_an_auth_error_at_once(ipmi_sim: IpmiSim, executor: ThreadPoolExecutor) -> None:
    driver = make_driver(target(ipmi_sim, "wrong-password"), POLICY, executor)
    started = time.monotonic()
    with pytest.raises(BmcAuthError) as info:
        run(driver.power_state())
    assert "wrong-password" not in str(info.value)
    assert driver.circuit.failures == 1  # one attempt: auth failures are not retried
    assert time.monotonic() - started < POLICY.timeout_s  # answered, not timed out


def test_dead_port_is_a_connection_error_then_the_circuit_opens(executor: ThreadPoolExecutor) -> None:
    dead = BmcTarget("ipmi", "127.0.0.1", free_port(), USER, PASSWORD)
    policy = DriverPolicy(timeout_s=1, retries=1, backoff_s=0.05, circuit_failures=2, circuit_reset_s=300)
    driver = make_driver(dead, policy, executor)
    with pytest.raises(BmcConnectionError) as info:
        run(driver.power_state())
    assert not isinstance(info.value, BmcCircuitOpen)
    with pytest.raises(BmcCircuitOpen):
        run(driver.power_state())
    assert driver.circuit.state == "open"


def test_sol_console_shows_serial_output(ipmi_sim: IpmiSim, executor: ThreadPoolExecutor) -> None:
    driver = driver_for(ipmi_sim, executor)

    async def scenario() -> bytes:
        console = await driver.open_console()
        try:
            await asyncio.to_thread(ipmi_sim.write_serial, "Ingot SOL check\r\n")
            output = b""
            for _ in range(50):  # chunk boundaries are the BMC's choice
                output += await asyncio.wait_for(console.read(), 10)
                if b"SOL check\r\n" in output:
                    break
            await console.write(b"root\r")
            for _ in range(50):
                if b"root\r" in ipmi_sim.serial.received:
                    break
                await asyncio.sleep(0.1)
            return output
        finally:
            await console.close()
            await driver.close()

    assert b"Ingot SOL check" in run(scenario())
    assert b"root\r" in ipmi_sim.serial.received
