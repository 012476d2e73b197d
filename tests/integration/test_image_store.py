"""golden_images.store with real files and the real qemu-img (Debian qemu-utils): nothing mocked.

Every image is made here, in ``tmp_path``, with qemu-img, qemu-io, zipfile or by hand, and kept to
a few MiB so that the file runs in seconds. Disk contents are random (seeded) so that no cluster
is all zeros: qemu-img convert leaves zero clusters unallocated, and ``qemu_img.identical`` (which
runs ``qemu-img compare -s``) also compares allocation, see
``test_identical_compares_contents_not_allocation``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import select
import signal
import stat
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from golden_images import qemu_img
from golden_images.assess import ImageRefused
from golden_images.store import ImageStore, StoredImage, sha256_of

pytestmark = pytest.mark.slow

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
DISK_SIZE = 4 * MiB
LIMIT = 1 * GiB
CMD_TIMEOUT = 60
REPO = Path(__file__).resolve().parents[2]


# -- helpers -------------------------------------------------------------------------------------


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done


def create_encrypted(fmt: str, path: Path, options: str) -> None:
    """``qemu-img create`` of a LUKS-encrypted image. qemu-img times PBKDF2 on the CPU first and,
    on a busy machine, now and then gives up ("Unable to get accurate CPU usage"): try again."""
    args = ["qemu-img", "create", "-q", "-f", fmt, "--object", "secret,id=sec0,data=123456", "-o", options,
            str(path), "1M"]
    for _ in range(3):
        done = subprocess.run(args, capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False)
        if done.returncode == 0:
            return
        path.unlink(missing_ok=True)
    pytest.fail(f"{args}: {done.stderr}")


def info_of(path: Path) -> dict[str, object]:
    """What qemu-img says about a file (probed, as the store probes an upload)."""
    parsed = json.loads(run("qemu-img", "info", "--output=json", path).stdout)
    assert isinstance(parsed, dict)
    return parsed


def to_raw(image: Path, fmt: str, dest: Path) -> bytes:
    """The bytes the guest sees, through qemu-img convert."""
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", image, dest)
    return dest.read_bytes()


def random_bytes(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_nothing_left(store: ImageStore) -> None:
    assert names(store.golden_dir) == []
    assert names(store.incoming_dir) == []


def refuse(store: ImageStore, source: Path, **kwargs: object) -> str:
    """Ingest ``source``, which must be refused without a trace and without touching the source."""
    before = file_sha(source)
    with pytest.raises(ImageRefused) as caught:
        store.ingest(source, **kwargs)  # type: ignore[arg-type]
    assert_nothing_left(store)
    assert file_sha(source) == before
    return caught.value.reason


def assert_golden(store: ImageStore, stored: StoredImage) -> None:
    """A published golden image: qcow2, self-contained, read-only, named by its checksum."""
    assert stored.path == store.golden_path(stored.sha256)
    assert stored.path.parent == store.golden_dir
    assert stored.sha256 == sha256_of(stored.path) == file_sha(stored.path)
    assert stored.size == stored.path.stat().st_size
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o444
    assert store.verify(stored.sha256)
    info = info_of(stored.path)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == stored.virtual_size
    for key in ("backing-filename", "full-backing-filename"):
        assert key not in info
    data = info["format-specific"]["data"]  # type: ignore[index]
    assert "data-file" not in data
    assert data["corrupt"] is False
    assert qemu_img.check(stored.path)["check-errors"] == 0
    assert names(store.incoming_dir) == []


def zip_of(path: Path, members: dict[str, bytes | Path], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as bundle:
        for name, content in members.items():
            if isinstance(content, Path):
                bundle.write(content, name)
            else:
                bundle.writestr(name, content)
    return path


def member_data_span(path: Path) -> tuple[int, int]:
    """Offset and length of the (only) member's compressed data inside a zip file."""
    with zipfile.ZipFile(path) as bundle:
        member = bundle.infolist()[0]
    header = path.read_bytes()[member.header_offset:member.header_offset + 30]
    assert header[:4] == b"PK\x03\x04"
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return member.header_offset + 30 + name_len + extra_len, member.compress_size


def flip(path: Path, offset: int, count: int = 8) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def poke(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store", max_virtual_size=LIMIT)


@pytest.fixture
def disk(tmp_path: Path) -> tuple[Path, bytes]:
    """A raw disk of DISK_SIZE random bytes, and those bytes."""
    data = random_bytes(DISK_SIZE)
    path = tmp_path / "disk.raw"
    path.write_bytes(data)
    return path, data


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """Where hostile and converted files are made, outside the store."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def golden(store: ImageStore, disk: tuple[Path, bytes]) -> StoredImage:
    return store.ingest(disk[0])


# -- accepted formats ----------------------------------------------------------------------------

CONVERSIONS = {
    "qcow2": ("qcow2", ["-O", "qcow2"]),
    "qcow2-compressed": ("qcow2", ["-O", "qcow2", "-c"]),
    "vmdk-monolithicSparse": ("vmdk", ["-O", "vmdk", "-o", "subformat=monolithicSparse"]),
    "vmdk-streamOptimized": ("vmdk", ["-O", "vmdk", "-o", "subformat=streamOptimized"]),
    "vhdx": ("vhdx", ["-O", "vhdx"]),
    "vpc-force-size": ("vpc", ["-O", "vpc", "-o", "force_size=on"]),
}


@pytest.mark.parametrize("kind", list(CONVERSIONS))
def test_accepted_format_is_stored_as_identical_qcow2(kind: str, store: ImageStore, disk: tuple[Path, bytes],
                                                      work: Path) -> None:
    fmt, options = CONVERSIONS[kind]
    source = work / f"image.{kind}"
    run("qemu-img", "convert", "-f", "raw", *options, disk[0], source)
    assert info_of(source)["format"] == fmt

    before = file_sha(source)
    stored = store.ingest(source)

    assert stored.source_format == fmt
    assert stored.virtual_size == DISK_SIZE
    assert_golden(store, stored)
    assert names(store.golden_dir) == [f"{stored.sha256}.qcow2"]
    assert qemu_img.identical(stored.path, disk[0], b_format="raw")
    assert to_raw(stored.path, "qcow2", work / "back.raw") == disk[1]
    assert file_sha(source) == before  # the upload is never modified


def test_raw_is_stored_as_identical_qcow2(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    stored = store.ingest(disk[0], claimed="raw")
    assert stored.source_format == "raw"
    assert stored.virtual_size == DISK_SIZE
    assert_golden(store, stored)
    assert qemu_img.identical(stored.path, disk[0], b_format="raw")
    assert to_raw(stored.path, "qcow2", work / "back.raw") == disk[1]


def test_vpc_rounds_the_size_up_to_its_geometry(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    # A dynamic VHD (qemu-img's default, no force_size) gets a CHS geometry: 4 MiB becomes
    # 4212736 bytes (121 cylinders x 4 heads x 17 sectors = 8228 sectors) on qemu-img 7.2. The
    # store keeps what the VHD says; the guest sees the disk followed by zeros.
    source = work / "image.vhd"
    run("qemu-img", "convert", "-f", "raw", "-O", "vpc", disk[0], source)
    vhd_size = info_of(source)["virtual-size"]
    assert isinstance(vhd_size, int)
    assert vhd_size > DISK_SIZE

    stored = store.ingest(source, claimed="vpc")

    assert stored.source_format == "vpc"
    assert stored.virtual_size == vhd_size
    assert_golden(store, stored)
    assert not qemu_img.identical(stored.path, disk[0], b_format="raw")  # strict sizes differ
    content = to_raw(stored.path, "qcow2", work / "back.raw")
    assert len(content) == vhd_size
    assert content[:DISK_SIZE] == disk[1]
    assert content[DISK_SIZE:] == bytes(vhd_size - DISK_SIZE)


def test_same_content_twice_is_stored_once(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    first = store.ingest(disk[0])
    published = first.path.stat()
    copy = work / "copy.raw"
    copy.write_bytes(disk[1])
    second = store.ingest(copy)
    assert first.path.stat().st_ino == published.st_ino  # the published file is kept, not replaced
    assert second.sha256 == first.sha256
    assert second.path == first.path
    assert names(store.golden_dir) == [f"{first.sha256}.qcow2"]
    assert names(store.incoming_dir) == []
    assert store.verify(first.sha256)


def test_different_content_is_stored_apart(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    first = store.ingest(disk[0])
    other = work / "other.raw"
    other.write_bytes(random_bytes(DISK_SIZE, seed=2))
    second = store.ingest(other)
    assert second.sha256 != first.sha256
    assert names(store.golden_dir) == sorted([f"{first.sha256}.qcow2", f"{second.sha256}.qcow2"])


def test_verify_notices_a_changed_golden_image(store: ImageStore, golden: StoredImage) -> None:
    assert store.verify(golden.sha256)
    golden.path.chmod(0o644)
    last = golden.path.read_bytes()[-1]
    poke(golden.path, golden.size - 1, bytes([last ^ 0x01]))
    assert not store.verify(golden.sha256)


def test_delete_golden(store: ImageStore, golden: StoredImage) -> None:
    store.delete_golden(golden.sha256)
    assert names(store.golden_dir) == []
    store.delete_golden(golden.sha256)  # already gone: no error


def test_progress_rises_to_100(store: ImageStore, work: Path) -> None:
    source = work / "big.raw"
    source.write_bytes(random_bytes(16 * MiB, seed=3))
    seen: list[float] = []
    store.ingest(source, on_progress=seen.append)
    assert len(seen) >= 2
    assert seen == sorted(seen)
    assert all(0.0 <= p <= 100.0 for p in seen)
    assert seen[-1] == 100.0


def test_identical_compares_contents_not_allocation(store: ImageStore, work: Path) -> None:
    # qemu_img.identical says it tells "whether two images show the guest the same bytes", but
    # `qemu-img compare -s` also fails on a different allocation status: a raw disk with a zeroed
    # MiB and its qcow2 (where convert leaves that MiB unallocated) hold the same bytes.
    source = work / "holes.raw"
    content = random_bytes(MiB, seed=4) + bytes(MiB) + random_bytes(MiB, seed=5)
    source.write_bytes(content)
    stored = store.ingest(source)
    assert to_raw(stored.path, "qcow2", work / "back.raw") == content  # the store itself is right
    assert qemu_img.identical(stored.path, source, b_format="raw")


# -- hostile images ------------------------------------------------------------------------------


def test_qcow2_with_backing_file_is_refused(store: ImageStore, work: Path) -> None:
    source = work / "x.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", source, "1M")
    assert info_of(source)["backing-filename"] == "/etc/shadow"
    reason = refuse(store, source)
    assert "backing file" in reason
    assert "/etc/shadow" in reason


def test_qcow2_with_backing_file_given_as_qcow2_is_refused(store: ImageStore, work: Path) -> None:
    source = work / "x.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", source, "1M")
    assert "backing file" in refuse(store, source, claimed="qcow2")


def test_vmdk_delta_disk_with_a_parent_is_refused(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    base = work / "base.vmdk"
    run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", disk[0], base)
    child = work / "child.vmdk"
    run("qemu-img", "create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", child)
    assert info_of(child)["backing-filename"] == str(base)
    reason = refuse(store, child)
    assert "backing file" in reason
    assert str(base) in reason


def test_qcow2_with_external_data_file_is_refused(store: ImageStore, work: Path) -> None:
    source = work / "x.qcow2"
    data_file = work / "data.bin"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={data_file}", source, "1M")
    assert info_of(source)["format-specific"]["data"]["data-file"] == str(data_file)  # type: ignore[index]
    reason = refuse(store, source)
    assert "data" in reason
    assert "another file" in reason
    assert str(data_file) in reason


VMDK_DESCRIPTOR = """# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="{create_type}"

RW 2048 FLAT "{extent}" 0

ddb.virtualHWVersion = "4"
ddb.geometry.cylinders = "2"
ddb.geometry.heads = "16"
ddb.geometry.sectors = "63"
ddb.adapterType = "ide"
"""


def test_vmdk_descriptor_naming_etc_passwd_is_refused(store: ImageStore, work: Path) -> None:
    source = work / "desc.vmdk"
    source.write_text(VMDK_DESCRIPTOR.format(create_type="monolithicFlat", extent="/etc/passwd"))
    # What qemu-img 7.2 makes of it: a vmdk whose data is /etc/passwd. (It lists the one extent
    # twice, and doubles the virtual size, when a blank line comes before the extent line.)
    info = info_of(source)
    assert info["format"] == "vmdk"
    data = info["format-specific"]["data"]  # type: ignore[index]
    assert data["create-type"] == "monolithicFlat"
    assert {extent["filename"] for extent in data["extents"]} == {"/etc/passwd"}
    reason = refuse(store, source)
    assert "VMDK" in reason
    assert "monolithicFlat" in reason


def test_vmdk_descriptor_given_as_raw_is_refused(store: ImageStore, work: Path) -> None:
    source = work / "desc.img"
    source.write_text(VMDK_DESCRIPTOR.format(create_type="monolithicFlat", extent="/etc/passwd"))
    reason = refuse(store, source, claimed="raw")
    assert "given as raw" in reason
    assert "vmdk" in reason


@pytest.mark.parametrize("create_type", ["twoGbMaxExtentFlat", "vmfs"])
def test_other_vmdk_descriptors_naming_another_file_are_refused(create_type: str, store: ImageStore,
                                                               work: Path) -> None:
    extent = work / "extent.bin"
    extent.write_bytes(random_bytes(MiB))
    source = work / "desc.vmdk"
    source.write_text(VMDK_DESCRIPTOR.format(create_type=create_type, extent=extent.name))
    assert info_of(source)["format"] == "vmdk"
    reason = refuse(store, source)
    assert "VMDK" in reason
    assert create_type in reason


def test_vmdk_made_of_two_gb_extents_is_refused(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    source = work / "split.vmdk"
    run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", disk[0], source)
    reason = refuse(store, source)
    assert "VMDK" in reason
    assert "twoGbMaxExtentSparse" in reason


def test_virtual_size_over_the_limit_is_refused(tmp_path: Path, work: Path) -> None:
    store = ImageStore(tmp_path / "small-store", max_virtual_size=1 * GiB)
    source = work / "huge.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", source, "2G")
    assert source.stat().st_size < MiB  # sparse: nothing is allocated
    reason = refuse(store, source)
    assert "limit" in reason
    assert str(2 * GiB) in reason
    assert str(1 * GiB) in reason


def test_sparse_raw_over_the_limit_is_refused(tmp_path: Path, work: Path) -> None:
    store = ImageStore(tmp_path / "small-store", max_virtual_size=64 * MiB)
    source = work / "huge.raw"
    with source.open("wb") as f:
        f.truncate(64 * MiB + 512)
    reason = refuse(store, source)
    assert "limit" in reason
    assert str(64 * MiB + 512) in reason


def test_qcow2_header_with_garbage_size_is_refused(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    source = work / "bad.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk[0], source)
    poke(source, 24, b"\xff" * 8)  # the header's size field (bytes 24-31)
    reason = refuse(store, source)
    assert "not a readable disk image" in reason


def test_qcow2_header_with_size_beyond_its_l1_table_is_refused(store: ImageStore, disk: tuple[Path, bytes],
                                                              work: Path) -> None:
    source = work / "bad.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk[0], source)
    poke(source, 24, struct.pack(">Q", 1 << 50))  # 1 PiB, with an L1 table for 4 MiB
    assert "not a readable disk image" in refuse(store, source)


def test_qcow2_header_with_garbage_cluster_bits_is_refused(store: ImageStore, disk: tuple[Path, bytes],
                                                          work: Path) -> None:
    source = work / "bad.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk[0], source)
    poke(source, 20, b"\x00\x00\x00\xff")  # cluster_bits
    assert "not a readable disk image" in refuse(store, source)


@pytest.mark.parametrize("version", [b"\x00\x00\x00\x03", b"\x00\x00\x00\x02", b"\xde\xad\xbe\xef"])
def test_qcow2_magic_followed_by_garbage_is_refused(version: bytes, store: ImageStore, work: Path) -> None:
    source = work / "garbage.qcow2"
    source.write_bytes(b"QFI\xfb" + version + random_bytes(64 * KiB, seed=6))
    assert "not a readable disk image" in refuse(store, source)


def test_qcow2_marked_corrupt_is_refused(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    source = work / "corrupt.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk[0], source)
    poke(source, 72, struct.pack(">Q", 1 << 1))  # incompatible_features: the "corrupt" bit
    assert info_of(source)["format-specific"]["data"]["corrupt"] is True  # type: ignore[index]
    assert "corrupt" in refuse(store, source)


def test_qcow2_with_corrupt_l2_table_is_refused(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    # The header is fine, so qemu-img info (and assess) pass it; the first L2 table's entries point
    # at unaligned offsets, so reading the data fails ("Image is corrupt ... unaligned"). An upload
    # that cannot be read is a refusal like any other, not an internal error.
    source = work / "l2.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk[0], source)
    header = source.read_bytes()[:104]
    (l1_offset,) = struct.unpack(">Q", header[40:48])
    (l1_entry,) = struct.unpack(">Q", source.read_bytes()[l1_offset:l1_offset + 8])
    l2_offset = l1_entry & 0x00FFFFFFFFFFFE00
    poke(source, l2_offset, struct.pack(">Q", (1 << 63) | 0x12200) * 64)
    assert info_of(source)["format"] == "qcow2"
    refuse(store, source)


def test_encrypted_qcow2_is_refused(store: ImageStore, work: Path) -> None:
    # qemu-img info opens it without the key and reports "encrypted": true; it cannot be converted
    # without the key, so it must be refused with a reason, not fail as an internal error.
    source = work / "enc.qcow2"
    create_encrypted("qcow2", source, "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10")
    assert info_of(source)["encrypted"] is True
    assert "encrypt" in refuse(store, source).lower()


@pytest.mark.parametrize("fmt", ["luks", "vdi", "qed", "parallels"])
def test_unsupported_formats_are_refused(fmt: str, store: ImageStore, work: Path) -> None:
    source = work / f"x.{fmt}"
    if fmt == "luks":
        create_encrypted("luks", source, "key-secret=sec0,iter-time=10")
    else:
        run("qemu-img", "create", "-q", "-f", fmt, source, "1M")
    assert info_of(source)["format"] == fmt
    reason = refuse(store, source)
    assert f"is {fmt}" in reason
    assert "does not accept" in reason


def test_qcow2_given_as_raw_is_refused(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    source = work / "x.raw"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk[0], source)
    reason = refuse(store, source, claimed="raw")
    assert "given as raw" in reason
    assert "contents are qcow2" in reason


def test_raw_given_as_qcow2_is_refused(store: ImageStore, disk: tuple[Path, bytes]) -> None:
    reason = refuse(store, disk[0], claimed="qcow2")
    assert "given as qcow2" in reason
    assert "contents are raw" in reason


def test_empty_file_is_refused(store: ImageStore, work: Path) -> None:
    source = work / "empty.img"
    source.touch()
    assert "virtual size" in refuse(store, source)


def test_missing_file_is_refused(store: ImageStore, work: Path) -> None:
    with pytest.raises((ImageRefused, FileNotFoundError)):
        store.ingest(work / "nothing.img")
    assert_nothing_left(store)


# -- zips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA],
                         ids=["deflated", "stored", "bzip2", "lzma"])
def test_hpe_zip_of_one_raw_disk_is_accepted(method: int, store: ImageStore, disk: tuple[Path, bytes],
                                             work: Path) -> None:
    bundle = zip_of(work / "golden.zip", {"../../etc/evil-name.img": disk[0]}, method)
    stored = store.ingest(bundle)
    assert stored.source_format == "zip+raw"
    assert stored.virtual_size == DISK_SIZE
    assert_golden(store, stored)
    assert qemu_img.identical(stored.path, disk[0], b_format="raw")
    assert to_raw(stored.path, "qcow2", work / "back.raw") == disk[1]
    # The same disk uploaded plain is the same golden image.
    assert store.ingest(disk[0]).sha256 == stored.sha256


def test_hpe_zip_with_a_directory_entry_is_accepted(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    bundle = work / "golden.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("image/"), b"")
        z.write(disk[0], "image/disk.raw")
    stored = store.ingest(bundle, claimed="raw")
    assert stored.source_format == "zip+raw"
    assert qemu_img.identical(stored.path, disk[0], b_format="raw")


def test_zip_given_as_qcow2_is_refused(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    bundle = zip_of(work / "golden.zip", {"disk.img": disk[0]})
    reason = refuse(store, bundle, claimed="qcow2")
    assert "given as qcow2" in reason
    assert "zip" in reason


def test_zip_with_two_members_is_refused(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    bundle = zip_of(work / "two.zip", {"disk.img": disk[0], "readme.txt": b"hello"})
    reason = refuse(store, bundle)
    assert "holds 2 files" in reason


def test_empty_zip_is_refused(store: ImageStore, work: Path) -> None:
    bundle = zip_of(work / "empty.zip", {})
    assert bundle.read_bytes()[:4] == b"PK\x05\x06"
    assert "holds 0 files" in refuse(store, bundle)


def test_zip_with_an_empty_member_is_refused(store: ImageStore, work: Path) -> None:
    bundle = zip_of(work / "hollow.zip", {"disk.img": b""})
    assert "empty" in refuse(store, bundle)


def test_zip_member_over_the_bundle_limit_is_refused(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    bundle = zip_of(work / "golden.zip", {"disk.img": disk[0]})
    reason = refuse(store, bundle, max_bundle_bytes=1 * MiB)
    assert "larger than the limit" in reason
    assert str(1 * MiB) in reason


def test_zip_bomb_stops_at_the_store_limit(tmp_path: Path, work: Path) -> None:
    # 64 MiB of zeros deflate to ~64 KiB; a store whose limit is 16 MiB stops inflating there.
    store = ImageStore(tmp_path / "small-store", max_virtual_size=16 * MiB)
    bundle = zip_of(work / "bomb.zip", {"disk.img": bytes(64 * MiB)})
    assert bundle.stat().st_size < MiB
    assert "larger than the limit" in refuse(store, bundle)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_zip_with_corrupted_member_fails_its_crc(method: int, where: float, store: ImageStore,
                                                 disk: tuple[Path, bytes], work: Path) -> None:
    # Random data does not compress: deflate stores it in raw blocks, so flipped bytes inside the
    # data inflate fine and only the CRC-32 at the end tells.
    bundle = zip_of(work / "golden.zip", {"disk.img": disk[0]}, method)
    start, length = member_data_span(bundle)
    flip(bundle, start + int(length * where))
    reason = refuse(store, bundle)
    assert "damaged" in reason
    assert "CRC" in reason


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_zip_with_corrupted_deflate_stream_is_refused(where: float, store: ImageStore, work: Path) -> None:
    # A compressible disk: its deflate stream is Huffman-coded, and flipped bytes make zlib fail
    # ("invalid block type") before any CRC check.
    content = bytes(range(256)) * (DISK_SIZE // 256)
    bundle = zip_of(work / "golden.zip", {"disk.img": content}, zipfile.ZIP_DEFLATED)
    start, length = member_data_span(bundle)
    flip(bundle, start + int(length * where))
    assert "damaged" in refuse(store, bundle)


def test_truncated_zip_is_refused(store: ImageStore, disk: tuple[Path, bytes], work: Path) -> None:
    bundle = zip_of(work / "golden.zip", {"disk.img": disk[0]})
    bundle.write_bytes(bundle.read_bytes()[: DISK_SIZE // 2])
    assert "damaged" in refuse(store, bundle)


def test_zip_of_qcow2_with_backing_file_is_refused(store: ImageStore, work: Path) -> None:
    # A zip's member is taken as a raw disk (claimed "raw"), but it is probed like any upload first:
    # qemu-img sees a qcow2 header, and a qcow2 given as raw is a claim mismatch. (Were it converted
    # as raw, its bytes would only become the image's contents, which is safe too; it is not.)
    inner = work / "x.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", inner, "1M")
    bundle = zip_of(work / "golden.zip", {"disk.raw": inner})
    reason = refuse(store, bundle)
    assert "given as raw" in reason
    assert "contents are qcow2" in reason


def test_zip_of_vmdk_descriptor_is_refused(store: ImageStore, work: Path) -> None:
    descriptor = VMDK_DESCRIPTOR.format(create_type="monolithicFlat", extent="/etc/passwd").encode()
    bundle = zip_of(work / "golden.zip", {"disk.raw": descriptor})
    reason = refuse(store, bundle)
    assert "given as raw" in reason
    assert "vmdk" in reason


# -- OS volumes ----------------------------------------------------------------------------------


def test_volume_is_an_overlay_on_the_golden_image(store: ImageStore, golden: StoredImage) -> None:
    volume = store.create_volume(golden.sha256, "vm-1")
    assert volume == store.volume_path("vm-1") == store.volumes_dir / "vm-1.qcow2"
    info = qemu_img.info(volume)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == f"../golden/{golden.sha256}.qcow2"
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == DISK_SIZE
    assert qemu_img.check(volume)["check-errors"] == 0
    assert qemu_img.identical(volume, golden.path)
    assert volume.stat().st_size < MiB  # nothing copied
    assert names(store.incoming_dir) == []
    assert store.verify(golden.sha256)


def test_volume_survives_the_store_moving(store: ImageStore, golden: StoredImage, tmp_path: Path) -> None:
    store.create_volume(golden.sha256, "vm-1")
    moved_root = tmp_path / "moved"
    store.root.rename(moved_root)
    moved = ImageStore(moved_root, max_virtual_size=LIMIT)
    assert qemu_img.identical(moved.volume_path("vm-1"), moved.golden_path(golden.sha256))


def test_volume_grown_with_size(store: ImageStore, golden: StoredImage, disk: tuple[Path, bytes],
                                work: Path) -> None:
    volume = store.create_volume(golden.sha256, "vm-big", size=3 * DISK_SIZE)
    assert qemu_img.info(volume)["virtual-size"] == 3 * DISK_SIZE
    assert qemu_img.info(volume)["backing-filename"] == f"../golden/{golden.sha256}.qcow2"
    assert qemu_img.check(volume)["check-errors"] == 0
    content = to_raw(volume, "qcow2", work / "vol.raw")
    assert content[:DISK_SIZE] == disk[1]
    assert content[DISK_SIZE:] == bytes(2 * DISK_SIZE)


def test_volume_of_the_same_size(store: ImageStore, golden: StoredImage) -> None:
    volume = store.create_volume(golden.sha256, "vm-same", size=DISK_SIZE)
    assert qemu_img.identical(volume, golden.path)


def test_full_volume_is_an_independent_copy(store: ImageStore, golden: StoredImage) -> None:
    volume = store.create_volume(golden.sha256, "vm-full", full=True)
    info = qemu_img.info(volume)
    assert info["format"] == "qcow2"
    assert "backing-filename" not in info
    assert qemu_img.check(volume)["check-errors"] == 0
    assert qemu_img.identical(volume, golden.path)
    store.delete_golden(golden.sha256)
    assert qemu_img.check(volume)["check-errors"] == 0  # still readable without its image


def test_full_volume_grown_with_size(store: ImageStore, golden: StoredImage, disk: tuple[Path, bytes],
                                     work: Path) -> None:
    volume = store.create_volume(golden.sha256, "vm-full", full=True, size=2 * DISK_SIZE)
    info = qemu_img.info(volume)
    assert "backing-filename" not in info
    assert info["virtual-size"] == 2 * DISK_SIZE
    assert to_raw(volume, "qcow2", work / "vol.raw") == disk[1] + bytes(DISK_SIZE)


@pytest.mark.parametrize("full", [False, True], ids=["overlay", "full"])
def test_volume_smaller_than_its_image_is_refused(full: bool, store: ImageStore, golden: StoredImage) -> None:
    with pytest.raises(ValueError, match="smaller"):
        store.create_volume(golden.sha256, "vm-small", full=full, size=DISK_SIZE - 512)
    assert names(store.volumes_dir) == []
    assert names(store.incoming_dir) == []


def test_existing_volume_id_is_refused(store: ImageStore, golden: StoredImage) -> None:
    volume = store.create_volume(golden.sha256, "vm-1")
    before = volume.read_bytes()
    with pytest.raises(FileExistsError):
        store.create_volume(golden.sha256, "vm-1")
    with pytest.raises(FileExistsError):
        store.create_volume(golden.sha256, "vm-1", full=True)
    assert volume.read_bytes() == before
    assert names(store.volumes_dir) == ["vm-1.qcow2"]


# "x\n": a regex ending in $ also matches before a trailing newline.
@pytest.mark.parametrize("volume_id", ["../x", "", "a/b", ".hidden", "-x", "x" * 65, "a b", "x\n", "../golden/x"])
def test_bad_volume_id_is_refused(volume_id: str, store: ImageStore, golden: StoredImage) -> None:
    with pytest.raises(ValueError, match="volume id"):
        store.create_volume(golden.sha256, volume_id)
    with pytest.raises(ValueError, match="volume id"):
        store.volume_path(volume_id)
    assert names(store.volumes_dir) == []
    assert names(store.golden_dir) == [f"{golden.sha256}.qcow2"]


def test_unknown_golden_image_is_refused(store: ImageStore, golden: StoredImage) -> None:
    with pytest.raises(FileNotFoundError):
        store.create_volume("0" * 64, "vm-1")
    assert names(store.volumes_dir) == []


@pytest.mark.parametrize("sha", ["xyz", "../golden/x", "A" * 64, "0" * 63, "0" * 64 + "\n"])
def test_malformed_checksum_is_refused(sha: str, store: ImageStore, golden: StoredImage) -> None:
    with pytest.raises(ValueError, match="sha256"):
        store.create_volume(sha, "vm-1")
    with pytest.raises(ValueError, match="sha256"):
        store.verify(sha)
    assert names(store.volumes_dir) == []


def test_delete_volume_keeps_the_golden_image(store: ImageStore, golden: StoredImage) -> None:
    store.create_volume(golden.sha256, "vm-1")
    store.delete_volume("vm-1")
    assert names(store.volumes_dir) == []
    assert store.verify(golden.sha256)
    store.delete_volume("vm-1")  # already gone: no error


# -- capture -------------------------------------------------------------------------------------

PATTERN_AT = 1 * MiB
PATTERN_LEN = 64 * KiB


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_capture_of_a_modified_clone(compress: bool, store: ImageStore, golden: StoredImage,
                                     disk: tuple[Path, bytes], work: Path) -> None:
    volume = store.create_volume(golden.sha256, "vm-1")
    run("qemu-io", "-f", "qcow2", "-c", f"write -P 0xab {PATTERN_AT} {PATTERN_LEN}", volume)

    seen: list[float] = []
    captured = store.capture(volume, compress=compress, on_progress=seen.append)

    assert captured.source_format == "qcow2"
    assert captured.sha256 != golden.sha256
    assert captured.virtual_size == DISK_SIZE
    assert_golden(store, captured)
    assert names(store.golden_dir) == sorted([f"{golden.sha256}.qcow2", f"{captured.sha256}.qcow2"])
    assert "backing-filename" not in qemu_img.info(captured.path)
    checked = qemu_img.check(captured.path)
    # qemu-img writes a cluster compressed only where that saves space: the 0xab cluster.
    assert (checked.get("compressed-clusters", 0) >= 1) is compress
    assert seen and seen[-1] == 100.0

    before = to_raw(golden.path, "qcow2", work / "golden.raw")
    after = to_raw(captured.path, "qcow2", work / "captured.raw")
    assert before == disk[1]
    assert len(after) == len(before)
    end = PATTERN_AT + PATTERN_LEN
    assert after[:PATTERN_AT] == before[:PATTERN_AT]
    assert after[end:] == before[end:]
    assert after[PATTERN_AT:end] == b"\xab" * PATTERN_LEN
    assert store.verify(golden.sha256)  # the golden image under the clone is untouched

    # The capture is a golden image like any other: a clone of it reads the pattern back.
    clone = store.create_volume(captured.sha256, "vm-2")
    assert to_raw(clone, "qcow2", work / "clone.raw") == after


def test_capture_of_an_unmodified_clone_reads_as_the_golden_image(store: ImageStore, golden: StoredImage) -> None:
    volume = store.create_volume(golden.sha256, "vm-1")
    captured = store.capture(volume)
    assert qemu_img.identical(captured.path, golden.path)
    # The one-pass capture lays the file out its own way (the import's is qemu-img's), but it is
    # deterministic: capturing the same volume again gives the same file, stored once.
    again = store.capture(store.create_volume(golden.sha256, "vm-2"))
    assert again.sha256 == captured.sha256
    assert names(store.golden_dir) == sorted([f"{golden.sha256}.qcow2", f"{captured.sha256}.qcow2"])


# -- crash safety --------------------------------------------------------------------------------

CRASH_SIZE = 256 * MiB
CRASH_CHILD = """
import sys, time
from pathlib import Path
from golden_images.store import ImageStore

root, source, marker = map(Path, sys.argv[1:4])
store = ImageStore(root, max_virtual_size=1 << 30)

def progress(percent):
    if not marker.exists():
        marker.write_text(str(percent))
        time.sleep(120)  # hold the import inside the conversion until the test kills it

store.ingest(source, on_progress=progress)
sys.exit("the import finished before it was killed")
"""


@pytest.fixture
def sparse_random_disk(tmp_path: Path) -> Path:
    """CRASH_SIZE bytes: 1 MiB of random data every 2 MiB, holes between."""
    path = tmp_path / "crash.raw"
    rng = random.Random(7)
    with path.open("wb") as f:
        for offset in range(0, CRASH_SIZE, 2 * MiB):
            f.seek(offset)
            f.write(rng.randbytes(MiB))
        f.truncate(CRASH_SIZE)
    return path


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def descendants(pid: int) -> list[int]:
    """PIDs of a process's children, grandchildren and so on (from /proc), deepest last."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    return found


def commands(pids: list[int]) -> list[str]:
    found = []
    for pid in pids:
        with contextlib.suppress(OSError):  # ended meanwhile
            found.append(Path(f"/proc/{pid}/comm").read_text().strip())
    return found


class Processes:
    """The processes a test started, directly or through its child; each is killed by its own pidfd
    (never a reused PID, never by name) and waited for, whatever happens in the test."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []
        self.pidfds: list[int] = []

    def adopt_descendants(self, pid: int) -> None:
        for descendant in descendants(pid):
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                self.pidfds.append(os.pidfd_open(descendant))

    def ended(self, timeout: float) -> bool:
        """Whether every adopted process has ended within ``timeout`` seconds (nothing is sent)."""
        poller = select.poll()
        for fd in self.pidfds:
            poller.register(fd, select.POLLIN)  # readable once the process has ended
        deadline = time.monotonic() + timeout
        ended: set[int] = set()
        while len(ended) < len(self.pidfds):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ended.update(fd for fd, _ in poller.poll(left * 1000))
        return True

    def kill_descendants(self, timeout: float) -> None:
        for fd in self.pidfds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        if not self.ended(timeout):
            pytest.fail("a killed qemu-img did not end")

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=30)
        try:
            self.kill_descendants(timeout=30)
        finally:
            for fd in self.pidfds:
                os.close(fd)
            self.pidfds.clear()


@pytest.fixture
def processes() -> Iterator[Processes]:
    started = Processes()
    try:
        yield started
    finally:
        started.close()


def test_import_killed_midway_leaves_only_incoming_work(tmp_path: Path, sparse_random_disk: Path,
                                                       processes: Processes) -> None:
    # qemu-img converts 256 MiB from the page cache in a fraction of a second, too fast to catch
    # by timing alone; so the child's progress callback marks the moment the conversion has begun
    # and then holds the import there (inside store.ingest, before anything is published). The
    # child is SIGKILLed at that point, while its qemu-img is still converting (it runs on while
    # the callback waits). The qemu-img must end by itself (qemu_img.die_with_parent): left
    # running, it would write on into incoming/.
    root = tmp_path / "store"
    marker = tmp_path / "converting"
    errors = tmp_path / "child.err"
    with errors.open("wb") as stderr:
        child = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, str(root), str(sparse_random_disk), str(marker)],
                                 cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    processes.children.append(child)
    incoming = root / "incoming"

    def converting() -> bool:
        if child.poll() is not None:
            pytest.fail(f"the child ended ({child.returncode}) before it was killed: {errors.read_text()}")
        return marker.exists() and any(incoming.glob("work-*/image.qcow2"))

    wait_for(converting, 60, "the child's conversion to start")
    processes.adopt_descendants(child.pid)
    assert processes.pidfds, "no qemu-img was running"
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert processes.ended(timeout=30), "qemu-img outlived the process that started it"

    assert names(root / "golden") == []
    assert names(root / "volumes") == []
    leftovers = names(incoming)
    assert len(leftovers) == 1
    assert leftovers[0].startswith("work-")
    assert "image.qcow2" in names(incoming / leftovers[0])

    store = ImageStore(root, max_virtual_size=LIMIT)
    assert store.sweep() == leftovers
    assert names(incoming) == []
    assert store.sweep() == []
    assert names(root / "golden") == []
    # The store works after the sweep: the same file imports cleanly.
    stored = store.ingest(sparse_random_disk)
    assert stored.virtual_size == CRASH_SIZE
    assert names(root / "golden") == [f"{stored.sha256}.qcow2"]
    assert names(incoming) == []


CAPTURE_CHILD = """
import sys, time
from pathlib import Path
from golden_images.store import ImageStore

root, marker = map(Path, sys.argv[1:3])
store = ImageStore(root, max_virtual_size=1 << 30)

def progress(percent):
    if not marker.exists():
        marker.write_text(str(percent))
        time.sleep(120)  # hold the capture after its first piece until the test kills it

store.capture(store.volume_path("vm-crash"), on_progress=progress)
sys.exit("the capture finished before it was killed")
"""


def test_capture_killed_midway_leaves_only_incoming_work(tmp_path: Path, sparse_random_disk: Path,
                                                        processes: Processes) -> None:
    """The one-pass capture (golden_images.flatten) is killed after writing its first piece: the
    half-written image is only in incoming/, nothing is published, and the next start's sweep
    removes it."""
    root = tmp_path / "store"
    store = ImageStore(root, max_virtual_size=LIMIT)
    image = store.ingest(sparse_random_disk)
    store.create_volume(image.sha256, "vm-crash")
    marker, errors = tmp_path / "capturing", tmp_path / "child.err"
    with errors.open("wb") as stderr:
        child = subprocess.Popen([sys.executable, "-c", CAPTURE_CHILD, str(root), str(marker)], cwd=REPO,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    processes.children.append(child)

    def capturing() -> bool:
        if child.poll() is not None:
            pytest.fail(f"the child ended ({child.returncode}) before it was killed: {errors.read_text()}")
        return marker.exists()

    wait_for(capturing, 60, "the child's capture to start")
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert names(root / "golden") == [f"{image.sha256}.qcow2"]
    (leftover,) = names(root / "incoming")
    half = root / "incoming" / leftover / "image.qcow2"
    assert 0 < half.stat().st_size < image.size  # cut off inside the copy
    after = ImageStore(root, max_virtual_size=LIMIT)
    assert after.sweep() == [leftover]
    assert names(root / "incoming") == []
    captured = after.capture(after.volume_path("vm-crash"))  # and capture works again
    assert qemu_img.identical(captured.path, image.path)


def test_sweep_removes_stray_files_and_dirs(store: ImageStore, golden: StoredImage) -> None:
    (store.incoming_dir / "work-deadbeef").mkdir()
    (store.incoming_dir / "work-deadbeef" / "image.qcow2").write_bytes(b"half")
    (store.incoming_dir / "stray.tmp").write_bytes(b"x")
    (store.incoming_dir / "link").symlink_to(store.golden_dir)
    assert store.sweep() == ["link", "stray.tmp", "work-deadbeef"]
    assert names(store.incoming_dir) == []
    assert names(store.golden_dir) == [f"{golden.sha256}.qcow2"]  # the symlink's target is untouched
    assert store.verify(golden.sha256)


SLOW_CHILD = """
import sys
from pathlib import Path
from golden_images import qemu_img
# -r: qemu-img's own rate limit, so this conversion takes about half a minute
qemu_img._run(["convert", "-r", "1M", "-f", "raw", "-O", "qcow2", sys.argv[1], sys.argv[2]], timeout=600)
"""


def test_qemu_img_that_runs_out_of_time_is_killed_with_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "source.raw"
    source.write_bytes(os.urandom(8 << 20))
    with pytest.raises(qemu_img.QemuImgError, match=r"^qemu-img convert did not finish within 1 s$"):
        # -r 1M: qemu-img's own rate limit, about 8 s for this image
        qemu_img._run(["convert", "-r", "1M", "-f", "raw", "-O", "qcow2", str(source), str(tmp_path / "out.qcow2")],
                      timeout=1)


def test_qemu_img_ends_when_the_process_that_started_it_dies(tmp_path: Path, processes: Processes) -> None:
    source = tmp_path / "source.raw"
    source.write_bytes(os.urandom(32 << 20))
    child = subprocess.Popen([sys.executable, "-c", SLOW_CHILD, str(source), str(tmp_path / "out.qcow2")],
                             cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes.children.append(child)
    # Once its name is qemu-img it has exec'd, so it asked for its parent-death signal before.
    wait_for(lambda: "qemu-img" in commands(descendants(child.pid)), 30, "qemu-img to start")
    processes.adopt_descendants(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    # Left alone, the rate-limited conversion would take about 30 s more; it ends within a second
    # here, and the bound leaves room for a loaded machine (CI once needed more than 10 s).
    assert processes.ended(timeout=20), "qemu-img outlived the process that started it"
