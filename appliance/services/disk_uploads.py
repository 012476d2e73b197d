"""A disk the deploy agent streams back for a capture (``read_disk``, docs/agent-api.md): one
sparse raw file per command in the image store's ``incoming/``, written range by range.

The agent sends the used part of its disk in order, in ranges of a few MiB, and leaves out the
ranges that are all zeros: the file is sparse and reads them as zeros. ``committed`` is the end of
the furthest range received in full: everything before it is either received or zero, so after a
dropped connection the agent asks for it and reads on from there. A range cut short is not
committed (what it wrote is written again). The last request, ``bytes */TOTAL``, says the stream
is complete. The state is a small JSON file beside the data, so it survives nothing but what the
data survives: the start-up sweep of ``incoming/`` removes both, and the agent starts over.

No I/O on the event loop: the web layer calls these in a worker thread.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import Conflict, InvalidInput, PayloadTooLarge

MAX_RANGE_BYTES = 16 << 20  # the agent sends 4 MiB; the body is held in memory while it is written
_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|(\*))/(\d+)")


@dataclass(frozen=True)
class UploadStatus:
    committed: int
    total: int | None
    complete: bool

    def public(self) -> dict[str, int | bool | None]:
        return {"committed": self.committed, "total": self.total, "complete": self.complete}


@dataclass(frozen=True)
class ContentRange:
    """``bytes START-END/TOTAL`` (END inclusive), or ``bytes */TOTAL`` (``start`` None): the end."""

    start: int | None
    end: int | None
    total: int

    @classmethod
    def parse(cls, header: str | None, max_total: int) -> ContentRange:
        found = _RANGE.fullmatch((header or "").strip())
        if found is None:
            raise InvalidInput("Content-Range must be 'bytes START-END/TOTAL' or 'bytes */TOTAL'.")
        total = int(found.group(4))
        if total > max_total:
            raise PayloadTooLarge(limit=max_total)
        if found.group(3):
            return cls(None, None, total)
        start, end = int(found.group(1)), int(found.group(2))
        if start > end or end >= total:
            raise InvalidInput(f"Content-Range bytes {start}-{end}/{total} is not a range inside the disk.")
        if end - start + 1 > MAX_RANGE_BYTES:
            raise PayloadTooLarge(limit=MAX_RANGE_BYTES)
        return cls(start, end, total)


class DiskUpload:
    """The file and state of one ``read_disk`` command's upload."""

    def __init__(self, incoming: Path, command_id: str) -> None:
        if not re.fullmatch(r"[0-9a-f-]{1,64}", command_id):
            raise InvalidInput("not a command id")  # ids are uuids; nothing else reaches the file system
        self.path = incoming / f"capture-{command_id}.raw"
        self._state = incoming / f"capture-{command_id}.json"

    def status(self) -> UploadStatus:
        try:
            state = json.loads(self._state.read_text())
            return UploadStatus(int(state["committed"]), state["total"], bool(state["complete"]))
        except FileNotFoundError:
            return UploadStatus(0, None, False)

    def receive(self, where: ContentRange, body: bytes | bytearray) -> UploadStatus:
        """Write one range (or mark the end); the total must not change once given.

        :raises InvalidInput: the body is not the range's length.
        :raises Conflict: the total differs from the one this upload began with.
        """
        now = self.status()
        if now.total is not None and now.total != where.total:
            raise Conflict(reason=f"this disk upload is {now.total} bytes long, not {where.total}")
        if where.start is None:
            if body:
                raise InvalidInput("the end of an upload ('bytes */TOTAL') has no body.")
            self._write_range(where.total, None, b"")
            return self._save(UploadStatus(where.total, where.total, True))
        assert where.end is not None
        if len(body) != where.end - where.start + 1:
            raise InvalidInput(f"the body has {len(body)} bytes; Content-Range says {where.end - where.start + 1}.")
        self._write_range(where.total, where.start, body)
        return self._save(UploadStatus(max(now.committed, where.end + 1), where.total, False))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self._state.unlink(missing_ok=True)

    def _write_range(self, total: int, start: int | None, body: bytes | bytearray) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size != total:
                os.ftruncate(fd, total)  # sparse: what is never sent reads as zeros
            view = memoryview(body)
            offset = start or 0
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            if start is None:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _save(self, status: UploadStatus) -> UploadStatus:
        partial = self._state.with_suffix(".tmp")
        partial.write_text(json.dumps({"committed": status.committed, "total": status.total,
                                       "complete": status.complete}))
        os.replace(partial, self._state)
        return status
