"""Network boot end to end, from Ingot alone: two QEMU VMs (``-accel tcg``, ``-boot n``, the iPXE
option ROM from Debian's ``ipxe-qemu``) on taps in a test bridge get DHCP from Ingot, fetch their
iPXE script and the discovery kernel + busybox initramfs over HTTP from it, and print a marker with
their kernel command line (carrying the one-time token Ingot put there) on the serial console. The
ramdisk then asks for a lease again, which must be the one the appliance reports.

Everything runs inside a network namespace made for the test (tests/support/netboot_lab.py).
Serial logs, the appliance log and the API answers are kept under test-artifacts/netboot/.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.bootimage import ADDRESS_MARKER, MARKER, build_boot_image
from tests.support.netboot_lab import NetbootLab, Vm, netboot_lab, random_mac
from tests.support.qemu import VmError, wait_for

pytestmark = pytest.mark.slow

VM_COUNT = 2  # booting at the same moment, as a rack does after a power-on
BOOT_TIMEOUT_S = 180  # TCG on 2 cores: ~15-20 s measured, so this only bounds a hang


def serial_line(lab: NetbootLab, vm: Vm, pattern: str, timeout: float) -> str:
    try:
        return wait_for(vm.serial_log, pattern, timeout, proc=vm.proc)
    except VmError as exc:
        raise VmError(f"{exc}\n--- what the appliance saw (boot events, oldest first):\n{boot_events_text(lab)}"
                      f"\n--- appliance log ends:\n{lab.appliance.log_text()[-3000:] if lab.appliance else ''}"
                      ) from None


def boot_events_text(lab: NetbootLab) -> str:
    try:
        members = lab.api_get("/rest/boot-events", count="200")["members"]
    except Exception as exc:  # only for the failure message
        return f"(could not read them: {exc!r})"
    keys = ("service", "action", "mac", "clientIp", "detail", "ok")
    return "\n".join(" ".join(str(m.get(k)) for k in keys) for m in reversed(members))


def mentions(member: dict[str, Any], mac: str) -> bool:
    text = json.dumps(member).lower()
    return mac in text or mac.replace(":", "-") in text or mac.replace(":", "") in text


def test_two_vms_netboot_from_the_appliance_to_a_serial_marker(artifacts_dir: Path, tmp_path: Path) -> None:
    image = build_boot_image(artifacts_dir / "cache" / "bootimage")
    log_dir = artifacts_dir / "netboot"
    log_dir.mkdir(parents=True, exist_ok=True)
    macs: list[str] = []
    while len(macs) < VM_COUNT:
        if (mac := random_mac()) not in macs:
            macs.append(mac)

    with netboot_lab(tmp_path / "lab", image) as lab:
        try:
            vms = [lab.start_vm(mac, f"vm{i}", log_dir=log_dir) for i, mac in enumerate(macs)]
            markers = [serial_line(lab, vm, MARKER, BOOT_TIMEOUT_S) for vm in vms]
            addresses = [serial_line(lab, vm, ADDRESS_MARKER, 60) for vm in vms]
            leases = lab.api_get("/rest/dhcp/leases")
            events = lab.api_get("/rest/boot-events")
        finally:
            if lab.appliance is not None:
                shutil.copyfile(lab.appliance.log_path, log_dir / "appliance.log")
        (log_dir / "leases.json").write_text(json.dumps(leases, indent=2))
        (log_dir / "boot-events.json").write_text(json.dumps(events, indent=2))

    tokens = []
    for vm, marker in zip(vms, markers, strict=True):
        token = re.search(r"\bingot\.token=(\S+)", marker)
        assert token, f"{vm.name}: no ingot.token= on the kernel command line: {marker}"
        tokens.append(token.group(1))
    assert len(set(tokens)) == len(tokens), f"each machine gets its own one-time token: {tokens}"

    network = lab.network
    first, last = (ipaddress.IPv4Address(a) for a in lab.dhcp_range)
    assert isinstance(leases["members"], list) and isinstance(events["members"], list)
    for vm, line in zip(vms, addresses, strict=True):
        found = re.search(r"ip=(\d+\.\d+\.\d+\.\d+)/(\d+) server=(\S+)", line)
        assert found, f"{vm.name}: the ramdisk got no DHCP lease: {line}"
        address = ipaddress.IPv4Address(found.group(1))
        assert first <= address <= last and address in network, line
        assert found.group(3) == lab.address, line
        mine = [m for m in leases["members"] if mentions(m, vm.mac)]
        assert mine, f"no lease for {vm.mac} in {leases['members']}"
        assert any(str(address) in json.dumps(m) for m in mine), f"{vm.mac} leased {address}, appliance has {mine}"
