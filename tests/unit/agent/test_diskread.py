"""agent.diskread with a disk in memory and an appliance of plain functions that drop requests,
lose answers and forget ranges on purpose."""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Mapping
from typing import Any

import pytest

from agent.diskread import CHUNK, ReadFailed, ReadResult, read_disk

C = 1024  # the chunk size of these tests


def sparse_disk(size: int, data_at: list[int]) -> bytes:
    """``size`` bytes, zeros but for a chunk of random bytes at each offset of ``data_at``."""
    disk = bytearray(size)
    for offset in data_at:
        piece = os.urandom(C)
        disk[offset:offset + C] = piece[:max(0, size - offset)]
    return bytes(disk)


class Disk:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    def __call__(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return self.data[offset:offset + length]


class Appliance:
    """The upload end: a sparse file and ``committed``, as the appliance keeps them. Each entry
    of ``plan`` is what the next send or finish does: ``"ok"``, ``"drop"`` (the connection
    breaks before the range arrives), ``"lost"`` (it arrives, the answer does not) or an
    exception to raise. ``status_plan`` likewise for the status requests (``"ok"``,
    ``"forget"``: the appliance lost everything from ``forget_to`` on, or an exception)."""

    def __init__(self, plan: list[Any] | None = None, status_plan: list[Any] | None = None) -> None:
        self.file = bytearray()
        self.committed = 0
        self.total: int | None = None
        self.plan: deque[Any] = deque(plan or [])
        self.status_plan: deque[Any] = deque(status_plan or [])
        self.forget_to = 0
        self.calls: list[str] = []

    def _next(self, plan: deque[Any]) -> Any:
        action = plan.popleft() if plan else "ok"
        if isinstance(action, BaseException):
            raise action
        return action

    def send(self, start: int, data: bytes, total: int) -> Mapping[str, Any]:
        self.calls.append(f"send {start}-{start + len(data) - 1}/{total}")
        action = self._next(self.plan)
        if action == "drop":
            raise ConnectionResetError(104, "Connection reset by peer")
        self.total = total
        end = start + len(data)
        self.file.extend(bytes(max(0, end - len(self.file))))
        self.file[start:end] = data
        self.committed = max(self.committed, end)
        if action == "lost":
            raise ConnectionError("the answer was lost")
        return {"committed": self.committed, "total": total, "complete": False}

    def finish(self, total: int) -> Mapping[str, Any]:
        self.calls.append(f"finish */{total}")
        action = self._next(self.plan)
        if action == "drop":
            raise ConnectionResetError(104, "Connection reset by peer")
        self.total = total
        self.file.extend(bytes(max(0, total - len(self.file))))
        self.committed = total
        if action == "lost":
            raise ConnectionError("the answer was lost")
        return {"committed": total, "total": total, "complete": True}

    def status(self) -> Mapping[str, Any]:
        self.calls.append("status")
        action = self._next(self.status_plan)
        if action == "forget":
            self.committed = min(self.committed, self.forget_to)
            del self.file[self.committed:]
        return {"committed": self.committed, "total": self.total}

    def read(self, disk: Disk, **kwargs: Any) -> ReadResult:
        kwargs.setdefault("chunk", C)
        kwargs.setdefault("sleep", lambda _s: None)
        return read_disk(disk, len(disk.data), send=self.send, finish=self.finish, status=self.status, **kwargs)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_zero_chunks_are_read_and_hashed_but_not_sent() -> None:
    data = sparse_disk(10 * C + 300, [0, 3 * C, 4 * C, 10 * C])  # the last chunk is a short one
    disk, appliance = Disk(data), Appliance()
    progress: list[tuple[int, int, int]] = []
    result = appliance.read(disk, on_progress=lambda *a: progress.append(a))
    assert result == ReadResult(len(data), sha(data), 3 * C + 300)
    assert appliance.calls == [f"send 0-{C - 1}/{len(data)}", f"send {3 * C}-{4 * C - 1}/{len(data)}",
                               f"send {4 * C}-{5 * C - 1}/{len(data)}", f"send {10 * C}-{10 * C + 299}/{len(data)}",
                               f"finish */{len(data)}"]
    assert bytes(appliance.file) == data
    assert disk.reads == [(i * C, C) for i in range(10)] + [(10 * C, 300)]
    assert progress[0] == (C, len(data), C) and progress[-1] == (len(data), len(data), 3 * C + 300)
    assert len(progress) == 11


def test_an_all_zero_disk_sends_only_the_end() -> None:
    data = bytes(5 * C)
    appliance = Appliance()
    assert appliance.read(Disk(data)) == ReadResult(5 * C, sha(data), 0)
    assert appliance.calls == [f"finish */{5 * C}"]
    assert bytes(appliance.file) == data


def test_an_empty_disk_sends_only_the_end() -> None:
    appliance = Appliance()
    assert appliance.read(Disk(b"")) == ReadResult(0, sha(b""), 0)
    assert appliance.calls == ["finish */0"]


def test_the_default_chunk_is_4_mib() -> None:
    assert CHUNK == 4 << 20
    data = sparse_disk(CHUNK + 10, [CHUNK])
    appliance = Appliance()
    assert read_disk(Disk(data), len(data), send=appliance.send, finish=appliance.finish,
                     status=appliance.status) == ReadResult(len(data), sha(data), 10)
    assert appliance.calls == [f"send {CHUNK}-{CHUNK + 9}/{len(data)}", f"finish */{len(data)}"]


def test_a_dropped_range_is_sent_again_after_asking_the_appliance() -> None:
    data = sparse_disk(4 * C, [0, C, 2 * C, 3 * C])
    appliance = Appliance(plan=["ok", "drop"])
    pauses: list[float] = []
    result = appliance.read(Disk(data), sleep=pauses.append, backoff_s=0.5)
    assert result == ReadResult(4 * C, sha(data), 4 * C)
    assert appliance.calls == ["send 0-1023/4096", "send 1024-2047/4096", "status", "send 1024-2047/4096",
                               "send 2048-3071/4096", "send 3072-4095/4096", "finish */4096"]
    assert pauses == [0.5]
    assert bytes(appliance.file) == data


def test_a_range_whose_answer_was_lost_is_not_sent_again() -> None:
    data = sparse_disk(4 * C, [0, C, 3 * C])
    appliance = Appliance(plan=["ok", "lost"])
    disk = Disk(data)
    result = appliance.read(disk)
    assert appliance.calls == ["send 0-1023/4096", "send 1024-2047/4096", "status", "send 3072-4095/4096",
                               "finish */4096"]
    assert disk.reads == [(0, C), (C, C), (2 * C, C), (3 * C, C)]  # the status said 2048: read on from there
    assert result.sha256 == sha(data) and bytes(appliance.file) == data
    assert result.sent == 2 * C  # the lost answer's range is not counted: it was not acknowledged


def test_a_resume_that_goes_back_reads_again_without_hashing_again() -> None:
    # The appliance lost what came after byte 1500 (not even a chunk boundary): the agent reads
    # from 1500 to the next boundary, then on in whole chunks, and the SHA-256 is still [0, total)'s.
    data = sparse_disk(6 * C, [0, C, 2 * C, 3 * C, 4 * C, 5 * C])
    appliance = Appliance(plan=["ok", "ok", "ok", "drop"], status_plan=["forget"])
    appliance.forget_to = 1500
    disk = Disk(data)
    result = appliance.read(disk)
    assert appliance.calls == ["send 0-1023/6144", "send 1024-2047/6144", "send 2048-3071/6144",
                               "send 3072-4095/6144", "status", "send 1500-2047/6144", "send 2048-3071/6144",
                               "send 3072-4095/6144", "send 4096-5119/6144", "send 5120-6143/6144", "finish */6144"]
    assert disk.reads == [(0, C), (C, C), (2 * C, C), (3 * C, C), (1500, 548), (2 * C, C), (3 * C, C),
                          (4 * C, C), (5 * C, C)]
    assert result == ReadResult(6 * C, sha(data), 6 * C)  # the ranges sent again count once
    assert bytes(appliance.file) == data


def test_a_resume_that_goes_back_over_zero_chunks() -> None:
    data = sparse_disk(5 * C, [0, 4 * C])
    appliance = Appliance(plan=["ok", "drop"], status_plan=["forget"])
    result = appliance.read(Disk(data))
    assert appliance.calls == ["send 0-1023/5120", "send 4096-5119/5120", "status", "send 0-1023/5120",
                               "send 4096-5119/5120", "finish */5120"]
    assert result == ReadResult(5 * C, sha(data), 2 * C)
    assert bytes(appliance.file) == data


def test_a_dropped_end_is_sent_again() -> None:
    data = sparse_disk(2 * C, [0])
    appliance = Appliance(plan=["ok", "drop", "lost"])
    pauses: list[float] = []
    assert appliance.read(Disk(data), sleep=pauses.append).sha256 == sha(data)
    assert appliance.calls == ["send 0-1023/2048", "finish */2048", "status", "finish */2048", "status",
                               "finish */2048"]
    assert pauses == [1.0, 2.0]  # no range was acknowledged in between: two failures in a row


def test_failures_in_a_row_give_up_with_the_offset() -> None:
    data = sparse_disk(3 * C, [0, C])
    appliance = Appliance(plan=["ok"] + ["drop"] * 10)
    pauses: list[float] = []
    with pytest.raises(ReadFailed, match=r"^the upload failed 4 times in a row at byte 1024 of 3072: "
                                         r"\[Errno 104\] Connection reset by peer$"):
        appliance.read(Disk(data), retries=3, sleep=pauses.append)
    assert pauses == [1.0, 2.0, 4.0]


def test_a_failing_status_request_counts_as_a_failure_too() -> None:
    data = sparse_disk(2 * C, [0, C])
    appliance = Appliance(plan=["drop"], status_plan=[TimeoutError("timed out"), "ok"])
    pauses: list[float] = []
    assert appliance.read(Disk(data), sleep=pauses.append).sha256 == sha(data)
    assert appliance.calls == ["send 0-1023/2048", "status", "status", "send 0-1023/2048", "send 1024-2047/2048",
                               "finish */2048"]
    assert pauses == [1.0, 2.0]


def test_a_failure_after_progress_starts_the_count_again() -> None:
    data = sparse_disk(3 * C, [0, C, 2 * C])
    appliance = Appliance(plan=["drop", "ok", "drop", "ok", "drop"])
    pauses: list[float] = []
    assert appliance.read(Disk(data), retries=1, sleep=pauses.append).sha256 == sha(data)
    assert pauses == [1.0, 1.0, 1.0]


class Refused(Exception):
    pass


def test_anything_but_a_connection_failure_goes_through_at_once() -> None:
    data = sparse_disk(2 * C, [0, C])
    appliance = Appliance(plan=["ok", Refused("HTTP 409: the command has ended")])
    with pytest.raises(Refused, match="409"):
        appliance.read(Disk(data), sleep=lambda _s: pytest.fail("retried"))
    assert appliance.calls == ["send 0-1023/2048", "send 1024-2047/2048"]


def test_a_read_error_of_the_disk_is_not_retried() -> None:
    def broken(offset: int, length: int) -> bytes:
        if offset >= 2 * C:
            raise OSError(5, "Input/output error")
        return os.urandom(length)

    appliance = Appliance()
    with pytest.raises(ReadFailed, match=r"^reading the disk failed at byte 2048: Input/output error$"):
        read_disk(broken, 4 * C, send=appliance.send, finish=appliance.finish, status=appliance.status, chunk=C,
                  sleep=lambda _s: pytest.fail("retried"))
    assert appliance.calls == ["send 0-1023/4096", "send 1024-2047/4096"]


def test_a_disk_shorter_than_its_size_fails() -> None:
    appliance = Appliance()
    disk = Disk(os.urandom(2 * C + 10))
    with pytest.raises(ReadFailed, match=r"^the disk ended at byte 2058, before the 3072 to read$"):
        read_disk(disk, 4 * C, send=appliance.send, finish=appliance.finish, status=appliance.status, chunk=C)
    assert "finish" not in " ".join(appliance.calls)


@pytest.mark.parametrize(("answer", "message"), [
    ({}, r"the appliance's answer to bytes 0-1023 has no committed byte count within the 2048 bytes: \{\}"),
    ({"committed": "1024"}, "no committed byte count"),
    ({"committed": True}, "no committed byte count"),
    ({"committed": 4096}, "no committed byte count within the 2048 bytes"),
    ({"committed": 512}, r"the appliance acknowledged bytes 0-1023 of 2048 but says it has only 512"),
    (["not", "an", "object"], "no committed byte count"),
])
def test_an_answer_that_makes_no_sense_fails(answer: Any, message: str) -> None:
    def send(start: int, data: bytes, total: int) -> Any:
        return answer

    with pytest.raises(ReadFailed, match=message):
        read_disk(Disk(sparse_disk(2 * C, [0])), 2 * C, send=send, finish=Appliance().finish,
                  status=Appliance().status, chunk=C)


def test_an_end_that_the_appliance_does_not_confirm_fails() -> None:
    appliance = Appliance()
    with pytest.raises(ReadFailed, match=r"^the appliance has 1024 of the 2048 bytes at the end of the upload$"):
        read_disk(Disk(bytes(2 * C)), 2 * C, send=appliance.send, finish=lambda total: {"committed": 1024},
                  status=appliance.status, chunk=C)


@pytest.mark.parametrize(("status", "message"), [
    ({"committed": 0, "total": 999}, r"^the appliance expects 999 bytes of this disk, not 2048$"),
    ({"committed": 2048, "total": 2048},
     r"^the appliance says it has 2048 bytes of the disk, more than the 1024 read$"),
    ({"committed": -1, "total": None}, "the appliance's answer to the status request has no committed byte count"),
])
def test_a_status_that_makes_no_sense_fails(status: dict[str, Any], message: str) -> None:
    appliance = Appliance(plan=["drop"])
    with pytest.raises(ReadFailed, match=message):
        read_disk(Disk(sparse_disk(2 * C, [0, C])), 2 * C, send=appliance.send, finish=appliance.finish,
                  status=lambda: status, chunk=C, sleep=lambda _s: None)


@pytest.mark.parametrize(("total", "chunk"), [(-1, C), (C, 0)])
def test_nonsense_arguments(total: int, chunk: int) -> None:
    appliance = Appliance()
    with pytest.raises(ValueError, match="cannot read"):
        read_disk(Disk(b""), total, send=appliance.send, finish=appliance.finish, status=appliance.status,
                  chunk=chunk)
