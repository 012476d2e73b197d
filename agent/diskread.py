"""Streaming a disk back to the appliance (``read_disk``): read in order, zero ranges left out,
resumed after a dropped connection, hashed with SHA-256 as it is read.

The transport is not here. The disk ``[0, total)`` is read in chunks of :data:`CHUNK` bytes at
chunk-aligned offsets; a chunk that is all zeros is not sent (the appliance's file is sparse), any
other goes out as ``send(start, data, total)`` (an HTTP ``PUT`` with ``Content-Range: bytes
START-END/TOTAL``). After the last chunk ``finish(total)`` (``Content-Range: bytes */TOTAL``)
tells the appliance the stream is complete, even when nothing was sent. Both answer
``{"committed": N, ...}``: everything before byte ``N`` has arrived or is zero.

A call that raises OSError (ConnectionError, TimeoutError: the agent maps a ``5xx`` to one too)
is retried after a pause that doubles with each failure in a row, up to ``retries`` failures in a
row. Before going on, ``status()`` (``GET``) asks the appliance what it has, ``{"committed": N,
"total": TOTAL or null}``, and the read goes on from byte ``N``: what a dropped request delivered
is not sent again, what it did not is. ``N`` is normally a chunk boundary; when it is not, the
next read stops at the next boundary. If ``N`` lies before bytes already read (an appliance that
lost some), those are read and sent again but not hashed again: ``hashed`` only grows, so the
SHA-256 is that of ``[0, total)`` however often parts of it are read. Anything else a callable
raises (the appliance refusing the upload, ending the command) goes through at once.

A failed read of the disk is not retried either: it is the server's problem, not the network's.

Runs on the target under ``python3-minimal``: ``hashlib`` and ``time`` only.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

CHUNK = 4 << 20  # bytes per range; the appliance takes up to 16 MiB


class ReadFailed(Exception):
    """The disk could not be read, or not uploaded; ``str()`` says why and at which byte."""


@dataclass(frozen=True)
class ReadResult:
    bytes: int  # the length read: total
    sha256: str  # of [0, total), zero chunks included
    sent: int  # the bytes of the ranges the appliance acknowledged (a range sent again counts once)


Reply = Mapping[str, Any]


def read_disk(
    read_at: Callable[[int, int], bytes],
    total: int,
    *,
    send: Callable[[int, bytes, int], Reply],
    finish: Callable[[int], Reply],
    status: Callable[[], Reply],
    chunk: int = CHUNK,
    retries: int = 5,
    backoff_s: float = 1.0,
    on_progress: Callable[[int, int, int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReadResult:
    """Read ``[0, total)`` with ``read_at(offset, length)`` and upload it as the module docstring
    says; ``on_progress(read, total, sent)`` after each chunk. Raises ReadFailed."""
    if total < 0 or chunk <= 0:
        raise ValueError(f"cannot read {total} bytes in chunks of {chunk}")
    zeros = bytes(min(chunk, total))
    digest = hashlib.sha256()
    hashed = 0  # [0, hashed) is in the digest; position <= hashed always
    position = 0
    sent = 0
    acknowledged = 0  # the furthest end of an acknowledged range
    failures = 0
    resync = False
    while True:
        try:
            if resync:
                position = _resume_point(status(), total, hashed)
                resync = False
            while position < total:
                end = min((position // chunk + 1) * chunk, total)
                data = _read(read_at, position, end - position)
                if end > hashed:
                    digest.update(memoryview(data)[hashed - position:])
                    hashed = end
                if data != (zeros if len(data) == len(zeros) else bytes(len(data))):
                    committed = _committed(send(position, data, total), total, f"bytes {position}-{end - 1}")
                    if committed < end:
                        raise ReadFailed(f"the appliance acknowledged bytes {position}-{end - 1} of {total} but says "
                                         f"it has only {committed}")
                    sent += max(0, end - max(position, acknowledged))
                    acknowledged = max(acknowledged, end)
                    failures = 0  # progress: the next failure starts the count again
                position = end
                if on_progress is not None:
                    on_progress(position, total, sent)
            committed = _committed(finish(total), total, "the end of the upload")
            if committed != total:
                raise ReadFailed(f"the appliance has {committed} of the {total} bytes at the end of the upload")
            return ReadResult(total, digest.hexdigest(), sent)
        except OSError as exc:  # the network's (a failed read of the disk is a ReadFailed)
            failures += 1
            if failures > retries:
                raise ReadFailed(f"the upload failed {failures} times in a row at byte {position} of {total}: "
                                 f"{exc}") from exc
            sleep(backoff_s * 2 ** (failures - 1))
            resync = True


def _read(read_at: Callable[[int, int], bytes], offset: int, length: int) -> bytes:
    try:
        data = read_at(offset, length)
    except OSError as exc:
        raise ReadFailed(f"reading the disk failed at byte {offset}: {exc.strerror or exc}") from exc
    if len(data) != length:
        raise ReadFailed(f"the disk ended at byte {offset + len(data)}, before the {offset + length} to read")
    return data


def _committed(reply: Reply, total: int, what: str) -> int:
    committed = reply.get("committed") if isinstance(reply, Mapping) else None
    if not isinstance(committed, int) or isinstance(committed, bool) or not 0 <= committed <= total:
        raise ReadFailed(f"the appliance's answer to {what} has no committed byte count within the "
                         f"{total} bytes: {_short(reply)}")
    return committed


def _resume_point(reply: Reply, total: int, hashed: int) -> int:
    """Where to read on from after a failure: the appliance's ``committed``."""
    committed = _committed(reply, total, "the status request")
    known = reply.get("total")
    if known is not None and known != total:
        raise ReadFailed(f"the appliance expects {known} bytes of this disk, not {total}")
    if committed > hashed:
        raise ReadFailed(f"the appliance says it has {committed} bytes of the disk, more than the {hashed} read")
    return committed


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
