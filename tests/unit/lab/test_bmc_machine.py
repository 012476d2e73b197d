"""MemoryMachine: power, the one-time boot override, deterministic identity; plus the FRU image and fault plan."""

from __future__ import annotations

import re

import pytest
from pyghmi.ipmi import fru as pyghmi_fru

from appliance.drivers.types import BootDevice, BootSetting, PowerState
from lab.bmc import Fault, Machine, MemoryMachine, build_fru, fault_plan, lab_mac


def test_memory_machine_satisfies_the_protocol() -> None:
    assert isinstance(MemoryMachine(0), Machine)


def test_power_transitions() -> None:
    m = MemoryMachine(1)
    assert m.power_state == PowerState.OFF
    m.reset()  # a reset of a machine that is off does nothing
    assert m.power_state == PowerState.OFF and m.boot_history == []
    m.power_on()
    m.power_on()  # already on: not a second start
    assert m.power_state == PowerState.ON and len(m.boot_history) == 1
    m.shutdown()
    assert m.power_state == PowerState.OFF
    m.cycle()
    assert m.power_state == PowerState.ON and len(m.boot_history) == 2
    m.power_off()
    assert m.power_state == PowerState.OFF


def test_one_time_boot_override_is_consumed_by_the_next_start() -> None:
    m = MemoryMachine(2)
    m.set_boot(BootSetting(BootDevice.PXE))
    assert m.boot.device == BootDevice.PXE
    m.power_on()
    assert m.boot_history == [BootDevice.PXE]
    assert m.boot == BootSetting(BootDevice.NONE)
    m.reset()
    assert m.boot_history == [BootDevice.PXE, BootDevice.NONE]


def test_persistent_boot_override_survives_starts() -> None:
    m = MemoryMachine(3)
    m.set_boot(BootSetting(BootDevice.DISK, persistent=True))
    m.power_on()
    m.cycle()
    assert m.boot_history == [BootDevice.DISK, BootDevice.DISK]
    assert m.boot == BootSetting(BootDevice.DISK, persistent=True)


def test_identity_is_deterministic_and_distinct() -> None:
    machines = [MemoryMachine(i) for i in range(300)]
    again = MemoryMachine(7)
    assert again.fru == machines[7].fru and again.system_guid == machines[7].system_guid
    assert again.mac_addresses == machines[7].mac_addresses
    assert len({m.fru.serial_number for m in machines}) == 300
    assert len({m.system_guid for m in machines}) == 300
    macs = [mac for m in machines for mac in m.mac_addresses]
    assert len(set(macs)) == len(macs) == 600
    assert all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac) for mac in macs)


def test_lab_mac_bounds() -> None:
    assert lab_mac(0, 0) == "52:54:00:00:00:00"
    assert lab_mac(0xFFFFF, 15) == "52:54:00:ff:ff:ff"
    with pytest.raises(ValueError):
        lab_mac(1 << 20, 0)


def test_fru_image_parses_with_pyghmi() -> None:
    m = MemoryMachine(5)
    info = pyghmi_fru.FRU(rawdata=build_fru(m.fru, m.mac_addresses)).info
    assert info["Serial Number"] == m.fru.serial_number
    assert info["Manufacturer"] == m.fru.manufacturer
    assert info["Product name"] == m.fru.model
    assert info["Model"] == m.fru.part_number
    assert info["Board serial number"] == m.fru.serial_number
    assert info["product_extra"] == list(m.mac_addresses)


def test_fault_plan_puts_faults_last() -> None:
    plan = fault_plan(6, dead=1, slow=1, wrong_password=1, lossy=1)
    assert plan == {2: Fault.DEAD, 3: Fault.SLOW, 4: Fault.WRONG_PASSWORD, 5: Fault.LOSSY}
    with pytest.raises(ValueError):
        fault_plan(1, dead=2)
