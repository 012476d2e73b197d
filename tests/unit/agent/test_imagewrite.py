"""agent.imagewrite against a real file, with a stream that drops its connection on purpose."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.imagewrite import PROGRESS_EVERY, ChecksumMismatch, WriteFailed, write_image

IMAGE = os.urandom(3 * PROGRESS_EVERY + 12345)
SHA = hashlib.sha256(IMAGE).hexdigest()
CHUNK = 1 << 20


class Server:
    """The export over HTTP as the agent sees it: a body from any offset (a Range request), which
    drops after ``drop_after`` bytes for each entry of ``drops``, or fails before the body."""

    def __init__(self, data: bytes = IMAGE, drops: list[int] | None = None, refusals: int = 0) -> None:
        self.data = data
        self.drops = list(drops or [])
        self.refusals = refusals
        self.requests: list[int] = []

    def __call__(self, offset: int) -> Iterator[bytes]:
        self.requests.append(offset)
        if self.refusals:
            self.refusals -= 1
            raise ConnectionRefusedError("connection refused")
        return self._body(offset, self.drops.pop(0) if self.drops else None)

    def _body(self, offset: int, drop_after: int | None) -> Iterator[bytes]:
        sent = 0
        for start in range(offset, len(self.data), CHUNK):
            chunk = self.data[start:start + CHUNK]
            if drop_after is not None and sent + len(chunk) > drop_after:
                yield chunk[:drop_after - sent]
                raise ConnectionResetError("connection reset by peer")
            sent += len(chunk)
            yield chunk


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "disk", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        yield fd
    finally:
        os.close(fd)


def contents(fd: int) -> bytes:
    return os.pread(fd, len(IMAGE) + 1, 0)


def test_a_whole_write_is_verified_and_reports_progress(disk: int) -> None:
    progress: list[tuple[int, int | None]] = []
    written = write_image(Server(), disk, sha256=SHA, size=len(IMAGE),
                          on_progress=lambda done, total: progress.append((done, total)))
    assert written == len(IMAGE) and contents(disk) == IMAGE
    assert progress[-1] == (len(IMAGE), len(IMAGE))
    assert [done for done, _ in progress] == sorted(done for done, _ in progress) and len(progress) >= 3


def test_dropped_connections_resume_from_the_last_byte_written(disk: int) -> None:
    server = Server(drops=[5 * CHUNK + 77, 2 * CHUNK + 1])
    pauses: list[float] = []
    assert write_image(server, disk, sha256=SHA, size=len(IMAGE), sleep=pauses.append) == len(IMAGE)
    assert server.requests == [0, 5 * CHUNK + 77, 7 * CHUNK + 78]
    assert contents(disk) == IMAGE
    assert pauses == [1.0, 1.0]  # each failure followed progress, so the backoff started again


def test_a_body_that_ends_early_is_a_dropped_connection(disk: int) -> None:
    class Short(Server):
        def _body(self, offset: int, drop_after: int | None) -> Iterator[bytes]:
            end = len(self.data) if self.requests[1:] else 1000  # the first answer stops at 1000
            yield self.data[offset:end]

    server = Short()
    write_image(server, disk, sha256=SHA, size=len(IMAGE), sleep=lambda _s: None)
    assert server.requests == [0, 1000] and contents(disk) == IMAGE


def test_failures_in_a_row_give_up_with_the_offset(disk: int) -> None:
    pauses: list[float] = []
    with pytest.raises(WriteFailed, match=r"failed 4 times in a row at byte 0: connection refused"):
        write_image(Server(refusals=10), disk, sha256=SHA, size=len(IMAGE), retries=3, sleep=pauses.append)
    assert pauses == [1.0, 2.0, 4.0]


def test_a_wrong_image_is_a_checksum_mismatch(disk: int) -> None:
    with pytest.raises(ChecksumMismatch, match="not the export's"):
        write_image(Server(), disk, sha256="0" * 64, size=len(IMAGE))


def test_more_bytes_than_the_image_has_are_refused(disk: int) -> None:
    with pytest.raises(WriteFailed, match="more than the image's 100 bytes"):
        write_image(Server(), disk, sha256=SHA, size=100)


def test_a_disk_error_is_not_retried(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "read-only", os.O_RDONLY | os.O_CREAT, 0o600)
    server = Server()
    try:
        with pytest.raises(WriteFailed, match="writing the disk failed at byte 0"):
            write_image(server, fd, sha256=SHA, size=len(IMAGE), sleep=lambda _s: pytest.fail("retried"))
    finally:
        os.close(fd)
    assert server.requests == [0]


def test_without_a_size_the_end_of_the_body_is_the_end(disk: int) -> None:
    assert write_image(Server(), disk, sha256=SHA) == len(IMAGE) and contents(disk) == IMAGE
