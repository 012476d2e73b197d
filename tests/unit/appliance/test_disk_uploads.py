"""The appliance's side of a ``read_disk`` upload (appliance/services/disk_uploads.py): ranges
written into a sparse file, ``committed`` as the place to resume, the end, and what is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.errors import Conflict, InvalidInput, PayloadTooLarge
from appliance.services.disk_uploads import MAX_RANGE_BYTES, ContentRange, DiskUpload

COMMAND = "6f1c2a9e-0000-4000-8000-000000000001"
MiB = 1 << 20


def put(upload: DiskUpload, start: int, data: bytes, total: int) -> int:
    return upload.receive(ContentRange.parse(f"bytes {start}-{start + len(data) - 1}/{total}", 1 << 40), data).committed


def test_ranges_with_gaps_make_a_sparse_file_equal_to_the_disk(tmp_path: Path) -> None:
    disk = os.urandom(MiB) + bytes(2 * MiB) + os.urandom(MiB)
    upload = DiskUpload(tmp_path, COMMAND)
    assert upload.status().public() == {"committed": 0, "total": None, "complete": False}
    assert put(upload, 0, disk[:MiB], len(disk)) == MiB
    assert put(upload, 3 * MiB, disk[3 * MiB:], len(disk)) == 4 * MiB  # the zeros between were never sent
    end = upload.receive(ContentRange.parse(f"bytes */{len(disk)}", 1 << 40), b"")
    assert end.public() == {"committed": len(disk), "total": len(disk), "complete": True}
    assert upload.path.read_bytes() == disk
    assert upload.path.stat().st_blocks * 512 < len(disk)  # the gap takes no space
    assert DiskUpload(tmp_path, COMMAND).status() == end  # the state is on disk, not in the object
    upload.remove()
    assert list(tmp_path.iterdir()) == []


def test_an_all_zero_disk_is_only_its_end(tmp_path: Path) -> None:
    upload = DiskUpload(tmp_path, COMMAND)
    upload.receive(ContentRange.parse("bytes */3145728", 1 << 40), b"")
    assert upload.path.read_bytes() == bytes(3 * MiB)


def test_a_range_cut_short_is_not_committed_and_is_sent_again(tmp_path: Path) -> None:
    disk = os.urandom(2 * MiB)
    upload = DiskUpload(tmp_path, COMMAND)
    put(upload, 0, disk[:MiB], len(disk))
    with pytest.raises(InvalidInput, match="the body has 100 bytes; Content-Range says 1048576"):
        upload.receive(ContentRange.parse(f"bytes {MiB}-{2 * MiB - 1}/{len(disk)}", 1 << 40), disk[MiB:MiB + 100])
    assert upload.status().committed == MiB  # where the agent goes on from
    assert put(upload, MiB, disk[MiB:], len(disk)) == 2 * MiB
    assert put(upload, 0, disk[:MiB], len(disk)) == 2 * MiB  # a range sent twice changes nothing
    assert upload.path.read_bytes() == disk


def test_the_total_cannot_change_and_the_end_has_no_body(tmp_path: Path) -> None:
    upload = DiskUpload(tmp_path, COMMAND)
    put(upload, 0, b"x", 10)
    with pytest.raises(Conflict, match="10 bytes long, not 11"):
        put(upload, 0, b"x", 11)
    with pytest.raises(InvalidInput, match="has no body"):
        upload.receive(ContentRange.parse("bytes */10", 1 << 40), b"x")


@pytest.mark.parametrize(("header", "error"), [
    (None, InvalidInput), ("", InvalidInput), ("bytes 0-9/", InvalidInput), ("items 0-1/2", InvalidInput),
    ("bytes 5-4/10", InvalidInput), ("bytes 0-10/10", InvalidInput), ("bytes -1-2/10", InvalidInput),
    ("bytes 0-1/2 trailing", InvalidInput), (f"bytes 0-{MAX_RANGE_BYTES}/{1 << 30}", PayloadTooLarge),
    ("bytes */1099511627777", PayloadTooLarge),
])
def test_malformed_or_oversized_ranges_are_refused(header: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        ContentRange.parse(header, 1 << 40)


@pytest.mark.parametrize("command", ["../../etc/passwd", "", "x" * 65, "a/b", "CAPS"])
def test_a_command_id_never_names_a_path(tmp_path: Path, command: str) -> None:
    with pytest.raises(InvalidInput):
        DiskUpload(tmp_path, command)
