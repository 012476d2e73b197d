"""agent.inventory against a fake /proc and /sys tree, and (shapes only) against this machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.inventory import (
    collect,
    cpu,
    dimm_size_bytes,
    disks,
    memory_bytes,
    nics,
    physical_memory_bytes,
    system,
    vpd_pg80_serial,
    wwn_from_wwid,
)

CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz
flags\t\t: fpu vme

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz
flags\t\t: fpu vme
"""
MEMINFO = "MemTotal:       16318544 kB\nMemFree:         1234567 kB\n"


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def vpd_pg80(serial: str) -> bytes:
    data = serial.encode()
    return bytes([0, 0x80, len(data) >> 8, len(data) & 0xFF]) + data


def fake_block(root: Path) -> None:
    block = root / "sys/block"
    # sda: a SATA HDD. Its serial is in device/serial here to check that file wins; on a real
    # kernel a SATA disk has only vpd_pg80 (also given, with another value, to show the order).
    write(block / "sda/size", "1953525168\n")  # 1 TB: 931 GiB
    write(block / "sda/removable", "0\n")
    write(block / "sda/queue/rotational", "1\n")
    write(block / "sda/device/model", "ST1000NM0033-9ZM\n")
    write(block / "sda/device/vendor", "ATA     \n")
    write(block / "sda/device/serial", " Z1W0ABCD \n")
    write(block / "sda/device/vpd_pg80", vpd_pg80("FROM-VPD"))
    write(block / "sda/device/wwid", "naa.5000C500A1B2C3D4\n")
    # sdb: a USB stick, serial from the VPD page only.
    write(block / "sdb/size", "31266816\n")  # 16 GB
    write(block / "sdb/removable", "1\n")
    write(block / "sdb/queue/rotational", "0\n")
    write(block / "sdb/device/model", "Ultra Fit\n")
    write(block / "sdb/device/vendor", "SanDisk \n")
    write(block / "sdb/device/vpd_pg80", vpd_pg80("4C530001230607110192") + b"\x00\x00")
    write(block / "sdb/device/wwid", "t10.SanDisk Ultra Fit 4C530001230607110192\n")
    # vda: virtio-blk, serial in /sys/block/vda/serial, no model.
    write(block / "vda/size", "83886080\n")  # 40 GiB
    write(block / "vda/removable", "0\n")
    write(block / "vda/queue/rotational", "1\n")
    write(block / "vda/serial", "ingot-root\n")
    write(block / "vda/device/vendor", "0x1af4\n")
    # nvme0n1: serial from the controller, wwn from the namespace's wwid.
    write(block / "nvme0n1/size", "1000215216\n")
    write(block / "nvme0n1/removable", "0\n")
    write(block / "nvme0n1/queue/rotational", "0\n")
    write(block / "nvme0n1/wwid", "eui.0025385B71B0A1C2\n")
    write(block / "nvme0n1/device/model", "Samsung SSD 970 EVO Plus 500GB\n")
    write(block / "nvme0n1/device/serial", "S4EVNX0N123456\n")
    # Skipped: a loop device (it has no device link anyway, but the name alone skips it), a
    # CD drive (has a device link), a device-mapper volume (no device link).
    write(block / "loop0/size", "1024\n")
    write(block / "sr0/size", "9180416\n")
    (block / "sr0/device").mkdir()
    write(block / "dm-0/size", "83886080\n")


def fake_net(root: Path) -> None:
    net = root / "sys/class/net"
    write(net / "lo/address", "00:00:00:00:00:00\n")
    write(net / "lo/carrier", "1\n")
    # eth0: up at 1 Gb/s; device/driver is a symlink into the driver's directory, as in sysfs.
    write(net / "eth0/address", "52:54:00:AB:CD:01\n")
    write(net / "eth0/carrier", "1\n")
    write(net / "eth0/speed", "1000\n")
    (root / "sys/bus/pci/drivers/e1000e").mkdir(parents=True)
    (net / "eth0/device").mkdir()
    os.symlink(root / "sys/bus/pci/drivers/e1000e", net / "eth0/device/driver")
    # eth1: down. The kernel fails the reads of carrier and speed then (EINVAL); here carrier is
    # a directory, so open() fails too, and speed is the -1 some drivers write instead.
    write(net / "eth1/address", "52:54:00:ab:cd:02\n")
    (net / "eth1/carrier").mkdir()
    write(net / "eth1/speed", "-1\n")
    (net / "eth1/device").mkdir()
    # br0: a bridge, virtual: no device link.
    write(net / "br0/address", "52:54:00:ab:cd:03\n")
    write(net / "br0/carrier", "1\n")


def fake_dmi(root: Path) -> None:
    dmi = root / "sys/class/dmi/id"
    write(dmi / "sys_vendor", "Dell Inc.\n")
    write(dmi / "product_name", "PowerEdge R640\n")
    write(dmi / "product_uuid", "4c4c4544-0042-3510-8052-b4c04f4e4d32\n")
    # product_serial is root-only on a real machine; tests may run as root, where chmod 000 does
    # not stop a read, so a directory stands in for the unreadable file. No bios_version file.
    (dmi / "product_serial").mkdir()


def memory_device(size: int, extended: int = 0, length: int = 0x28) -> bytes:
    """An SMBIOS type 17 structure's formatted area (the fields before and after Size zeroed)."""
    raw = bytearray(length)
    raw[0], raw[1] = 17, length
    raw[0x0C:0x0E] = size.to_bytes(2, "little")
    if length >= 0x20:
        raw[0x1C:0x20] = extended.to_bytes(4, "little")
    return bytes(raw)


def fake_dimms(root: Path) -> None:
    entries = root / "sys/firmware/dmi/entries"
    write(entries / "17-0/raw", memory_device(16384))  # 16 GiB in MiB
    write(entries / "17-1/raw", memory_device(0))  # an empty slot
    write(entries / "17-2/raw", memory_device(0x7FFF, extended=65536))  # 64 GiB, the extended field
    write(entries / "16-0/raw", b"\x10\x17" + bytes(21))  # the memory array: not a DIMM


@pytest.fixture
def root(tmp_path: Path) -> str:
    write(tmp_path / "proc/cpuinfo", CPUINFO)
    write(tmp_path / "proc/meminfo", MEMINFO)
    fake_dimms(tmp_path)
    fake_block(tmp_path)
    fake_net(tmp_path)
    fake_dmi(tmp_path)
    return str(tmp_path)


def test_cpu(root: str) -> None:
    assert cpu(root) == {"model": "Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz", "count": 2,
                         "architecture": os.uname().machine}


def test_memory_in_bytes(root: str) -> None:
    assert memory_bytes(root) == 16318544 * 1024


def test_physical_memory_is_the_sum_of_the_dimms(root: str) -> None:
    assert physical_memory_bytes(root) == (16 + 64) << 30


@pytest.mark.parametrize(("raw", "size"), [
    (memory_device(768), 768 << 20),  # QEMU's one DIMM for -m 768
    (memory_device(0x8000 | 512), 512 << 10),  # bit 15: KiB
    (memory_device(0xFFFF), None),  # unknown
    (memory_device(0), None),  # empty slot
    (memory_device(0x7FFF, length=0x1C), None),  # extended size announced but the structure is too short
    (memory_device(1024)[:0x0D], None),  # truncated
    (b"\x11", None),
    (b"\x10" + memory_device(1024)[1:], None),  # not type 17
])
def test_dimm_size(raw: bytes, size: int | None) -> None:
    assert dimm_size_bytes(raw) == size


def test_disks(root: str) -> None:
    assert disks(root) == [
        {"name": "nvme0n1", "size_bytes": 1000215216 * 512, "rotational": False, "removable": False,
         "model": "Samsung SSD 970 EVO Plus 500GB", "vendor": None, "serial": "S4EVNX0N123456",
         "wwn": "eui.0025385b71b0a1c2"},
        {"name": "sda", "size_bytes": 1953525168 * 512, "rotational": True, "removable": False,
         "model": "ST1000NM0033-9ZM", "vendor": "ATA", "serial": "Z1W0ABCD", "wwn": "0x5000c500a1b2c3d4"},
        {"name": "sdb", "size_bytes": 31266816 * 512, "rotational": False, "removable": True,
         "model": "Ultra Fit", "vendor": "SanDisk", "serial": "4C530001230607110192", "wwn": None},
        {"name": "vda", "size_bytes": 40 << 30, "rotational": True, "removable": False,
         "model": None, "vendor": "0x1af4", "serial": "ingot-root", "wwn": None},
    ]


def test_disk_serial_falls_back_to_the_wwid(tmp_path: Path) -> None:
    write(tmp_path / "sys/block/sdc/size", "2048\n")
    write(tmp_path / "sys/block/sdc/device/wwid", "t10.ATA     QEMU HARDDISK   QM00001\n")
    (found,) = disks(str(tmp_path))
    assert found["serial"] == "t10.ATA     QEMU HARDDISK   QM00001"
    assert found["wwn"] is None
    assert (found["rotational"], found["removable"], found["size_bytes"]) == (False, False, 2048 * 512)


@pytest.mark.parametrize(("data", "serial"), [
    (vpd_pg80("ABC123"), "ABC123"),
    (vpd_pg80("  PADDED  ") + b"\x00", "PADDED"),
    (bytes([0, 0x83, 0, 3]) + b"abc", None),  # another VPD page
    (b"\x00\x80", None),
    (vpd_pg80(""), None),
])
def test_vpd_pg80_serial(data: bytes, serial: str | None) -> None:
    assert vpd_pg80_serial(data) == serial


@pytest.mark.parametrize(("wwid", "wwn"), [
    ("naa.600508B1001C2E8F", "0x600508b1001c2e8f"),
    ("eui.0025385B71B0A1C2", "eui.0025385b71b0a1c2"),
    ("t10.ATA QEMU HARDDISK QM00001", None),
    ("nvme.8086-...", None),
    ("", None),
    (None, None),
])
def test_wwn_from_wwid(wwid: str | None, wwn: str | None) -> None:
    assert wwn_from_wwid(wwid) == wwn


def test_nics(root: str) -> None:
    assert nics(root) == [
        {"name": "eth0", "mac": "52:54:00:ab:cd:01", "link": True, "speed_mbps": 1000, "driver": "e1000e"},
        {"name": "eth1", "mac": "52:54:00:ab:cd:02", "link": False, "speed_mbps": None, "driver": None},
    ]


def test_system_with_an_unreadable_serial(root: str) -> None:
    assert system(root) == {"sys_vendor": "Dell Inc.", "product_name": "PowerEdge R640", "product_serial": None,
                            "product_uuid": "4c4c4544-0042-3510-8052-b4c04f4e4d32", "bios_version": None}


def test_collect_combines_everything(root: str) -> None:
    inventory = collect(root)
    assert inventory == {"cpu": cpu(root), "memory_bytes": memory_bytes(root),
                         "physical_memory_bytes": physical_memory_bytes(root), "disks": disks(root),
                         "nics": nics(root), "system": system(root)}


def test_an_empty_root_gives_an_empty_inventory(tmp_path: Path) -> None:
    assert collect(str(tmp_path)) == {
        "cpu": {"model": None, "count": 0, "architecture": os.uname().machine},
        "memory_bytes": None, "physical_memory_bytes": None, "disks": [], "nics": [],
        "system": dict.fromkeys(("sys_vendor", "product_name", "product_serial", "product_uuid", "bios_version")),
    }


def _plain(value: object) -> bool:
    """Whether ``value`` is made of what a JSON encoder takes: dicts with str keys, lists,
    str, int, bool, None."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | int | bool)


def test_collect_on_this_machine_has_the_right_shapes() -> None:
    inventory = collect()
    assert _plain(inventory)
    assert inventory["cpu"]["count"] >= 1
    assert inventory["cpu"]["architecture"] == os.uname().machine
    assert isinstance(inventory["memory_bytes"], int) and inventory["memory_bytes"] > 0
    for found in inventory["disks"]:
        assert isinstance(found["name"], str) and isinstance(found["size_bytes"], int)
        assert not found["name"].startswith(("loop", "ram", "zram"))
        assert isinstance(found["rotational"], bool) and isinstance(found["removable"], bool)
    assert [d["name"] for d in inventory["disks"]] == sorted(d["name"] for d in inventory["disks"])
    for nic in inventory["nics"]:
        assert nic["name"] != "lo" and isinstance(nic["link"], bool)
        assert nic["speed_mbps"] is None or nic["speed_mbps"] > 0
    assert set(inventory["system"]) == {"sys_vendor", "product_name", "product_serial", "product_uuid",
                                        "bios_version"}
