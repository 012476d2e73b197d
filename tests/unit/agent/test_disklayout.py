"""agent.disklayout over partition tables built in memory: MBR, GPT, 4Kn, and hostile ones."""

from __future__ import annotations

import binascii
import struct
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from agent.disklayout import MAX_GPT_TABLE, used_bytes

MiB = 1 << 20
GiB = 1 << 30
LINUX = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4").bytes_le
ESP = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").bytes_le


def reader(data: bytes | bytearray) -> Callable[[int, int], bytes]:
    """``read_at`` over ``data``: the first bytes of the disk (past them it reads as short)."""
    return lambda offset, length: bytes(data[offset:offset + length])


def mbr(*entries: tuple[int, int, int] | tuple[int, int, int, int], signature: bytes = b"\x55\xaa",
        sector: int = 512) -> bytearray:
    """A first sector with GRUB's first bytes and the entries ``(type, first LBA, sectors[, boot flag])``."""
    data = bytearray(sector)
    data[:3] = b"\xeb\x63\x90"
    for i, (kind, first, sectors, *flag) in enumerate(entries):
        struct.pack_into("<B3xB3xII", data, 446 + 16 * i, flag[0] if flag else 0, kind, first, sectors)
    data[510:512] = signature
    return data


_HEADER_FIELDS = {"signature": (0, "8s"), "header_size": (12, "I"), "header_crc": (16, "I"), "my_lba": (24, "Q"),
                  "table_lba": (72, "Q"), "count": (80, "I"), "entry_size": (84, "I"), "table_crc": (88, "I")}


def gpt(partitions: list[tuple[int, int]], disk_size: int, *, sector: int = 512, count: int = 128,
        entry_size: int = 128, table_lba: int = 2) -> bytearray:
    """A protective MBR, a sound primary GPT header and its entry table for ``(first LBA, last
    LBA)`` partitions (the backup GPT is never read)."""
    sectors = disk_size // sector
    table = bytearray(count * entry_size)
    for i, (first, last) in enumerate(partitions):
        at = i * entry_size
        table[at:at + 16] = ESP if i == 0 else LINUX
        table[at + 16:at + 32] = uuid.uuid4().bytes_le
        struct.pack_into("<QQ", table, at + 32, first, last)
    data = bytearray(max(table_lba * sector + len(table), 2 * sector))
    data[:sector] = mbr((0xEE, 1, min(sectors - 1, 0xFFFFFFFF)), sector=sector)
    data[sector:sector + 92] = struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, 1, sectors - 1, 34,
                                           sectors - 34, uuid.uuid4().bytes, table_lba, count, entry_size, 0)
    data[table_lba * sector:table_lba * sector + len(table)] = table
    return patch_header(data, sector=sector, table_crc=binascii.crc32(table))


def patch_header(data: bytearray, *, sector: int = 512, **fields: Any) -> bytearray:
    """``data`` with GPT header fields changed and its CRC32 made right again (unless
    ``header_crc`` is one of them)."""
    for name, value in fields.items():
        at, kind = _HEADER_FIELDS[name]
        struct.pack_into("<" + kind, data, sector + at, value)
    if "header_crc" not in fields:
        size = min(struct.unpack_from("<I", data, sector + 12)[0], sector)
        header = bytearray(data[sector:sector + size])
        header[16:20] = b"\0" * 4
        struct.pack_into("<I", data, sector + 16, binascii.crc32(header))
    return data


# -- MBR -------------------------------------------------------------------------------------

def test_mbr_the_end_of_the_last_partition_rounded_up_to_a_mib() -> None:
    disk = mbr((0x83, 2048, 10_000))  # ends at 1 MiB + 5_120_000 bytes
    assert used_bytes(reader(disk), 40 * GiB) == (6 * MiB, "mbr")


def test_mbr_the_furthest_entry_counts_whatever_its_slot() -> None:
    disk = mbr((0x83, 2048, 2048), (0x82, 8 * 2048, 2048), (0x83, 4 * 2048, 2048), (0x00, 0, 0))
    assert used_bytes(reader(disk), 40 * GiB) == (9 * MiB, "mbr")


def test_mbr_an_extended_partition_counts_with_its_whole_extent() -> None:
    # The logical partitions inside it are not read: the extended entry's end covers them.
    disk = mbr((0x83, 2048, 2048, 0x80), (0x05, 4096, 100 * 2048 - 1))  # 2 MiB in, a sector short of 100 MiB
    assert used_bytes(reader(disk), 40 * GiB) == (102 * MiB, "mbr")


def test_mbr_entries_that_are_unused_or_empty_do_not_count() -> None:
    disk = mbr((0x83, 2048, 2048), (0x00, 2048, 1 << 30), (0x83, 1 << 30, 0))
    assert used_bytes(reader(disk), 40 * GiB) == (2 * MiB, "mbr")


def test_mbr_a_partition_past_the_end_of_the_disk_is_capped_at_its_size() -> None:
    disk = mbr((0x83, 2048, 0xFFFFFFFF))
    assert used_bytes(reader(disk), 40 * GiB) == (40 * GiB, "mbr")
    assert used_bytes(reader(disk), 12 * MiB + 512) == (12 * MiB + 512, "mbr")


def test_the_rounding_never_goes_past_the_end_of_the_disk() -> None:
    disk = mbr((0x83, 1, 10))
    assert used_bytes(reader(disk), 3000) == (3000, "mbr")


@pytest.mark.parametrize("first_sector", [
    bytes(512),  # a blank disk
    bytes(mbr((0x83, 2048, 2048), signature=b"\x55\xab")),  # no 55 AA
    bytes(mbr()),  # a table with no partition: nothing to go by
    bytes(mbr((0x83, 2048, 2048, 0x12))),  # a boot flag Linux would not take
    bytes(mbr((0x83, 2048, 2048), (0x83, 4096, 2048, 0x81))),
])
def test_no_table_to_go_by_is_the_whole_disk(first_sector: bytes) -> None:
    assert used_bytes(reader(first_sector), 40 * GiB) == (40 * GiB, "whole")


@pytest.mark.parametrize(("at", "name"), [(3, b"NTFS    "), (3, b"EXFAT   "), (54, b"FAT16   "), (82, b"FAT32   ")])
def test_a_file_system_on_the_bare_disk_is_the_whole_disk(at: int, name: bytes) -> None:
    # Its boot sector ends in 55 AA too, and its code where the MBR has entries may parse as some.
    sector = mbr((0x83, 2048, 2048))
    sector[at:at + len(name)] = name
    assert used_bytes(reader(sector), 40 * GiB) == (40 * GiB, "whole")


def test_a_disk_shorter_than_a_sector_is_the_whole_disk() -> None:
    assert used_bytes(reader(b"\x55\xaa" * 50), 100) == (100, "whole")


def test_a_zero_size_disk_is_nothing_to_read() -> None:
    def read_at(offset: int, length: int) -> bytes:
        raise AssertionError("nothing to read on an empty disk")

    assert used_bytes(read_at, 0) == (0, "whole")


def test_a_read_error_goes_through() -> None:
    def read_at(offset: int, length: int) -> bytes:
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        used_bytes(read_at, 40 * GiB)


@pytest.mark.parametrize("sector_size", [0, 256, 1000, 3072])
def test_a_sector_size_must_be_a_power_of_two_of_at_least_512(sector_size: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        used_bytes(reader(mbr((0x83, 1, 1))), GiB, sector_size=sector_size)


# -- GPT -------------------------------------------------------------------------------------

def test_gpt_the_last_used_lba_rounded_up_to_a_mib() -> None:
    disk = gpt([(2048, 206_847), (206_848, 4_194_270)], 40 * GiB)  # an ESP, then a root ending short of 2 GiB
    assert used_bytes(reader(disk), 40 * GiB) == (2 * GiB, "gpt")


def test_gpt_unused_entries_do_not_count_whatever_their_lbas() -> None:
    disk = gpt([(2048, 4095)], 40 * GiB)
    struct.pack_into("<QQ", disk, 2 * 512 + 128 + 32, 1 << 40, 1 << 41)  # the second entry: no type GUID
    patch_header(disk, table_crc=binascii.crc32(disk[1024:1024 + 128 * 128]))
    assert used_bytes(reader(disk), 40 * GiB) == (2 * MiB, "gpt")


def test_gpt_a_partition_past_the_end_of_the_disk_is_capped_at_its_size() -> None:
    disk = gpt([(2048, (1 << 64) - 2)], 40 * GiB)
    assert used_bytes(reader(disk), 40 * GiB) == (40 * GiB, "gpt")


def test_gpt_a_hybrid_mbr_goes_by_the_gpt() -> None:
    disk = gpt([(2048, 4095), (4096, 100 * 2048 - 1)], 40 * GiB)
    struct.pack_into("<B3xB3xII", disk, 446 + 16, 0x80, 0x83, 2048, 2048)  # the MBR shows only the first
    assert used_bytes(reader(disk), 40 * GiB) == (100 * MiB, "gpt")


def test_gpt_a_table_elsewhere_with_other_sizes() -> None:
    disk = gpt([(4096, 8191), (10_000, 10_240)], 40 * GiB, table_lba=2048, count=16, entry_size=256)
    assert used_bytes(reader(disk), 40 * GiB) == (6 * MiB, "gpt")  # 10_241 sectors: just over 5 MiB


def test_gpt_an_empty_entry_table_is_the_whole_disk() -> None:
    assert used_bytes(reader(gpt([], 40 * GiB)), 40 * GiB) == (40 * GiB, "whole")
    assert used_bytes(reader(gpt([], 40 * GiB, count=0)), 40 * GiB) == (40 * GiB, "whole")


@pytest.mark.parametrize("broken", [
    {"signature": b"EFI PARX"},
    {"header_crc": 0x12345678},
    {"table_crc": 0},
    {"my_lba": 2},
    {"header_size": 91},
    {"header_size": 513},
    {"entry_size": 64},
    {"entry_size": 130},
    {"count": MAX_GPT_TABLE // 128 + 1},
    {"count": 0xFFFFFFFF, "entry_size": 0xFFFFFF80},
    {"table_lba": 0},
    {"table_lba": 1},
    {"table_lba": (40 * GiB) // 512 - 1},  # the table would run past the end of the disk
    {"table_lba": 1 << 63},
])
def test_a_broken_gpt_is_the_whole_disk(broken: dict[str, Any]) -> None:
    disk = patch_header(gpt([(2048, 4095)], 40 * GiB), **broken)
    assert used_bytes(reader(disk), 40 * GiB) == (40 * GiB, "whole")


def test_a_gpt_entry_that_ends_before_it_starts_is_the_whole_disk() -> None:
    disk = gpt([(2048, 4095), (10_000, 9_999)], 40 * GiB)
    assert used_bytes(reader(disk), 40 * GiB) == (40 * GiB, "whole")


def test_a_protective_mbr_without_a_gpt_is_the_whole_disk() -> None:
    assert used_bytes(reader(mbr((0xEE, 1, 0xFFFFFFFF))), 40 * GiB) == (40 * GiB, "whole")
    garbage = mbr((0xEE, 1, 0xFFFFFFFF)) + b"EFI PART" + bytes(range(256)) * 2
    assert used_bytes(reader(garbage), 40 * GiB) == (40 * GiB, "whole")


def test_a_gpt_table_cut_short_by_the_end_of_what_reads_is_the_whole_disk() -> None:
    disk = gpt([(2048, 4095)], 40 * GiB)
    assert used_bytes(reader(disk[:4096]), 40 * GiB) == (40 * GiB, "whole")


# -- 4Kn disks: the tables count 4 KiB sectors -----------------------------------------------

def test_a_4kn_mbr_counts_4k_sectors() -> None:
    disk = mbr((0x83, 256, 2048), sector=4096)  # 1 MiB in, 8 MiB long
    assert used_bytes(reader(disk), 40 * GiB, sector_size=4096) == (9 * MiB, "mbr")


def test_a_4kn_gpt_has_its_header_at_4_kib() -> None:
    disk = gpt([(256, 2559)], 40 * GiB, sector=4096)
    assert used_bytes(reader(disk), 40 * GiB, sector_size=4096) == (10 * MiB, "gpt")
    assert used_bytes(reader(disk), 40 * GiB) == (40 * GiB, "whole")  # read as 512: no header at LBA 1
