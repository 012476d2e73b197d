"""The server's hardware inventory, read from ``/proc`` and ``/sys`` (no ``lshw``, ``lsblk`` or
``dmidecode`` in the ramdisk).

Everything is plain dicts, lists, strings, ints, bools and None, ready for the report the agent
sends the appliance as JSON (:mod:`agent.client`). Every
function takes ``root`` (default ``/``), the directory ``proc`` and ``sys`` are read under, so
tests build a fake tree. A file that is missing or unreadable (``product_serial`` needs root; a
down NIC's ``carrier`` raises EINVAL) gives None, never an exception: an inventory with a gap
is better than no inventory.

Disks are the block devices with a ``device`` link (real hardware: not ``dm-*``, ``md*``,
``nbd*``, ``zram*``), minus ``loop*``/``ram*`` and the CD/floppy drives ``sr*``/``fd*``, which
are never an OS disk. A disk's ``serial`` is the first found of:

1. ``device/serial`` - SCSI/SAS drivers that export it, NVMe (the controller's serial);
2. ``<disk>/serial`` - virtio-blk (QEMU's ``-drive serial=``);
3. ``device/vpd_pg80`` - the SCSI Unit Serial Number VPD page; where a SATA disk's serial is,
   as libata emulates the page from the ATA IDENTIFY data (there is no sysfs ``serial`` file);
4. ``device/wwid`` or ``<disk>/wwid`` - a last resort: a stable identifier, not the label's serial.

``wwn`` is ``device/wwn`` when a driver exports it, else taken from the ``wwid``: an NAA name
(``naa.5000c500...``) as ``0x5000c500...``, an EUI-64 (``eui....``) as is, which is how udev
spells ``ID_WWN``; a T10 vendor id is no WWN (None).

Runs on the target (``python3-minimal`` plus ``libpython3-stdlib``): ``os`` and ``typing`` only.
"""

from __future__ import annotations

import os
from typing import NotRequired, TypedDict

from agent.lldp import Neighbour

MiB = 1 << 20
SECTOR = 512  # /sys/block/<disk>/size counts 512-byte sectors whatever the disk's block size
SKIPPED_DISK_PREFIXES = ("loop", "ram", "zram", "sr", "fd")
DMI_FIELDS = ("sys_vendor", "product_name", "product_serial", "product_uuid", "bios_version")


class Cpu(TypedDict):
    model: str | None
    count: int
    architecture: str


class Disk(TypedDict):
    name: str
    size_bytes: int
    rotational: bool
    removable: bool
    model: str | None
    vendor: str | None
    serial: str | None
    wwn: str | None


class Nic(TypedDict):
    name: str
    mac: str | None
    link: bool
    speed_mbps: int | None
    driver: str | None
    lldp: NotRequired[Neighbour | None]  # only when the agent listened (agent.lldp)


class Inventory(TypedDict):
    cpu: Cpu
    memory_bytes: int | None
    physical_memory_bytes: int | None
    disks: list[Disk]
    nics: list[Nic]
    system: dict[str, str | None]


def _path(root: str, *parts: str) -> str:
    return os.path.join(root, *parts)


def _read(path: str) -> str | None:
    """The file's text, stripped, or None when it is missing, unreadable or empty."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().strip()
    except OSError:  # missing, PermissionError, IsADirectoryError, EINVAL from a driver
        return None
    return text or None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


# -- CPU and memory --------------------------------------------------------------------------

def cpu(root: str = "/") -> Cpu:
    """The CPU model (the first ``model name``), the number of logical CPUs (``processor``
    entries) and the kernel's architecture, from ``/proc/cpuinfo``."""
    model = None
    count = 0
    text = _read(_path(root, "proc/cpuinfo")) or ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "processor":
            count += 1
        elif key == "model name" and model is None:
            model = value.strip() or None
    return {"model": model, "count": count, "architecture": os.uname().machine}


def memory_bytes(root: str = "/") -> int | None:
    """``MemTotal`` from ``/proc/meminfo`` in bytes (the kernel writes kB, meaning KiB)."""
    text = _read(_path(root, "proc/meminfo")) or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "MemTotal":
            fields = value.split()
            if fields and fields[0].isdigit():
                scale = 1024 if len(fields) > 1 and fields[1].lower() == "kb" else 1
                return int(fields[0]) * scale
    return None


def dimm_size_bytes(raw: bytes) -> int | None:
    """The size of one SMBIOS Memory Device (type 17) structure, or None for an empty slot or an
    unknown size. SMBIOS 3.x section 7.18: the WORD at 0x0C is the size in MiB, or in KiB when bit
    15 is set; 0x7FFF means the DWORD "Extended Size" at 0x1C holds it in MiB; 0 is no DIMM,
    0xFFFF unknown."""
    if len(raw) < 0x0E or raw[0] != 17:
        return None
    size = raw[0x0C] | (raw[0x0D] << 8)
    if size in (0, 0xFFFF):
        return None
    if size == 0x7FFF:
        if raw[1] < 0x20 or len(raw) < 0x20:
            return None
        extended = int.from_bytes(raw[0x1C:0x20], "little") & 0x7FFFFFFF
        return extended * MiB or None
    return (size & 0x7FFF) * (1024 if size & 0x8000 else MiB)


def physical_memory_bytes(root: str = "/") -> int | None:
    """The installed memory: the sum of the SMBIOS Memory Devices the firmware describes in
    ``/sys/firmware/dmi/entries/17-*/raw`` (readable by root). Unlike ``MemTotal`` it is what
    was bought, not what is left after the firmware and the kernel took their share: the figure
    an inventory is compared with. None when the firmware lists no DIMM."""
    base = _path(root, "sys/firmware/dmi/entries")
    total = 0
    for name in _listdir(base):
        if not name.startswith("17-"):
            continue
        try:
            with open(os.path.join(base, name, "raw"), "rb") as f:
                size = dimm_size_bytes(f.read())
        except OSError:
            continue
        total += size or 0
    return total or None


# -- disks -----------------------------------------------------------------------------------

def vpd_pg80_serial(data: bytes) -> str | None:
    """The serial in a Unit Serial Number VPD page (SPC: byte 1 is the page code ``0x80``,
    bytes 2-3 the length of the ASCII serial that follows the 4-byte header)."""
    if len(data) < 4 or data[1] != 0x80:
        return None
    length = (data[2] << 8) | data[3]
    serial = data[4:4 + length].decode("ascii", errors="replace").strip(" \x00")
    return serial or None


def _read_vpd_pg80(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return vpd_pg80_serial(f.read())
    except OSError:
        return None


def wwn_from_wwid(wwid: str | None) -> str | None:
    """The WWN in a sysfs ``wwid``, spelled as udev's ``ID_WWN``, or None (module docstring)."""
    if not wwid:
        return None
    kind, _, value = wwid.strip().partition(".")
    kind = kind.lower()
    if kind == "naa" and value:
        return "0x" + value.lower()
    if kind == "eui" and value:
        return "eui." + value.lower()
    return None


def disk(root: str, name: str) -> Disk:
    """One disk, from ``/sys/block/<name>`` (the reading order is the module docstring's)."""
    base = _path(root, "sys/block", name)
    dev = os.path.join(base, "device")
    wwid = _read(os.path.join(dev, "wwid")) or _read(os.path.join(base, "wwid"))
    serial = (_read(os.path.join(dev, "serial")) or _read(os.path.join(base, "serial"))
              or _read_vpd_pg80(os.path.join(dev, "vpd_pg80")) or wwid)
    wwn = _read(os.path.join(dev, "wwn")) or _read(os.path.join(base, "wwn")) or wwn_from_wwid(wwid)
    return {
        "name": name,
        "size_bytes": (_read_int(os.path.join(base, "size")) or 0) * SECTOR,
        "rotational": _read(os.path.join(base, "queue/rotational")) == "1",
        "removable": _read(os.path.join(base, "removable")) == "1",
        "model": _read(os.path.join(dev, "model")),
        "vendor": _read(os.path.join(dev, "vendor")),
        "serial": serial,
        "wwn": wwn,
    }


def disks(root: str = "/") -> list[Disk]:
    """The real disks (module docstring), sorted by name."""
    block = _path(root, "sys/block")
    return [disk(root, name) for name in _listdir(block)
            if not name.startswith(SKIPPED_DISK_PREFIXES) and os.path.exists(os.path.join(block, name, "device"))]


# -- NICs ------------------------------------------------------------------------------------

def nics(root: str = "/") -> list[Nic]:
    """The physical network interfaces (those with a ``device`` link; not ``lo``, bridges,
    bonds, VLANs or veths), sorted by name. ``link`` is the carrier; ``speed_mbps`` is None
    when the driver does not know it (``-1``, or the read fails while the link is down)."""
    net = _path(root, "sys/class/net")
    found: list[Nic] = []
    for name in _listdir(net):
        base = os.path.join(net, name)
        if name == "lo" or not os.path.exists(os.path.join(base, "device")):
            continue
        speed = _read_int(os.path.join(base, "speed"))
        try:
            driver: str | None = os.path.basename(os.readlink(os.path.join(base, "device/driver"))) or None
        except OSError:
            driver = None
        mac = _read(os.path.join(base, "address"))
        found.append({
            "name": name,
            "mac": mac.lower() if mac else None,
            "link": _read(os.path.join(base, "carrier")) == "1",
            "speed_mbps": speed if speed is not None and speed > 0 else None,
            "driver": driver,
        })
    return found


# -- the system ------------------------------------------------------------------------------

def system(root: str = "/") -> dict[str, str | None]:
    """The DMI identity of the machine from ``/sys/class/dmi/id`` (``product_serial`` and
    ``product_uuid`` are readable by root only: None otherwise)."""
    base = _path(root, "sys/class/dmi/id")
    return {field: _read(os.path.join(base, field)) for field in DMI_FIELDS}


def collect(root: str = "/") -> Inventory:
    """The whole inventory."""
    return {
        "cpu": cpu(root),
        "memory_bytes": memory_bytes(root),
        "physical_memory_bytes": physical_memory_bytes(root),
        "disks": disks(root),
        "nics": nics(root),
        "system": system(root),
    }
