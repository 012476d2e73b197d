"""The lab's two images, really built and really booted under QEMU (``-accel tcg``).

* The deploy ramdisk boots by ``-kernel/-initrd`` and its agent reports on the serial port with
  the address it got from QEMU's user-mode DHCP (``restrict=on``: the guest reaches nothing
  outside), the boot NIC's MAC and the masked token from the kernel command line.
* Building it again is a cache hit: the same files, not rebuilt.
* The demo disk boots from itself on both firmwares (SeaBIOS -> MBR -> extlinux, and OVMF ->
  the EFI system partition's removable-media loader, systemd-boot; then its busybox initramfs ->
  systemd) and its first-boot unit prints ``INGOT-DEMO booted``. The disk is opened with
  ``snapshot=on`` so the cached image stays as built.

Builds are cached under test-artifacts/cache/lab-images (first build: about 50 s for the ramdisk
and 30 s for the disk on 2 cores; a cache hit costs about 2.5 s for the key). Serial logs and the measured boot
times are kept under test-artifacts/lab-images/.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.images import AGENT_STARTED, DEMO_BOOTED, DemoDisk, Ramdisk, build_demo_disk, build_ramdisk
from lab.qemu import OVMF_CODE, OVMF_VARS
from tests.support.qemu import stop_vm, wait_for

pytestmark = pytest.mark.slow

BOOT_TIMEOUT_S = 120  # measured ~10 s (ramdisk) and ~19 s (disk) under TCG: this only bounds a hang
MAC = "52:54:00:49:4e:01"
SLIRP_NET = ipaddress.IPv4Network("10.0.2.0/24")  # QEMU user-mode networking's default


@pytest.fixture(scope="session")
def image_cache(artifacts_dir: Path) -> Path:
    return artifacts_dir / "cache" / "lab-images"


@pytest.fixture(scope="session")
def log_dir(artifacts_dir: Path) -> Path:
    path = artifacts_dir / "lab-images"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def ramdisk(image_cache: Path) -> Ramdisk:
    return build_ramdisk(image_cache)


@pytest.fixture(scope="session")
def demo_disk(image_cache: Path) -> DemoDisk:
    return build_demo_disk(image_cache)


def record(log_dir: Path, name: str, value: float) -> None:
    path = log_dir / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[name] = round(value, 2)
    path.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")
    print(f"{name}: {value:.1f} s")


def start_qemu(serial_log: Path, *args: str) -> subprocess.Popen[bytes]:
    serial_log.unlink(missing_ok=True)
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-nographic", "-nodefaults", "-no-reboot",
            "-serial", f"file:{serial_log}", "-netdev", "user,id=n0,restrict=on", *args]
    with open(serial_log.with_suffix(".qemu.log"), "wb") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def vms() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            stop_vm(proc)  # by its PID: SIGTERM, then SIGKILL


def test_ramdisk_boots_to_the_agent(ramdisk: Ramdisk, log_dir: Path, vms: list[subprocess.Popen[bytes]]) -> None:
    token = secrets.token_urlsafe(24)
    serial = log_dir / "ramdisk-serial.log"
    started = time.monotonic()
    vms.append(start_qemu(serial, "-kernel", str(ramdisk.kernel), "-initrd", str(ramdisk.initrd),
                          # what the appliance's iPXE script passes (appliance/netboot/scripts.py)
                          "-append", f"console=ttyS0 ingot.url=http://10.0.2.2:8080 ingot.token={token} "
                                     f"BOOTIF=01-{MAC.replace(':', '-')}",
                          "-device", f"virtio-net-pci,netdev=n0,mac={MAC}"))
    line = wait_for(serial, re.escape(AGENT_STARTED), BOOT_TIMEOUT_S, proc=vms[0])
    record(log_dir, "ramdisk_boot_to_agent_s", time.monotonic() - started)

    found = re.search(r"mac=(\S+) ip=(\S+) uptime=(\S+) python=(\S+) url=(\S+) token=(\S+)$", line.strip())
    assert found, line
    mac, ip, uptime, python, url, masked = found.groups()
    assert mac == MAC, f"not the BOOTIF NIC: {line}"
    assert ip != "none", f"the ramdisk got no DHCP lease: {line}"
    assert ipaddress.IPv4Interface(ip).ip in SLIRP_NET, line
    assert float(uptime) > 0 and python.startswith("3."), line
    assert url == "http://10.0.2.2:8080"
    assert masked == f"<masked:{len(token)}>"
    # The kernel itself prints its command line (without ``quiet``); nothing else may show the token.
    leaks = [text for text in serial.read_text(errors="replace").splitlines()
             if token in text and "command line:" not in text.lower()]
    assert not leaks, f"the token reached the console: {leaks}"


def test_building_the_ramdisk_again_is_a_cache_hit(ramdisk: Ramdisk, image_cache: Path) -> None:
    mtime = ramdisk.initrd.stat().st_mtime_ns
    again = build_ramdisk(image_cache)
    assert again.info.cached
    assert (again.kernel, again.initrd, again.info.key) == (ramdisk.kernel, ramdisk.initrd, ramdisk.info.key)
    assert again.initrd.stat().st_mtime_ns == mtime
    assert again.info.sizes == ramdisk.info.sizes
    assert again.info.details["compression"] in ("zstd", "gzip")
    assert "python3-minimal" in again.info.packages and "busybox" in again.info.packages


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_demo_disk_boots_from_itself(demo_disk: DemoDisk, log_dir: Path, vms: list[subprocess.Popen[bytes]],
                                     firmware: str, tmp_path: Path) -> None:
    assert demo_disk.path.suffix == ".qcow2"
    serial = log_dir / f"demo-disk-{firmware}-serial.log"
    if firmware == "uefi":
        variables = tmp_path / "vars.fd"
        shutil.copyfile(OVMF_VARS, variables)  # a fresh NVRAM: OVMF finds the ESP's loader by itself
        machine = ["-machine", "q35", "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                   "-drive", f"if=pflash,format=raw,file={variables}"]
    else:
        machine = ["-boot", "c"]
    started = time.monotonic()
    # romfile= : no option ROM on the NIC, so the firmware goes straight to the disk.
    vms.append(start_qemu(serial, *machine, "-drive", f"file={demo_disk.path},format=qcow2,if=virtio,snapshot=on",
                          "-device", f"virtio-net-pci,netdev=n0,mac={MAC},romfile="))
    line = wait_for(serial, re.escape(DEMO_BOOTED) + " hostname=", BOOT_TIMEOUT_S, proc=vms[0])
    record(log_dir, f"demo_disk_{firmware}_boot_to_marker_s", time.monotonic() - started)

    found = re.search(r"hostname=(\S+) addresses=(\S+) machine_id=([0-9a-f]{32}) ", line)
    assert found, line  # the image left /etc/machine-id empty: systemd made this machine its own
    assert found.group(1) == demo_disk.info.details["hostname"]
    addresses = [ipaddress.IPv4Interface(a) for a in found.group(2).split(",") if "." in a]
    assert any(a.ip in SLIRP_NET for a in addresses), f"no DHCP address on the demo machine: {line}"
