"""Writing an OS volume's export to the server's disk: streamed, resumed after a dropped
connection, verified against its SHA-256.

The transport is not here: ``open_stream(offset)`` returns the bytes of the image from
``offset`` on (an HTTP GET with ``Range: bytes=<offset>-`` against the appliance's export, in
the agent), and raises OSError (ConnectionError, TimeoutError, ...) when the connection fails,
before or during the body. A body that ends early is a dropped connection too when the size is
known. Either way the write goes on from the last byte written, after a pause that grows with
each failure in a row, up to ``retries`` failures in a row; bytes are hashed in the order they
are written, so the checksum needs no second read of the disk.

An error of the disk itself (a failed ``pwrite`` or ``fsync``) is not retried: it is the
server's problem, not the network's, and the deploy fails with it.

Runs on the target under ``python3-minimal``: ``hashlib``, ``os`` and ``time`` only.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable

PROGRESS_EVERY = 16 << 20  # bytes between progress reports


class WriteFailed(Exception):
    """The image could not be written; ``str()`` says why, and where it stopped."""


class ChecksumMismatch(WriteFailed):
    """Everything was written, and it is not the image the appliance exported."""


def write_image(
    open_stream: Callable[[int], Iterable[bytes]],
    fd: int,
    *,
    sha256: str,
    size: int | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    on_progress: Callable[[int, int | None], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Write the image to ``fd`` (a block device or file opened for writing) from offset 0 and
    return the bytes written. Raises WriteFailed (ChecksumMismatch for a wrong image)."""
    digest = hashlib.sha256()
    offset = 0
    failures = 0
    reported = 0
    while True:
        try:
            stream = iter(open_stream(offset))
            while True:
                try:
                    chunk = next(stream)
                except StopIteration:
                    break
                if size is not None and offset + len(chunk) > size:
                    raise WriteFailed(f"the appliance sent more than the image's {size} bytes")
                _write_all(fd, chunk, offset)
                digest.update(chunk)
                offset += len(chunk)
                failures = 0  # progress was made: the next failure starts the count again
                if on_progress is not None and offset - reported >= PROGRESS_EVERY:
                    reported = offset
                    on_progress(offset, size)
            if size is not None and offset < size:
                raise ConnectionError(f"the body ended at byte {offset} of {size}")
            break
        except _DiskError as exc:
            raise WriteFailed(f"writing the disk failed at byte {offset}: {exc.__cause__}") from exc.__cause__
        except OSError as exc:
            failures += 1
            if failures > retries:
                raise WriteFailed(f"the connection failed {failures} times in a row at byte {offset}: {exc}") from exc
            sleep(backoff_s * 2 ** (failures - 1))
    try:
        os.fsync(fd)
    except OSError as exc:
        raise WriteFailed(f"flushing the disk failed after {offset} bytes: {exc}") from exc
    if on_progress is not None:
        on_progress(offset, size)
    if digest.hexdigest() != sha256.lower():
        raise ChecksumMismatch(f"the {offset} bytes written have SHA-256 {digest.hexdigest()}, "
                               f"not the export's {sha256.lower()}")
    return offset


class _DiskError(Exception):
    """A write to the disk failed (its OSError is the cause); never retried."""


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.pwrite(fd, view, offset)
        except OSError as exc:
            raise _DiskError() from exc
        view, offset = view[written:], offset + written
