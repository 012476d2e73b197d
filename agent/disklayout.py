"""How much of a disk is in use, from its partition table: the part ``read_disk`` captures.

A capture does not need the empty end of a big disk, only up to the end of the last partition,
rounded up to a whole MiB (:data:`ALIGN`) and never past the end of the disk:

- **MBR** (``55 AA`` at byte 510, no ``0xEE`` entry): the furthest end, ``(start + sectors) *
  sector size``, of the four primary entries in use. An extended partition counts with its own
  extent: the logical partitions lie inside it, so its chain of EBRs need not be followed.
- **GPT** (an MBR entry of type ``0xEE``, then the ``EFI PART`` header at LBA 1): the furthest
  ``last LBA + 1`` of the entries in use, and at least the header and the primary entry table.
  The backup GPT at the very end of the disk is *not* captured (it lies past the last partition):
  on a disk the image is written to, Linux reads the primary GPT alone (and warns that the backup
  is missing) until something puts a backup at the end again (``sgdisk -e``, ``growpart``,
  ``systemd-repart``); the agent says so in its result (``gptBackupOmitted``).
- Anything else is the **whole** disk: no ``55 AA``; a boot sector of a file system on the bare
  disk (FAT, NTFS, exFAT: they end in ``55 AA`` too); boot flags other than ``0x00``/``0x80``
  (what Linux checks to tell the two apart); no partition in use; a GPT header or entry table
  that is damaged (a wrong signature, size or CRC32, an entry ending before it starts, a table
  beyond the disk or bigger than :data:`MAX_GPT_TABLE`). When in doubt the capture takes more,
  never less: a partition the table does not describe well must not be cut off.

Entries that point past the end of the disk are capped at its size, and so is everything else.
Sizes are in logical sectors (``sector_size``: 512, or 4096 on a 4Kn disk, whose MBR and GPT
count 4 KiB sectors).

Pure functions over bytes (``read_at(offset, length)`` gives the disk's bytes, fewer at its end);
runs on the target under ``python3-minimal``: ``binascii`` and ``struct`` only.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Callable

MiB = 1 << 20
ALIGN = MiB
SECTOR = 512
MBR_SIGNATURE = b"\x55\xaa"
GPT_SIGNATURE = b"EFI PART"
GPT_PROTECTIVE = 0xEE
GPT_ENTRY_MIN = 128
MAX_GPT_TABLE = 4 << 20  # bytes; tools write 128 entries of 128 bytes (16 KiB) by default
_ENTRY = struct.Struct("<B3xB3xII")  # boot flag, CHS start, type, CHS end, first LBA, sectors
_GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_LBAS = struct.Struct("<QQ")  # an entry's first and last LBA, after its two GUIDs
_FS_BOOT_SECTORS = ((3, b"NTFS    "), (3, b"EXFAT   "), (54, b"FAT12   "), (54, b"FAT16   "), (54, b"FAT     "),
                    (82, b"FAT32   "))

MBR, GPT, WHOLE = "mbr", "gpt", "whole"


def used_bytes(read_at: Callable[[int, int], bytes], disk_size: int, *, sector_size: int = SECTOR) -> tuple[int, str]:
    """``(bytes to capture, how)`` for a disk of ``disk_size`` bytes: ``how`` is ``"mbr"`` or
    ``"gpt"`` when the partition table said, ``"whole"`` when it is the whole disk (see the
    module docstring). OSError from ``read_at`` goes through."""
    if disk_size <= 0:
        return 0, WHOLE
    if sector_size < SECTOR or sector_size & (sector_size - 1):
        raise ValueError(f"a sector of {sector_size} bytes is not a power of two of at least {SECTOR}")
    end, how = _used_end(read_at, disk_size, sector_size)
    if end is None:
        return disk_size, WHOLE
    return min(round_up(end, ALIGN), disk_size), how


def round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def _used_end(read_at: Callable[[int, int], bytes], disk_size: int, sector_size: int) -> tuple[int | None, str]:
    """The end of the last partition, unrounded and uncapped, with how it was found; None when
    there is no table to go by."""
    boot = read_at(0, SECTOR)
    if len(boot) < SECTOR or boot[510:512] != MBR_SIGNATURE or _is_file_system(boot):
        return None, WHOLE
    entries = [_ENTRY.unpack_from(boot, 446 + 16 * i) for i in range(4)]
    if any(flag not in (0x00, 0x80) for flag, _, _, _ in entries):
        return None, WHOLE
    if any(kind == GPT_PROTECTIVE for _, kind, _, _ in entries):
        return _gpt_end(read_at, disk_size, sector_size), GPT
    ends = [(first + sectors) * sector_size for _, kind, first, sectors in entries if kind != 0 and sectors > 0]
    return (max(ends) if ends else None), MBR


def _is_file_system(boot: bytes) -> bool:
    """Whether the first sector is the boot sector of a file system made on the bare disk."""
    return any(boot[at:at + len(name)] == name for at, name in _FS_BOOT_SECTORS)


def _gpt_end(read_at: Callable[[int, int], bytes], disk_size: int, sector_size: int) -> int | None:
    """The end of the primary GPT's last partition; None when the GPT is not sound."""
    header = read_at(sector_size, sector_size)
    if len(header) < _GPT_HEADER.size:
        return None
    (signature, _revision, header_size, header_crc, _reserved, my_lba, _alternate_lba, _first_usable,
     _last_usable, _guid, table_lba, count, entry_size, table_crc) = _GPT_HEADER.unpack_from(header)
    if signature != GPT_SIGNATURE or not _GPT_HEADER.size <= header_size <= min(len(header), sector_size):
        return None
    blanked = header[:16] + b"\0\0\0\0" + header[20:header_size]
    if binascii.crc32(blanked) != header_crc or my_lba != 1:
        return None
    table_bytes: int = count * entry_size
    if entry_size < GPT_ENTRY_MIN or entry_size % GPT_ENTRY_MIN or table_bytes > MAX_GPT_TABLE:
        return None
    table_start: int = table_lba * sector_size
    table_end = table_start + table_bytes
    if table_lba < 2 or table_end > disk_size:
        return None
    table = read_at(table_start, table_bytes) if table_bytes else b""
    if len(table) != table_bytes or binascii.crc32(table) != table_crc:
        return None
    end: int | None = None
    for at in range(0, len(table), entry_size):
        if not any(table[at:at + 16]):  # the type GUID of an unused entry is all zeros
            continue
        first, last = _LBAS.unpack_from(table, at + 32)
        if last < first:
            return None
        end = max(end or 0, (last + 1) * sector_size)
    if end is None:
        return None
    return max(end, table_end, 2 * sector_size)
