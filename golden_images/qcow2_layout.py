"""A qcow2 (version 3) file laid out so that it can be written front to back in one pass.

Capture has to checksum the image it writes. ``qemu-img convert`` allocates metadata as it goes
and rewrites the header, L1, L2 and refcount clusters at the end, so its output can only be
hashed once it is complete: a second full read. When the guest clusters that hold data are known
beforehand (``qemu-img map`` of the volume), every piece of metadata is known too, so the file
can be written in order - metadata first, then the data clusters in guest order - and hashed on
the way. This module is that plan, as pure computation: which host cluster each guest cluster
goes to, and the bytes of everything before the first data cluster.

Layout, in host clusters: the header; the refcount table; the L1 table; the refcount blocks;
one L2 table per L1 entry that maps any data; then the data clusters. Refcounts are 16 bits,
every used cluster has refcount 1 (so every L1 and L2 entry carries QCOW_OFLAG_COPIED), and
nothing is allocated that is not used, so ``qemu-img check`` finds neither errors nor leaks.
The file has no backing file, no snapshots, no extensions, no compression and no encryption.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAGIC = 0x514649FB
VERSION = 3
REFCOUNT_ORDER = 4  # 16-bit refcounts, qemu-img's default
HEADER_LENGTH = 104
COPIED = 1 << 63  # QCOW_OFLAG_COPIED: refcount is exactly 1, the cluster may be written in place
_HEADER = struct.Struct(">IIQIIQIIQQIIQQQQII")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Layout:
    """Where everything of one image goes. ``runs`` are the data's guest cluster ranges
    ``(first, count)``, in order; their host clusters follow each other from ``first_data``."""

    virtual_size: int
    cluster_bits: int
    runs: tuple[tuple[int, int], ...]
    first_data: int  # host cluster index of the first data cluster
    total_clusters: int
    refcount_table_clusters: int
    l1_entries: int
    l1_clusters: int
    refcount_blocks: int
    l2_tables: tuple[int, ...]  # the L1 indices that get an L2 table, in order

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def data_clusters(self) -> int:
        return sum(count for _, count in self.runs)

    @property
    def file_size(self) -> int:
        return self.total_clusters * self.cluster_size

    def metadata(self) -> bytes:
        """Every byte of the file before ``first_data`` (header, tables, blocks)."""
        size = self.cluster_size
        out = bytearray(self.first_data * size)
        refcount_table_at = 1
        l1_at = refcount_table_at + self.refcount_table_clusters
        blocks_at = l1_at + self.l1_clusters
        l2_at = blocks_at + self.refcount_blocks
        _HEADER.pack_into(out, 0, MAGIC, VERSION, 0, 0, self.cluster_bits, self.virtual_size, 0, self.l1_entries,
                          l1_at * size, refcount_table_at * size, self.refcount_table_clusters, 0, 0, 0, 0, 0,
                          REFCOUNT_ORDER, HEADER_LENGTH)
        # Refcount table: one entry per refcount block; each block counts its share of the clusters.
        per_block = size * 8 // (1 << REFCOUNT_ORDER)
        for block in range(self.refcount_blocks):
            struct.pack_into(">Q", out, refcount_table_at * size + 8 * block, (blocks_at + block) * size)
            used = min(per_block, self.total_clusters - block * per_block)
            start = (blocks_at + block) * size
            out[start:start + 2 * used] = b"\x00\x01" * used
        # L1: the host offset of each L2 table.
        l2_index = {l1: l2_at + n for n, l1 in enumerate(self.l2_tables)}
        for l1, cluster in l2_index.items():
            struct.pack_into(">Q", out, l1_at * size + 8 * l1, cluster * size | COPIED)
        # L2: the host offset of each data cluster.
        per_l2 = size // 8
        for guest, host in self.placements():
            table = l2_index[guest // per_l2]
            struct.pack_into(">Q", out, table * size + 8 * (guest % per_l2), host * size | COPIED)
        return bytes(out)

    def placements(self) -> Iterator[tuple[int, int]]:
        """(guest cluster, host cluster) of every data cluster, in order."""
        host = self.first_data
        for first, count in self.runs:
            for guest in range(first, first + count):
                yield guest, host
                host += 1


def data_runs(extents: Sequence[dict[str, object]], cluster_size: int, virtual_size: int) -> list[tuple[int, int]]:
    """Guest cluster ranges ``(first, count)`` that hold data, from ``qemu-img map --output=json``
    (an extent counts when it has data and does not read as zeros), rounded out to whole clusters
    and merged."""
    runs: list[tuple[int, int]] = []
    for extent in extents:
        if not extent.get("data") or extent.get("zero"):
            continue
        start, length = int(str(extent["start"])), int(str(extent["length"]))
        if length <= 0 or start >= virtual_size:
            continue
        first = start // cluster_size
        end = _ceil_div(min(start + length, virtual_size), cluster_size)
        if runs and first <= runs[-1][0] + runs[-1][1]:
            previous_first, previous_count = runs[-1]
            runs[-1] = (previous_first, max(previous_first + previous_count, end) - previous_first)
        else:
            runs.append((first, end - first))
    return runs


def plan(virtual_size: int, runs: Sequence[tuple[int, int]], cluster_bits: int = 16) -> Layout:
    """The layout of an image of ``virtual_size`` bytes whose data is in ``runs`` (sorted,
    disjoint guest cluster ranges)."""
    if not 9 <= cluster_bits <= 21:
        raise ValueError("qcow2 cluster sizes are 512 bytes to 2 MiB")
    size = 1 << cluster_bits
    per_l2 = size // 8
    per_block = size * 8 // (1 << REFCOUNT_ORDER)
    guest_clusters = _ceil_div(virtual_size, size)
    last_end = -1
    for first, count in runs:
        if count <= 0 or first <= last_end - 1 or first + count > guest_clusters:
            raise ValueError("data runs must be sorted, disjoint, non-empty and inside the disk")
        last_end = first + count
    l1_entries = max(1, _ceil_div(guest_clusters, per_l2))
    l1_clusters = _ceil_div(l1_entries * 8, size)
    l2_tables = tuple(sorted({guest // per_l2 for first, count in runs
                              for guest in range(first, first + count, per_l2)}
                             | {(first + count - 1) // per_l2 for first, count in runs}))
    data = sum(count for _, count in runs)
    blocks, table_clusters = 1, 1
    while True:  # the refcount blocks count themselves: settle on a fixed point
        total = 1 + table_clusters + l1_clusters + blocks + len(l2_tables) + data
        need_blocks = _ceil_div(total, per_block)
        need_table = _ceil_div(need_blocks * 8, size)
        if (need_blocks, need_table) == (blocks, table_clusters):
            break
        blocks, table_clusters = max(blocks, need_blocks), max(table_clusters, need_table)
    first_data = 1 + table_clusters + l1_clusters + blocks + len(l2_tables)
    return Layout(virtual_size, cluster_bits, tuple(runs), first_data, total, table_clusters, l1_entries,
                  l1_clusters, blocks, l2_tables)
