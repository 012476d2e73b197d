"""A QEMU VM that network-boots from a tap device inside a test network namespace.

The command line comes from :mod:`lab.qemu` (the emulated rack's servers), here in its one-shot form: the guest
runs at once (no BMC), ``-accel tcg`` (``/dev/kvm`` on these machines exists but hangs guests), one
virtio-net-pci NIC first in the boot order with QEMU's default option ROM for it, which Debian's ``ipxe-qemu``
provides (``efi-virtio.rom``: iPXE for both BIOS and UEFI), so the firmware's network boot *is* iPXE.
The serial port goes to a file the test polls; ``-no-reboot`` plus the guest's ``poweroff -f``
make QEMU exit by itself. The VM is stopped by its own PID (``ip netns exec`` execs QEMU, so the
Popen's PID is QEMU's).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

from appliance.drivers.types import BootDevice
from lab import qemu as lab_qemu

OVMF_CODE = lab_qemu.OVMF_CODE
OVMF_VARS = lab_qemu.OVMF_VARS
_VM_UUIDS = uuid.UUID("0e7f3c55-2b1d-4f0a-9a7e-6d5c4b3a2910")


class VmError(AssertionError):
    """The serial console did not show what the test waited for."""


def vm_spec(tap: str, mac: str, serial_log: Path, *, firmware: str = "bios", memory_mb: int = 512) -> lab_qemu.QemuSpec:
    """The one-shot netboot VM as a :class:`lab.qemu.QemuSpec` (its UUID follows from the MAC)."""
    if firmware not in ("bios", "uefi"):
        raise ValueError(f"firmware must be 'bios' or 'uefi', not {firmware!r}")
    return lab_qemu.QemuSpec(name=re.sub(r"[^A-Za-z0-9_.-]", "-", serial_log.stem) or "vm", index=0, macs=(mac,),
                             taps=(tap,), serial_log=serial_log, firmware=lab_qemu.Firmware(firmware),
                             memory_mb=memory_mb, nic_rom="ipxe", default_boot="pxe",
                             uuid=uuid.uuid5(_VM_UUIDS, mac.lower()))


def qemu_argv(tap: str, mac: str, serial_log: Path, *, firmware: str = "bios", memory_mb: int = 512) -> list[str]:
    """QEMU's argv for a VM that boots from the network at once and exits when the guest reboots or powers
    off. A UEFI VM gets its own copy of the OVMF variables next to ``serial_log``."""
    spec = vm_spec(tap, mac, serial_log, firmware=firmware, memory_mb=memory_mb)
    if spec.firmware == lab_qemu.Firmware.UEFI and spec.uefi_vars_path.is_file():
        spec.uefi_vars_path.unlink()  # a fresh NVRAM per run, as before
    lab_qemu.prepare_files(spec)
    return lab_qemu.qemu_argv(spec, standby=False, initial_boot=BootDevice.PXE)


def start_vm(netns: str, tap: str, mac: str, serial_log: Path, *, firmware: str = "bios",
             memory_mb: int = 512) -> subprocess.Popen[bytes]:
    """Start QEMU in ``netns`` on ``tap`` (which must already exist there, attached to the
    bridge). QEMU's own messages go to ``<serial_log>.qemu.log``."""
    serial_log.parent.mkdir(parents=True, exist_ok=True)
    serial_log.unlink(missing_ok=True)
    argv = ["ip", "netns", "exec", netns, *qemu_argv(tap, mac, serial_log, firmware=firmware, memory_mb=memory_mb)]
    with open(serial_log.with_suffix(".qemu.log"), "wb") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def read_serial(serial_log: Path) -> str:
    if not serial_log.is_file():
        return ""
    return serial_log.read_bytes().decode(errors="replace").replace("\r", "")


# What the console shows when a boot has failed for good (SeaBIOS gave up, the kernel died).
BOOT_FAILED = r"No bootable device|Kernel panic"


def wait_for(serial_log: Path, pattern: str, timeout: float, *,
             proc: subprocess.Popen[bytes] | None = None, fail: str | None = BOOT_FAILED) -> str:
    """Poll the serial log until a line matches the regex ``pattern``; return that line.
    Raises VmError after ``timeout`` seconds, as soon as ``proc`` (the VM) has exited without
    printing it, or when a line matches ``fail`` — with the end of the log in the message."""
    regex = re.compile(pattern)
    failed = re.compile(fail) if fail else None
    deadline = time.monotonic() + timeout
    while True:
        exited = proc is not None and proc.poll() is not None
        lines = read_serial(serial_log).splitlines()
        for line in lines:
            if regex.search(line):
                return line
        if failed is not None and (bad := next((line for line in lines if failed.search(line)), None)):
            reason = f"the boot failed ({bad.strip()!r})"
            break
        if exited:
            reason = f"QEMU exited ({proc.returncode if proc else '?'})"
            break
        if time.monotonic() > deadline:
            reason = f"timed out after {timeout:.0f} s"
            break
        time.sleep(0.25)
    tail = read_serial(serial_log)[-3000:]
    raise VmError(f"{pattern!r} not on the serial console of {serial_log.name}: {reason}. Log ends:\n{tail}")


def stop_vm(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """Stop the VM by its PID (SIGTERM, then SIGKILL); returns QEMU's exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode
