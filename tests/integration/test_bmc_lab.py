"""The lab's simulated BMCs against real clients: Debian's ipmitool and pyghmi's own client, on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi.command import Command

from appliance.drivers.types import BootDevice, PowerState
from lab.bmc import BmcFleet, Fault, VirtualBmc, apply_client_interop_patch, fault_plan

USER, PASSWORD = "admin", "secret"

# Members: 0-3 healthy, 4 dead, 5 slow, 6 wrong password, 7 lossy.
FAULTS = fault_plan(8, dead=1, slow=1, wrong_password=1, lossy=1)


@pytest.fixture(scope="module")
def fleet() -> Iterator[BmcFleet]:
    with BmcFleet(8, address_base="127.77.0.1", port=0, faults=FAULTS, slow_s=0.4, loss=0.3, seed=3) as f:
        yield f


def ipmitool(bmc: VirtualBmc, *args: str, password: str = PASSWORD, timeout_s: int = 1,
             retries: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ipmitool", "-I", "lanplus", "-C", "3", "-H", bmc.address, "-p", str(bmc.port), "-U", USER,
         "-P", password, "-N", str(timeout_s), "-R", str(retries), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def client(bmc: VirtualBmc, password: bytes = PASSWORD.encode()) -> Command:
    # Bytes credentials: with str ones a second Command in the same process hangs (machine-notes §5b).
    return Command(bmc=bmc.address, userid=USER.encode(), password=password, port=bmc.port)


def test_fleet_layout(fleet: BmcFleet) -> None:
    infos = fleet.info()
    assert [i.address for i in infos] == [f"127.77.0.{n}" for n in range(1, 9)]
    assert len({i.port for i in infos}) == 1
    assert [i.fault for i in infos][4:] == ["dead", "slow", "wrong_password", "lossy"]
    assert len({i.serial for i in infos}) == 8


def test_interop_patch_is_idempotent() -> None:
    from pyghmi.ipmi.private.serversession import ServerSession

    apply_client_interop_patch()
    first = ServerSession.create_open_session_response
    apply_client_interop_patch()
    assert ServerSession.create_open_session_response is first


@pytest.mark.slow
def test_ipmitool_power(fleet: BmcFleet) -> None:
    bmc = fleet[0]
    assert "Chassis Power is off" in ipmitool(bmc, "power", "status").stdout
    assert ipmitool(bmc, "power", "on").returncode == 0
    assert "Chassis Power is on" in ipmitool(bmc, "power", "status").stdout
    assert bmc.machine.power_state == PowerState.ON
    assert ipmitool(bmc, "power", "off").returncode == 0
    assert bmc.machine.power_state == PowerState.OFF


@pytest.mark.slow
def test_ipmitool_bootdev_pxe_then_read_back(fleet: BmcFleet) -> None:
    bmc = fleet[1]
    assert ipmitool(bmc, "chassis", "bootdev", "pxe").returncode == 0
    out = ipmitool(bmc, "chassis", "bootparam", "get", "5").stdout
    assert "Force PXE" in out and "Options apply to only next boot" in out
    assert bmc.machine.boot.device == BootDevice.PXE and not bmc.machine.boot.persistent
    assert ipmitool(bmc, "chassis", "bootdev", "disk", "options=persistent").returncode == 0
    out = ipmitool(bmc, "chassis", "bootparam", "get", "5").stdout
    assert "Force Boot from default Hard-Drive" in out and "Options apply to all future boots" in out


@pytest.mark.slow
def test_ipmitool_fru_and_guid(fleet: BmcFleet) -> None:
    bmc = fleet[2]
    out = ipmitool(bmc, "fru", "print").stdout  # exits 1 after FRU 0: there is no SDR repository to walk
    assert f"Product Serial        : {bmc.machine.fru.serial_number}" in out
    assert all(f"Product Extra         : {mac}" in out for mac in bmc.machine.mac_addresses)
    assert str(bmc.machine.system_guid) in ipmitool(bmc, "mc", "guid").stdout


@pytest.mark.slow
def test_ipmitool_wrong_password_rejected(fleet: BmcFleet) -> None:
    started = time.monotonic()
    assert ipmitool(fleet[0], "power", "status", password="nope").returncode != 0
    assert ipmitool(fleet[6], "power", "status").returncode != 0  # its own password is not the fleet's
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_dead_bmc_does_not_answer(fleet: BmcFleet) -> None:
    result = ipmitool(fleet[4], "power", "status")
    assert result.returncode != 0
    assert "Chassis Power" not in result.stdout


@pytest.mark.slow
def test_slow_bmc_answers_late(fleet: BmcFleet) -> None:
    started = time.monotonic()
    result = ipmitool(fleet[5], "power", "status", timeout_s=3)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 0.4 * 3  # every reply, handshake included, is 0.4 s late


@pytest.mark.slow
def test_lossy_bmc_eventually_answers(fleet: BmcFleet) -> None:
    # 30 % loss here: ipmitool gives up a whole session on some losses mid-handshake, and at 50 % an
    # attempt takes ~25 s. The scanner test covers 50 % loss.
    assert any(ipmitool(fleet[7], "power", "status", retries=6).returncode == 0 for _ in range(3))


def test_pyghmi_client_power_boot_inventory(fleet: BmcFleet) -> None:
    bmc = fleet[3]
    cmd = client(bmc)
    assert cmd.get_power() == {"powerstate": "off"}
    cmd.set_bootdev("network")
    assert cmd.get_bootdev()["bootdev"] == "network"
    cmd.set_power("on", wait=False)
    assert bmc.machine.power_state == PowerState.ON
    # The one-time PXE override was consumed by that start.
    assert cmd.get_bootdev()["bootdev"] == "default"
    cmd.set_bootdev("hd", persist=True)
    assert cmd.get_bootdev() == {"bootdev": "hd", "persistent": True, "uefimode": False}
    inventory = dict(cmd.get_inventory())["System"]
    assert inventory["Serial Number"] == bmc.machine.fru.serial_number
    assert inventory["Manufacturer"] == bmc.machine.fru.manufacturer
    assert inventory["Product name"] == bmc.machine.fru.model
    assert inventory["product_extra"] == list(bmc.machine.mac_addresses)
    assert inventory["UUID"].lower() == str(bmc.machine.system_guid)
    cmd.set_power("off", wait=False)
    assert bmc.machine.power_state == PowerState.OFF


def test_pyghmi_client_wrong_password(fleet: BmcFleet) -> None:
    with pytest.raises(pyghmi_exc.IpmiException):
        client(fleet[6])


def test_consecutive_ports_layout() -> None:
    with BmcFleet(3, address_base="127.0.0.1", port=_free_udp_run(3), consecutive_ports=True) as f:
        assert [b.port for b in f] == [f[0].port + i for i in range(3)]
        assert client(f[2]).get_power() == {"powerstate": "off"}


def _free_udp_run(n: int) -> int:
    import socket

    for base in range(41000, 60000, 97):
        socks = []
        try:
            for i in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free run of UDP ports")


def test_fleet_refuses_non_loopback_addresses() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        BmcFleet(2, address_base="10.0.0.1")
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        BmcFleet(2, address_base="127.255.255.255")  # the second would be 128.0.0.0


@pytest.mark.slow
def test_cli_runs_a_fleet_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.bmc", "--count", "3", "--address-base", "127.77.1.1", "--port", "0",
         "--dead", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        members = json.loads(proc.stdout.readline())
        assert [m["fault"] for m in members] == ["none", "none", "dead"]
        assert set(members[0]) == {"name", "address", "port", "fault", "serial", "macs", "uuid"}
        first = members[0]
        result = subprocess.run(
            ["ipmitool", "-I", "lanplus", "-C", "3", "-H", first["address"], "-p", str(first["port"]),
             "-U", USER, "-P", PASSWORD, "-N", "1", "-R", "1", "power", "status"],
            capture_output=True, text=True, timeout=30, check=False)
        assert "Chassis Power is off" in result.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_unknown_fault_value_is_rejected() -> None:
    with pytest.raises(ValueError):
        Fault("flaky")
