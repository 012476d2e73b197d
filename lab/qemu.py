"""QEMU servers for the emulated rack, driven over QMP so that a virtual BMC can manage them.

Two halves:

* :class:`QemuSpec` and :func:`qemu_argv`: what one server is (identity, NICs, disk, firmware, where its
  sockets and logs go) and the QEMU command line for it. The test helpers in ``tests/support/qemu.py`` build
  their one-shot netbooting VMs from the same function.
* :class:`QemuMachine`: a :class:`lab.bmc.Machine` over QMP, so :class:`lab.bmc.VirtualBmc` (and through it
  ``ipmitool`` or Ingot) powers and boots a real VM.

Power model (checked on QEMU 7.2 with SeaBIOS 1.16 and OVMF 2022.11). The QEMU *process* is the server's
chassis on standby power: it starts once, with ``-S -no-shutdown``, and lives until :meth:`QemuMachine.close`.
The guest's power is QEMU's run state:

=================  ==========================================================================================
``power_on``       ``system_reset`` (QEMU rebuilds the firmware's ``bootorder`` fw_cfg file from the devices'
                   ``bootindex`` at every reset), wait for the ``RESET`` event, then ``cont``. ``cont`` alone
                   is refused after a guest power-off ("Resetting the Virtual Machine is required").
``power_off``      ``stop`` + ``system_reset``: a hard off. QEMU then reports ``prelaunch``.
``shutdown``       ``system_powerdown`` (ACPI power button). If the OS powers off, ``-no-shutdown`` keeps QEMU
                   alive in state ``shutdown`` (= off) instead of exiting.
``reset``          ``system_reset`` while running (nothing when off, like :class:`lab.bmc.MemoryMachine`).
``cycle``          ``stop``, then as ``power_on`` (its reset is the off half: the guest loses all state).
``power_state``    ``query-status``: ``running`` (and ``suspended``, ACPI S3, power still on) is on; ``paused``,
                   ``prelaunch``, ``shutdown``, ``guest-panicked``, ... are off.
=================  ==========================================================================================

Boot device: each NIC and the disk carry a QOM id (``nic0``, ``nic1``, ``disk0``) and a ``bootindex``, which
``qom-set`` changes at run time (first to -1 on every device, then 1, 2, ... in the wanted order: QEMU refuses
an index another device holds). QEMU rebuilds the firmware's ``bootorder`` file at every reset, so an override
applies to the next start whether the BMC or the guest resets. This follows the IPMI boot-flags parameter, one
register: a one-time override is consumed by the next start and then there is no override left (the order of
``QemuSpec.default_boot``), as in MemoryMachine. Putting that order back into QEMU has to wait, though: SeaBIOS
answers every ``system_reset`` but the first with a reset of its own ("Attempting a hard reboot", a ``RESET``
event with ``guest: true``; OVMF may reset once too), and the order must survive that reset. So the order is
put back by a watcher thread, on its own QMP connection, right after the firmware's reset or
:data:`FIRMWARE_RESET_GRACE_S` after the start, whichever comes first. The same watcher drops a pending one-time
override when the guest's OS reboots on its own (a later ``RESET`` with ``guest: true``), as a real firmware
would have used it.

Errors QEMU reports (or a vanished QEMU) raise :class:`MachineError` with the IPMI completion code the BMC
should answer, never a silent success.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from appliance.drivers.types import BootDevice, BootSetting, PowerState
from lab.bmc import Fru
from lab.qmp import QmpClient, QmpCommandError, QmpConnectionError, QmpError, QmpTimeoutError

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")
_UUID_NAMESPACE = uuid.UUID("5d0b2a8e-8f7e-4a55-93c4-1f0e6e9e0b02")  # QEMU machines' UUIDs (not MemoryMachine's)
_MAC_PREFIX = "52:54:01"  # locally administered; MemoryMachine uses 52:54:00, so the two fleets never collide

# IPMI completion codes (IPMI v2.0 table 5-2) a MachineError carries.
CC_INVALID_DATA = 0xCC
CC_NOT_IN_PRESENT_STATE = 0xD5
CC_DESTINATION_UNAVAILABLE = 0xD3
CC_UNSPECIFIED = 0xFF

_ON_STATES = frozenset({"running", "suspended"})
_UNIX_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path) on Linux, NUL included


class MachineError(RuntimeError):
    """The server could not do what the BMC asked. ``completion_code`` is the IPMI answer for it."""

    def __init__(self, message: str, completion_code: int = CC_UNSPECIFIED) -> None:
        super().__init__(message)
        self.completion_code = completion_code


class QemuStartError(RuntimeError):
    """QEMU did not come up (exited, or no QMP socket in time). The message ends with QEMU's own output."""


class Firmware(enum.StrEnum):
    BIOS = "bios"  # SeaBIOS, with the NIC's iPXE option ROM (Debian ipxe-qemu)
    UEFI = "uefi"  # OVMF (Debian ovmf), q35, a per-server copy of the variable store


def qemu_mac(index: int, nic: int) -> str:
    """``52:54:01:xx:xx:xx`` from a machine index (< 2**20) and a NIC number (< 16)."""
    if not 0 <= index < 1 << 20 or not 0 <= nic < 16:
        raise ValueError(f"index {index} / nic {nic} out of range for a lab MAC")
    value = (index << 4) | nic
    return _MAC_PREFIX + ":" + ":".join(f"{(value >> shift) & 0xFF:02x}" for shift in (16, 8, 0))


_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_TAP_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # IFNAMSIZ - 1; no commas (QEMU option syntax)


class QemuSpec(BaseModel):
    """One emulated server, as plain data (a JSON object in ``lab.vbmc``'s config).

    Only ``name``, ``index`` and ``serial_log`` are required; identity (MACs, UUID, FRU) follows from ``index``
    unless given.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="QEMU -name and the BMC's machine name")
    index: int = Field(ge=0, lt=1 << 20, description="derives the default MACs, UUID and serial number")
    macs: tuple[str, ...] | None = Field(
        default=None, description="one per NIC (virtio-net-pci); default: one NIC per tap, at least one")
    taps: tuple[str, ...] = Field(
        default=(), description="tap device per NIC, in order; NICs beyond the list have no network (no peer)")
    disk: Path | None = Field(default=None, description="system disk image (virtio-blk), used in place")
    disk_format: Literal["qcow2", "raw"] = "qcow2"
    firmware: Firmware = Firmware.BIOS
    memory_mb: int = Field(default=512, ge=64, le=65536)
    serial_log: Path = Field(description="everything the guest writes to its serial port (ttyS0)")
    qmp_socket: Path | None = Field(default=None, description="the QMP socket the BMC uses (one client at a time)")
    monitor_sockets: tuple[Path, ...] = Field(
        default=(), description="more QMP sockets, for observers such as tests (one client each)")
    console_socket: Path | None = Field(
        default=None, description="serial port also on this UNIX socket (server, nowait), for a SOL bridge")
    firmware_log: Path | None = Field(
        default=None, description="SeaBIOS debug console (I/O port 0x402): prints the boot order of each boot")
    uefi_vars: Path | None = Field(default=None, description="OVMF variable store; default <serial_log>.vars.fd")
    nic_rom: Literal["ipxe", "firmware"] | None = Field(
        default=None, description="ipxe: QEMU's iPXE option ROM runs the network boot; firmware: no option ROM "
        "(romfile=), OVMF's own PXE client, as on real UEFI servers. Default: ipxe for BIOS, firmware for UEFI")
    default_boot: Literal["disk", "pxe"] = Field(
        default="disk", description="the firmware's own order (no boot override): disk first, or NICs first")
    uuid: UUID | None = None
    manufacturer: str = "Ingot Lab"
    model: str = "QEMU Server QS-1"
    serial_number: str | None = None
    part_number: str = "QS1-0001"

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("letters, digits, '_', '.', '-' only (at most 63), starting with a letter or digit")
        return value

    @field_validator("macs")
    @classmethod
    def _check_macs(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        macs = tuple(mac.lower() for mac in value)
        for mac in macs:
            if not _MAC_RE.match(mac):
                raise ValueError(f"{mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
            if int(mac[:2], 16) & 1:
                raise ValueError(f"{mac} is a multicast address")
        if len(set(macs)) != len(macs):
            raise ValueError("MAC addresses must differ")
        if len(macs) > 16:
            raise ValueError("at most 16 NICs")
        return macs

    @field_validator("taps")
    @classmethod
    def _check_taps(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tap in value:
            if not _TAP_RE.match(tap):
                raise ValueError(f"{tap!r} is not a usable tap name")
        if len(set(value)) != len(value):
            raise ValueError("each NIC needs its own tap")
        return value

    @field_validator("serial_number", "manufacturer", "model", "part_number")
    @classmethod
    def _check_text(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                fits = value.isprintable() and len(value.encode("latin-1")) <= 63
            except UnicodeEncodeError:
                fits = False
            if not fits:
                raise ValueError("printable Latin-1 text of at most 63 characters (an IPMI FRU field)")
        return value

    @model_validator(mode="after")
    def _check_layout(self) -> QemuSpec:
        if self.macs is not None and len(self.taps) > len(self.macs):
            raise ValueError(f"{len(self.taps)} taps for {len(self.macs)} NICs")
        for sock in self.sockets:
            if len(bytes(sock)) >= _UNIX_PATH_MAX:
                raise ValueError(f"socket path {sock} is longer than a UNIX socket address allows "
                                 f"({_UNIX_PATH_MAX - 1} bytes): use a shorter directory")
        return self

    # --- derived identity ----------------------------------------------------------------------------------

    @property
    def mac_addresses(self) -> tuple[str, ...]:
        if self.macs is not None:
            return self.macs
        return tuple(qemu_mac(self.index, nic) for nic in range(max(1, len(self.taps))))

    @property
    def system_uuid(self) -> UUID:
        return self.uuid or uuid.uuid5(_UUID_NAMESPACE, f"qemu-machine-{self.index}")

    @property
    def fru(self) -> Fru:
        return Fru(manufacturer=self.manufacturer, model=self.model,
                   serial_number=self.serial_number or f"INGQEMU{self.index:06d}", part_number=self.part_number)

    @property
    def uefi_vars_path(self) -> Path:
        return self.uefi_vars or self.serial_log.with_suffix(".vars.fd")

    @property
    def has_disk(self) -> bool:
        return self.disk is not None

    @property
    def disk_serial(self) -> str:
        """The system disk's serial number, as the guest reads it (virtio-blk allows 20 bytes): the
        deploy agent's inventory reports it and root-device hints can name it."""
        return f"{self.fru.serial_number}D0"[-20:]

    @property
    def events_socket(self) -> Path | None:
        """A second QMP socket (standby only) on which :class:`QemuMachine` watches for guest resets."""
        return None if self.qmp_socket is None else self.qmp_socket.with_name(self.qmp_socket.name + ".ev")

    @property
    def sockets(self) -> tuple[Path, ...]:
        """Every UNIX socket QEMU listens on for this server."""
        found = (self.qmp_socket, self.events_socket, self.console_socket, *self.monitor_sockets)
        return tuple(sock for sock in found if sock is not None)


# ============================================================================================================
# Command line
# ============================================================================================================


def _opt(value: object) -> str:
    """A value inside a QEMU ``key=value,...`` option: commas are doubled."""
    return str(value).replace(",", ",,")


def boot_order(spec: QemuSpec, device: BootDevice) -> list[str]:
    """QOM ids (``nic0``..., ``disk0``) in the order the firmware should try them for a boot ``device``.

    :raises MachineError: (0xCC) the server has nothing to boot that way (no CD drive, no setup entry).
    """
    nics = [f"nic{i}" for i in range(len(spec.mac_addresses))]
    disk = ["disk0"] if spec.has_disk else []
    if device == BootDevice.NONE:
        device = BootDevice.PXE if spec.default_boot == "pxe" else BootDevice.DISK
    if device == BootDevice.PXE:
        if not nics:
            raise MachineError(f"{spec.name} has no NIC to boot from", CC_INVALID_DATA)
        return nics + disk
    if device == BootDevice.DISK:
        return disk + nics  # a diskless server accepts it, then falls through to the network as real ones do
    raise MachineError(f"{spec.name} cannot boot from {device.value}: an emulated server has no CD drive and "
                       "no firmware setup entry to force", CC_INVALID_DATA)


def qemu_argv(spec: QemuSpec, *, standby: bool = True, initial_boot: BootDevice = BootDevice.NONE,
              binary: str = QEMU) -> list[str]:
    """The QEMU command line for ``spec``. Pure: files are prepared by :func:`prepare_files`.

    :param standby: True (the emulated rack): ``-S -no-shutdown``, the process is the chassis and the BMC powers
        the guest over QMP. False (one-shot test VMs): the guest runs at once and ``-no-reboot`` ends the
        process when it reboots or powers off.
    :param initial_boot: whose ``bootindex`` comes first at start (NONE: ``spec.default_boot``).
    """
    argv = [binary, "-name", f"guest={_opt(spec.name)}", "-accel", "tcg", "-nodefaults", "-display", "none",
            "-m", str(spec.memory_mb), "-uuid", str(spec.system_uuid)]
    argv += ["-S", "-no-shutdown"] if standby else ["-no-reboot"]
    fru = spec.fru
    # SMBIOS type 1 (system), 2 (baseboard), 3 (chassis): what the OS and Ingot's agent read match the FRU.
    argv += ["-smbios", f"type=1,manufacturer={_opt(fru.manufacturer)},product={_opt(fru.model)},version=1.0,"
             f"serial={_opt(fru.serial_number)},sku={_opt(fru.part_number)},family=Ingot Lab"]
    argv += ["-smbios", f"type=2,manufacturer={_opt(fru.manufacturer)},product={_opt(fru.model)},"
             f"serial={_opt(fru.serial_number)}"]
    argv += ["-smbios", f"type=3,manufacturer={_opt(fru.manufacturer)},serial={_opt(fru.serial_number)},"
             f"sku={_opt(fru.part_number)}"]
    # graphics=off (what -nographic sets): there is no screen, so the firmware writes its console to the serial
    # port (SeaBIOS's sercon, and through it the iPXE ROM), as a real server's BIOS console redirection does.
    if spec.firmware == Firmware.UEFI:
        argv += ["-machine", "q35,graphics=off",
                 "-drive", f"if=pflash,format=raw,readonly=on,file={_opt(OVMF_CODE)}",
                 "-drive", f"if=pflash,format=raw,file={_opt(spec.uefi_vars_path)}"]
    else:
        argv += ["-machine", "pc,graphics=off"]
    # Serial port: a chardev with logfile= keeps the whole console in serial_log whether or not something is
    # attached to the socket. With no client QEMU drops the output after logging it (the guest never blocks);
    # a client that reads slowly slows the guest's UART down, nothing is lost.
    if spec.console_socket is not None:
        argv += ["-chardev", f"socket,id=serial0,path={_opt(spec.console_socket)},server=on,wait=off,"
                 f"logfile={_opt(spec.serial_log)}"]
    else:
        argv += ["-chardev", f"file,id=serial0,path={_opt(spec.serial_log)}"]
    argv += ["-serial", "chardev:serial0"]
    monitors = [spec.qmp_socket, spec.events_socket if standby else None, *spec.monitor_sockets]
    for i, path in enumerate(monitors):
        if path is not None:
            argv += ["-chardev", f"socket,id=qmp{i},path={_opt(path)},server=on,wait=off",
                     "-mon", f"chardev=qmp{i},mode=control"]
    if spec.firmware_log is not None:
        argv += ["-chardev", f"file,id=fwlog,path={_opt(spec.firmware_log)}",
                 "-device", "isa-debugcon,iobase=0x402,chardev=fwlog"]
    order = boot_order(spec, initial_boot)
    nic_rom = spec.nic_rom or ("firmware" if spec.firmware == Firmware.UEFI else "ipxe")
    for i, mac in enumerate(spec.mac_addresses):
        device = f"virtio-net-pci,id=nic{i},mac={mac}"
        if i < len(spec.taps):
            argv += ["-netdev", f"tap,id=net{i},ifname={spec.taps[i]},script=no,downscript=no"]
            device += f",netdev=net{i}"
        if nic_rom == "firmware":
            device += ",romfile="  # OVMF's VirtioNetDxe + PXE instead of QEMU's iPXE ROM (lab-notes §3)
        if f"nic{i}" in order:
            device += f",bootindex={order.index(f'nic{i}') + 1}"
        argv += ["-device", device]
    if spec.disk is not None:
        argv += ["-blockdev", f"driver=file,filename={_opt(spec.disk)},node-name=disk0-file",
                 "-blockdev", f"driver={spec.disk_format},file=disk0-file,node-name=disk0-format",
                 "-device", f"virtio-blk-pci,id=disk0,drive=disk0-format,serial={_opt(spec.disk_serial)},"
                            f"bootindex={order.index('disk0') + 1}"]
    return argv


def prepare_files(spec: QemuSpec) -> None:
    """Create the directories QEMU writes into, remove stale sockets, and give a UEFI server its own copy of
    the OVMF variable store (kept across restarts, like a real NVRAM).

    :raises FileNotFoundError: OVMF (Debian ``ovmf``) or the disk image is missing.
    """
    for path in (spec.serial_log, spec.firmware_log, spec.qmp_socket, spec.console_socket, *spec.monitor_sockets):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    for sock in spec.sockets:
        if sock.is_socket():
            sock.unlink()
    if spec.disk is not None and not spec.disk.is_file():
        raise FileNotFoundError(f"{spec.name}: disk image {spec.disk} does not exist")
    if spec.firmware == Firmware.UEFI:
        if not OVMF_CODE.is_file() or not OVMF_VARS.is_file():
            raise FileNotFoundError(f"{OVMF_CODE} is missing: UEFI servers need the Debian package ovmf")
        variables = spec.uefi_vars_path
        if not variables.is_file():
            variables.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(OVMF_VARS, variables)


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig TERM --`` (util-linux): QEMU gets SIGTERM when the thread that started it exits.
    The setting survives the exec into QEMU (also through ``ip netns exec``), so a killed lab leaves no QEMU
    behind. Empty where setpriv is missing."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


# ============================================================================================================
# The machine
# ============================================================================================================


# A guest reset this soon after a start is the firmware's own (SeaBIOS reboots at the start of POST, OVMF may
# reset once while it sets up its variables); an OS cannot boot and reboot this fast under TCG. Generous: on
# two CPUs shared with another test worker or more servers, SeaBIOS's reset came later than 5 s, and an order
# put back before it loses the one-time boot.
FIRMWARE_RESET_GRACE_S = 15.0


def _event_time(event: Mapping[str, Any]) -> float:
    stamp = event.get("timestamp") or {}
    return float(stamp.get("seconds", 0)) + float(stamp.get("microseconds", 0)) / 1e6


class QemuMachine:
    """A :class:`lab.bmc.Machine` over a QEMU process on standby power. Thread-safe (one lock).

    :param spec: the server (needs ``qmp_socket``).
    :param argv_prefix: run QEMU through this, e.g. ``["ip", "netns", "exec", NS]`` (which execs QEMU, so
        :attr:`pid` is QEMU's).
    :param die_with_parent: QEMU gets SIGTERM when the thread that called :meth:`start` exits (Linux
        ``PR_SET_PDEATHSIG``, set by ``setpriv``); call :meth:`start` from a long-lived thread.

    A thread watches a second QMP connection for ``RESET`` events from the guest: it puts the boot order back
    after a one-time boot once the firmware's own reset has passed, and drops a pending one-time override as
    soon as the guest's OS has rebooted with it.
    """

    def __init__(self, spec: QemuSpec, *, argv_prefix: Sequence[str] = (), binary: str = QEMU,
                 qemu_log: Path | None = None, start_timeout: float = 30.0, qmp_timeout: float = 10.0,
                 die_with_parent: bool = True) -> None:
        if spec.qmp_socket is None:
            raise ValueError(f"{spec.name}: a QemuMachine needs a qmp_socket")
        self.spec = spec
        self.argv_prefix = tuple(argv_prefix)
        self.binary = binary
        self.qemu_log = qemu_log or spec.serial_log.with_suffix(".qemu.log")
        self.start_timeout = start_timeout
        self.qmp_timeout = qmp_timeout
        self.die_with_parent = die_with_parent
        self._fru = spec.fru
        self._devices = [f"nic{i}" for i in range(len(spec.mac_addresses))] + (["disk0"] if spec.has_disk else [])
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._qmp: QmpClient | None = None
        self._events: QmpClient | None = None
        self._watcher: threading.Thread | None = None
        self._closing = threading.Event()
        self._boot = BootSetting(BootDevice.NONE)
        self._boot_set_at = 0.0  # wall clock (QEMU stamps events with it) of the last set_boot
        self._started_at = 0.0  # wall clock of the last start by the BMC
        self._applied: list[str] | None = None  # the bootindex order QEMU holds now
        self._restore_at: float | None = None  # wall clock by which the watcher puts the order of _boot back

    @classmethod
    def from_spec(cls, spec: QemuSpec | Mapping[str, Any], **kwargs: Any) -> QemuMachine:
        """Build from a :class:`QemuSpec` or the equivalent JSON object (validated: raises pydantic's
        ``ValidationError`` naming the bad fields). ``kwargs`` go to the constructor."""
        return cls(spec if isinstance(spec, QemuSpec) else QemuSpec.model_validate(dict(spec)), **kwargs)

    def __repr__(self) -> str:
        return f"QemuMachine({self.spec.name}, pid={self.pid}, boot={self._boot})"

    # --- process lifecycle ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """QEMU's PID while it runs (for the caller's bookkeeping), else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def argv(self) -> list[str]:
        """The full command line :meth:`start` runs (prefixes included; every one of them execs the next)."""
        guard = _pdeathsig_prefix() if self.die_with_parent else []
        return [*guard, *self.argv_prefix, *qemu_argv(self.spec, standby=True, initial_boot=self._boot.device,
                                                      binary=self.binary)]

    def start(self) -> QemuMachine:
        """Start QEMU paused (the server is off, on standby power) and connect QMP. Returns self.

        :raises QemuStartError: QEMU exited or offered no QMP socket within ``start_timeout``; QEMU's output
            is in the message. Nothing is left running.
        :raises FileNotFoundError: see :func:`prepare_files`.
        """
        with self._lock:
            if self._proc is not None:
                raise RuntimeError(f"{self.spec.name}: already started")
            prepare_files(self.spec)
            argv = self.argv
            self.qemu_log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.qemu_log, "wb")  # noqa: SIM115  (kept open for QEMU; closed in close())
            self._closing.clear()
            log.info("%s: starting %s", self.spec.name, " ".join(argv))
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                start_new_session=True)  # a Ctrl-C at the lab's terminal must not kill the servers under the BMCs
            try:
                self._qmp = self._connect(self.spec.qmp_socket)
                self._events = self._connect(self.spec.events_socket)
                status = self._status()
                if status != "prelaunch":
                    raise QemuStartError(f"{self.spec.name}: QEMU started in state {status!r}, not 'prelaunch'")
                self._applied = boot_order(self.spec, self._boot.device)
            except BaseException:
                self._stop_process(timeout=5)
                raise
            self._watcher = threading.Thread(target=self._watch, args=(self._events,), daemon=True,
                                             name=f"qemu-events-{self.spec.name}")
            self._watcher.start()
            log.info("%s: QEMU pid %s ready (off)", self.spec.name, self._proc.pid)
            return self

    def _connect(self, path: Path | None) -> QmpClient:
        assert self._proc is not None and path is not None
        deadline = time.monotonic() + self.start_timeout
        client = QmpClient(path, timeout=self.qmp_timeout)
        for _ in range(100_000):  # bounded; the deadline ends it first
            if self._proc.poll() is not None:
                raise QemuStartError(f"{self.spec.name}: QEMU exited with {self._proc.returncode} at start:\n"
                                     f"{self._log_tail()}")
            try:
                client.connect(timeout=min(0.5, max(0.05, deadline - time.monotonic())))
            except QmpConnectionError as exc:
                if time.monotonic() >= deadline:
                    raise QemuStartError(f"{self.spec.name}: no QMP on {path} after {self.start_timeout:.0f} s "
                                         f"({exc}):\n{self._log_tail()}") from exc
                continue
            return client
        raise QemuStartError(f"{self.spec.name}: QMP on {path} did not come up")

    def close(self, timeout: float = 10.0) -> int | None:
        """Stop QEMU (QMP ``quit``, then SIGTERM, then SIGKILL, by PID) and release everything. Idempotent.
        Returns QEMU's exit code, or None if it was not running."""
        self._closing.set()
        with self._lock:
            code = self._stop_process(timeout)
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.join(timeout=2.0)
        return code

    def _stop_process(self, timeout: float) -> int | None:
        proc, self._proc = self._proc, None
        qmp, self._qmp = self._qmp, None
        if qmp is not None:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(QmpError):
                    qmp.execute("quit", timeout=min(2.0, timeout))
            qmp.close()
        code: int | None = None
        if proc is not None:
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None and proc.poll() is None:
                    log.warning("%s: sending %s to QEMU pid %s", self.spec.name, sig.name, proc.pid)
                    proc.send_signal(sig)
                try:
                    code = proc.wait(timeout / 2 if sig is None else timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # The watcher holds its client's lock while it waits; QEMU is gone, so its wait ends at once.
        events, self._events = self._events, None
        if events is not None:
            events.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        for sock in self.spec.sockets:
            if sock.is_socket():
                with contextlib.suppress(OSError):
                    sock.unlink()
        self._applied = None
        return code

    def __enter__(self) -> QemuMachine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _log_tail(self) -> str:
        try:
            return self.qemu_log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no QEMU log)"

    # --- guest resets --------------------------------------------------------------------------------------

    def _watch(self, client: QmpClient) -> None:
        """Thread: guest-initiated RESETs and the deferred restore of the boot order, until close or QEMU exits."""
        def by_guest(event: Mapping[str, Any]) -> bool:
            return bool((event.get("data") or {}).get("guest"))

        while not self._closing.is_set():
            event: Mapping[str, Any] | None
            try:
                event = client.wait_event("RESET", timeout=0.25, match=by_guest)
            except QmpTimeoutError:
                event = None
            except QmpError:
                return  # QEMU went away (close() or a crash)
            with self._lock:
                if self._closing.is_set():
                    return
                try:
                    if event is not None:
                        self._guest_reset(_event_time(event))
                    elif self._restore_at is not None and time.time() >= self._restore_at:
                        self._restore_order()
                except MachineError as exc:
                    log.warning("%s: after a guest reset: %s", self.spec.name, exc)

    def _guest_reset(self, at: float) -> None:
        """The guest reset itself: the firmware's own reset right after a start, or a reboot by its OS."""
        if at < self._started_at + FIRMWARE_RESET_GRACE_S:
            if self._restore_at is not None:
                self._restore_order()  # the firmware has reset; the order it boots with is fixed now
            return
        if self._boot.device == BootDevice.NONE or self._boot.persistent or at < self._boot_set_at:
            return
        log.info("%s: the guest rebooted with the one-time boot %s", self.spec.name, self._boot.device.value)
        self._boot = BootSetting(BootDevice.NONE)
        self._apply_order(boot_order(self.spec, BootDevice.NONE))

    def _restore_order(self) -> None:
        self._restore_at = None
        self._apply_order(boot_order(self.spec, self._boot.device))

    # --- QMP plumbing --------------------------------------------------------------------------------------

    def _execute(self, command: str, **arguments: Any) -> Any:
        """One QMP command; every failure becomes a MachineError the BMC can answer."""
        qmp, proc = self._qmp, self._proc
        if qmp is None or proc is None:
            raise MachineError(f"{self.spec.name}: QEMU is not running", CC_DESTINATION_UNAVAILABLE)
        try:
            return qmp.execute(command, arguments)
        except QmpCommandError as exc:
            raise MachineError(f"{self.spec.name}: QEMU refused {command}: {exc.error_class}: {exc.desc}",
                               CC_NOT_IN_PRESENT_STATE) from exc
        except QmpError as exc:
            code = proc.poll()
            gone = f" (QEMU exited with {code})" if code is not None else ""
            raise MachineError(f"{self.spec.name}: QMP {command} failed{gone}: {exc}",
                               CC_DESTINATION_UNAVAILABLE if code is not None else CC_UNSPECIFIED) from exc

    def _status(self) -> str:
        return str(self._execute("query-status")["status"])

    def _reset_and_wait(self) -> None:
        qmp = self._qmp
        if qmp is None:
            raise MachineError(f"{self.spec.name}: QEMU is not running", CC_DESTINATION_UNAVAILABLE)
        qmp.take_events()  # nobody reads this connection's events: drop them, keep the buffer small
        self._execute("system_reset")
        try:
            # QEMU's main loop carries the reset out after the reply; the event says it happened.
            qmp.wait_event("RESET", timeout=self.qmp_timeout,
                           match=lambda e: not (e.get("data") or {}).get("guest"))
        except QmpError as exc:
            raise MachineError(f"{self.spec.name}: no RESET event after system_reset: {exc}") from exc

    def _apply_order(self, order: list[str]) -> None:
        if order == self._applied:
            return
        self._applied = None  # unknown until every qom-set went through
        for device in self._devices:  # QEMU refuses an index another device holds: clear them all first
            self._execute("qom-set", path=f"/machine/peripheral/{device}", property="bootindex", value=-1)
        for position, device in enumerate(order, start=1):
            self._execute("qom-set", path=f"/machine/peripheral/{device}", property="bootindex", value=position)
        self._applied = order

    def _start_guest(self) -> None:
        """From any off state: boot order, reset (the firmware re-reads the order), run."""
        self._restore_at = None
        self._apply_order(boot_order(self.spec, self._boot.device))
        self._started_at = time.time()
        self._reset_and_wait()
        self._execute("cont")
        self._after_start()

    def _after_start(self) -> None:
        if self._boot.device != BootDevice.NONE and not self._boot.persistent:
            log.info("%s: one-time boot %s used", self.spec.name, self._boot.device.value)
            self._boot = BootSetting(BootDevice.NONE)
            # QEMU keeps the one-time order until the firmware's own reset has passed (see the module docstring).
            self._restore_at = self._started_at + FIRMWARE_RESET_GRACE_S

    # --- lab.bmc.Machine -----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def power_state(self) -> PowerState:
        with self._lock:
            return PowerState.ON if self._status() in _ON_STATES else PowerState.OFF

    def power_on(self) -> None:
        with self._lock:
            if self._status() in _ON_STATES:
                return  # already on: not a second start
            self._start_guest()

    def power_off(self) -> None:
        """Hard off: freeze the CPUs, then reset so that the next start begins in the firmware."""
        with self._lock:
            self._execute("stop")
            self._reset_and_wait()

    def shutdown(self) -> None:
        """ACPI power button. Whether the guest powers off is up to its OS (firmware alone ignores it)."""
        with self._lock:
            if self._status() in _ON_STATES:
                self._execute("system_powerdown")

    def reset(self) -> None:
        with self._lock:
            if self._status() not in _ON_STATES:
                return  # a reset of a server that is off does nothing (as MemoryMachine)
            self._restore_at = None
            self._apply_order(boot_order(self.spec, self._boot.device))
            self._started_at = time.time()
            self._reset_and_wait()
            self._after_start()

    def cycle(self) -> None:
        with self._lock:
            self._execute("stop")
            self._start_guest()  # its reset is the "off" half: the guest loses all state

    @property
    def boot(self) -> BootSetting:
        with self._lock:
            return self._boot

    def set_boot(self, setting: BootSetting) -> None:
        """The override for the next start. QEMU gets the new order at once, so a reboot by the guest honours
        it too. :raises MachineError: (0xCC) this server cannot boot that way (nothing has changed then)."""
        with self._lock:
            order = boot_order(self.spec, setting.device)
            self._boot = BootSetting(setting.device, persistent=setting.persistent) \
                if setting.device != BootDevice.NONE else BootSetting(BootDevice.NONE)
            self._boot_set_at = time.time()
            self._restore_at = None
            if self._qmp is not None:
                self._apply_order(order)

    @property
    def system_guid(self) -> UUID:
        return self.spec.system_uuid

    @property
    def fru(self) -> Fru:
        return self._fru

    @property
    def mac_addresses(self) -> tuple[str, ...]:
        return self.spec.mac_addresses

    # --- for observers -------------------------------------------------------------------------------------

    def bootindex(self) -> dict[str, int]:
        """QEMU's current ``bootindex`` per device (``qom-get``), e.g. ``{"nic0": 1, "disk0": 2}``."""
        with self._lock:
            return {device: int(self._execute("qom-get", path=f"/machine/peripheral/{device}",
                                              property="bootindex")) for device in self._devices}
