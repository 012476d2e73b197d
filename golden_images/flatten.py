"""Flatten a qcow2 chain into one new qcow2 in a single pass, with its SHA-256 computed on the way.

Capture must checksum what it writes. With ``qemu-img convert`` that is a second full read after
the conversion, because qemu-img rewrites the file's first clusters at the end. Here the new
file's layout is planned from ``qemu-img map`` before a byte of data moves
(:mod:`golden_images.qcow2_layout`), so it is written strictly front to back - the metadata, then
each data cluster in guest order - and hashed on the way.

``qemu-img map`` also says where each extent's bytes lie: which file of the chain (its depth) and
at which offset, for clusters stored as they are. Those bytes are read straight from the files,
so the data crosses memory once into a buffer, from which a worker thread hashes it while this
thread writes it (both release the GIL), and the kernel is asked to start writing back behind the
writer, so the closing fsync waits only for the last pieces. A chain with clusters that are not
stored as they are (compressed) cannot be copied this way: :class:`NotFlattenable`, and the
caller converts with qemu-img instead.

Only what ``qemu-img map`` reports as data is copied; what reads as zeros stays unallocated. A data
cluster that happens to hold zeros is copied as it is (qemu-img convert would drop it), so a
flattened file can be slightly larger than qemu-img's, never different in what the guest reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golden_images import qemu_img
from golden_images.qcow2_layout import Layout, data_runs, plan

CHUNK = 2 << 20
BUFFERS = 8  # pieces in flight: one being read, the others queued for the hash or being written
_SYNC_FILE_RANGE_WRITE = 2
_WRITEBACK_WINDOW = 32 << 20
_libc = ctypes.CDLL(None, use_errno=True)

Progress = Callable[[float], None]


class NotFlattenable(Exception):
    """The chain has clusters that are not stored as they are (compressed); convert it instead."""


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing this range to disk now (sync_file_range(2), not waiting)."""
    _libc.sync_file_range(fd, ctypes.c_int64(offset), ctypes.c_int64(length), _SYNC_FILE_RANGE_WRITE)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


class _Source:
    """The guest's bytes, read from the chain's files where ``qemu-img map`` says they are."""

    def __init__(self, extents: Sequence[dict[str, Any]], fds: Sequence[int]) -> None:
        self.fds = fds
        # (start, end, fd or None for zeros, host offset of start)
        self.segments: list[tuple[int, int, int | None, int]] = []
        for extent in extents:
            start, length = int(extent["start"]), int(extent["length"])
            if extent.get("data") and not extent.get("zero"):
                if "offset" not in extent:
                    raise NotFlattenable("the volume has compressed clusters")
                self.segments.append((start, start + length, fds[int(extent["depth"])], int(extent["offset"])))
            else:
                self.segments.append((start, start + length, None, 0))
        self._at = 0

    def read_into(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` with the guest's bytes from ``offset`` (pieces come in increasing order)."""
        end = offset + len(view)
        while self.segments[self._at][1] <= offset:
            self._at += 1
        at, position = self._at, offset
        while position < end:
            start, stop, fd, host = self.segments[at]
            take = min(stop, end) - position
            target = view[position - offset:position - offset + take]
            if fd is None:
                target[:] = bytes(take)
            else:
                got = 0
                while got < take:
                    n = os.preadv(fd, [target[got:]], host + position - start + got)
                    if n == 0:
                        raise OSError(f"the chain ends early at guest offset {position + got}")
                    got += n
            position += take
            at += 1


def _pieces(layout: Layout) -> Iterator[tuple[int, int]]:
    """The guest byte ranges to copy, in file order, each at most CHUNK long; ranges stop at the
    disk's end (its last cluster is padded with zeros when it is not whole)."""
    size = layout.cluster_size
    for first, count in layout.runs:
        offset, end = first * size, min((first + count) * size, layout.virtual_size)
        while offset < end:
            length = min(CHUNK, end - offset)
            yield offset, length
            offset += length


@dataclass(frozen=True)
class Flattened:
    sha256: str
    info: dict[str, Any]  # ``qemu-img info`` of the new file (its structure is all in front of the data)


def flatten(chain: Path, destination: Path, *, on_progress: Progress | None = None) -> Flattened:
    """Write the guest view of the qcow2 ``chain`` as a new self-contained qcow2 at
    ``destination`` (which must not exist), fsynced; return its SHA-256 and ``qemu-img info``.

    The probe of the new file runs while its data is copied: everything ``qemu-img info`` reads
    (header, tables) is written first and never changes, so it need not wait for the data."""
    with ThreadPoolExecutor(max_workers=1) as asking:  # two qemu-img runs at once: ~10 ms each
        chain_files = asking.submit(qemu_img.backing_chain, chain)
        extents = qemu_img.map_extents(chain)
        files = chain_files.result()
    virtual_size = max((int(e["start"]) + int(e["length"]) for e in extents), default=0)  # map covers the disk
    layout = plan(virtual_size, data_runs(extents, 1 << 16, virtual_size))
    digest = hashlib.sha256()
    total = max(1, layout.data_clusters * layout.cluster_size)
    buffers = [bytearray(CHUNK) for _ in range(BUFFERS)]
    with contextlib.ExitStack() as stack:
        fds = []
        for path in files:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            fds.append(fd)
        source = _Source(extents, fds)
        out = stack.enter_context(destination.open("xb", buffering=0))
        hasher = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="flatten-sha256"))
        prober = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="flatten-probe"))
        fd = out.fileno()
        metadata = memoryview(layout.metadata())
        digest.update(metadata)
        _write_all(fd, metadata)
        probed = prober.submit(qemu_img.info, destination, "qcow2")
        written, flushed, done = len(metadata), 0, 0
        hashing: deque[Future[None]] = deque()
        for n, (offset, length) in enumerate(_pieces(layout)):
            if len(hashing) == len(buffers):
                hashing.popleft().result()  # its buffer is this piece's
            padded = length + (-length % layout.cluster_size)  # a disk that ends inside its last cluster
            view = memoryview(buffers[n % len(buffers)])[:padded]
            source.read_into(view[:length], offset)
            view[length:] = bytes(padded - length)
            hashing.append(hasher.submit(digest.update, view))  # one worker: the hash sees pieces in order
            _write_all(fd, view)
            written += padded
            if written - flushed >= _WRITEBACK_WINDOW:
                _start_writeback(fd, flushed, written - flushed)
                flushed = written
            done += padded
            if on_progress is not None:
                on_progress(min(100.0, 100.0 * done / total))
        for pending in hashing:
            pending.result()
        if written != layout.file_size:
            raise OSError(f"wrote {written} bytes where the plan has {layout.file_size}")
        os.fsync(fd)
        info = probed.result()
    return Flattened(digest.hexdigest(), info)
