"""golden_images.qcow2_layout and golden_images.flatten against the real qemu-img: files written
from a layout pass ``qemu-img check`` with no errors and no leaks (also with small clusters, so
that many L2 tables and several refcount blocks are needed), and flattened chains read back exactly
as their source, with the sha256 of the file as written."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from pathlib import Path

import pytest

from golden_images import qemu_img
from golden_images.flatten import NotFlattenable, flatten
from golden_images.qcow2_layout import data_runs, plan
from golden_images.store import ImageStore

pytestmark = pytest.mark.slow
MIB = 1 << 20


def qemu_io(path: Path, *commands: str) -> None:
    argv = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        argv += ["-c", command]
    done = subprocess.run([*argv, str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "verification failed" not in done.stdout, done.stdout + done.stderr


def clean(path: Path) -> None:
    report = qemu_img.check(path)
    assert report.get("check-errors", 0) == 0 and report.get("corruptions", 0) == 0, report
    assert report.get("leaks", 0) == 0, report


@pytest.mark.parametrize("cluster_bits", [9, 12, 16])
def test_a_written_layout_is_a_valid_qcow2(tmp_path: Path, cluster_bits: int) -> None:
    """Random runs over a disk that needs many L2 tables (and, with 512-byte clusters, several
    refcount blocks and refcount table clusters); the guest reads exactly the data placed."""
    rng = random.Random(cluster_bits)
    size = 1 << cluster_bits
    virtual = 48 * MIB + 3 * 512  # does not end on a cluster boundary
    guest_clusters = -(-virtual // size)
    chosen = sorted([*rng.sample(range(guest_clusters), k=min(guest_clusters // 3, 20000)), guest_clusters - 1])
    runs: list[tuple[int, int]] = []
    for cluster in chosen:
        if runs and runs[-1][0] + runs[-1][1] == cluster:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        elif not runs or cluster >= runs[-1][0] + runs[-1][1]:
            runs.append((cluster, 1))
    layout = plan(virtual, runs, cluster_bits)
    if cluster_bits == 9:
        assert layout.refcount_blocks > 1 and layout.refcount_table_clusters > 1
    assert len(layout.l2_tables) > 1 or cluster_bits == 16  # one 64 KiB L2 table maps 512 MiB
    image, raw = tmp_path / "made.qcow2", bytearray(guest_clusters * size)
    with image.open("wb") as out:
        out.write(layout.metadata())
        for guest, host in layout.placements():
            data = rng.randbytes(size)
            assert out.tell() == host * size
            out.write(data)
            raw[guest * size:(guest + 1) * size] = data
    assert image.stat().st_size == layout.file_size
    clean(image)
    reference = tmp_path / "reference.raw"
    reference.write_bytes(bytes(raw[:virtual]))
    assert qemu_img.info(image)["virtual-size"] == virtual
    assert qemu_img.identical(image, reference, b_format="raw")


def test_bad_runs_are_refused() -> None:
    for runs in ([(4, 2), (5, 1)], [(0, 0)], [(3, 1), (1, 1)], [(0, 1000)]):
        with pytest.raises(ValueError):
            plan(64 * 1024 * 10, runs)
    with pytest.raises(ValueError):
        plan(MIB, [], cluster_bits=22)


def test_data_runs_from_a_map() -> None:
    extents = [{"start": 0, "length": 100, "data": True, "zero": False},
               {"start": 100, "length": 65436, "data": False, "zero": True},
               {"start": 65536, "length": 131072, "data": True, "zero": False},
               {"start": 196608, "length": 65536, "data": True, "zero": True},
               {"start": 327680, "length": 70000, "data": True, "zero": False}]
    assert data_runs(extents, 65536, 327680 + 70000) == [(0, 3), (5, 2)]


def golden_and_volume(tmp_path: Path) -> tuple[Path, Path]:
    """A golden image with data in several places and a volume on it that overwrites part of it,
    writes new data, zeroes a range, and is larger than the image by a size that is not a whole
    number of clusters."""
    golden = tmp_path / "golden.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(golden), "20M"], check=True, timeout=30)
    source = tmp_path / "random.bin"
    source.write_bytes(os.urandom(6 * MIB))
    qemu_io(golden, f"write -s {source} 0 6M", "write -P 0x11 12M 1M", "write -P 0x22 19M 1M")
    volume = tmp_path / "volume.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", golden.name, "-F", "qcow2", str(volume),
                    str(24 * MIB + 1536)], check=True, timeout=30)
    qemu_io(volume, "write -P 0x33 1M 2M", "write -z 4M 512k", "write -P 0x44 24M 1536", "write -P 0x55 12M 64k")
    return golden, volume


def test_flatten_reads_back_as_the_chain(tmp_path: Path) -> None:
    _golden, volume = golden_and_volume(tmp_path)
    seen: list[float] = []
    first = tmp_path / "flat-1.qcow2"
    made = flatten(volume, first, on_progress=seen.append)
    digest = made.sha256
    assert digest == hashlib.sha256(first.read_bytes()).hexdigest()
    assert made.info["virtual-size"] == 24 * MIB + 1536 and made.info["format"] == "qcow2"
    assert seen and seen[-1] == 100.0 and seen == sorted(seen)
    clean(first)
    info = qemu_img.info(first)
    assert info["virtual-size"] == 24 * MIB + 1536 and "backing-filename" not in info
    assert qemu_img.identical(first, volume)
    converted = tmp_path / "converted.qcow2"
    qemu_img.convert(volume, converted, src_format="qcow2")
    assert qemu_img.identical(first, converted)
    second = tmp_path / "flat-2.qcow2"
    assert flatten(volume, second).sha256 == digest  # the same chain, the same file: content addressing holds
    with pytest.raises(FileExistsError):
        flatten(volume, first)


def test_compressed_clusters_fall_back_to_qemu_img(tmp_path: Path) -> None:
    golden = tmp_path / "packed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(golden), "4M"], check=True, timeout=30)
    qemu_io(golden, "write -c -P 0x66 0 64k", "write -P 0x77 1M 64k")
    with pytest.raises(NotFlattenable):
        flatten(golden, tmp_path / "never.qcow2")
    store = ImageStore(tmp_path / "store", max_virtual_size=1 << 40)
    image = store.capture(golden)
    assert image.sha256 == hashlib.sha256(image.path.read_bytes()).hexdigest()
    assert qemu_img.identical(image.path, golden)


def test_store_capture_and_qcow2_export_use_one_pass(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store", max_virtual_size=1 << 40)
    golden, _ = golden_and_volume(tmp_path)
    image = store.ingest(golden)
    volume = store.create_volume(image.sha256, "node-1", size=24 * MIB)
    qemu_io(volume, "write -P 0x99 2M 1M")
    captured = store.capture(volume)
    assert captured.sha256 == hashlib.sha256(captured.path.read_bytes()).hexdigest()
    clean(captured.path)
    assert qemu_img.identical(captured.path, volume)
    exported = store.export_volume("node-1", "qcow2")
    assert exported.sha256 == hashlib.sha256(exported.path.read_bytes()).hexdigest()
    assert qemu_img.identical(exported.path, volume)
    assert exported.sha256 == captured.sha256  # one volume, one file
