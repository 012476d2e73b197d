"""Filename resolution against a TFTP root: every way out of the root must be refused."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pxe.tftp.files import (
    AccessViolation,
    BytesReader,
    FileError,
    FileNotFound,
    FileReader,
    open_file,
    resolve,
)
from pxe.tftp.packets import ErrorCode


@pytest.fixture
def root(tmp_path: Path) -> Path:
    tree = tmp_path / "tftp"
    (tree / "pxelinux.cfg").mkdir(parents=True)
    (tree / "pxelinux.0").write_bytes(b"bootloader")
    (tree / "pxelinux.cfg" / "default").write_bytes(b"DEFAULT menu")
    (tree / "EFI" / "BOOT").mkdir(parents=True)
    (tree / "EFI" / "BOOT" / "bootx64.efi").write_bytes(b"efi")
    (tmp_path / "secret").write_bytes(b"do not serve")
    return tree


@pytest.mark.parametrize(
    ("requested", "relative"),
    [
        ("pxelinux.0", "pxelinux.0"),
        ("/pxelinux.0", "pxelinux.0"),
        ("pxelinux.cfg/default", "pxelinux.cfg/default"),
        ("./pxelinux.cfg//default", "pxelinux.cfg/default"),
        ("EFI\\BOOT\\bootx64.efi", "EFI/BOOT/bootx64.efi"),
        ("\\EFI\\BOOT\\bootx64.efi", "EFI/BOOT/bootx64.efi"),
    ],
)
def test_resolves_inside_root(root: Path, requested: str, relative: str) -> None:
    assert resolve(root, requested) == (root / relative).resolve()


@pytest.mark.parametrize(
    "requested",
    [
        "../secret",
        "pxelinux.cfg/../../secret",
        "pxelinux.cfg/../pxelinux.0",  # stays inside, still refused: no client needs '..'
        "..\\secret",
        "/../secret",
        "..",
        "//etc/passwd",
        "\\\\server\\share",
        "pxelinux.0\0.txt",
        "a" * 256,
        "",
        "/",
        ".",
        "pxelinux.cfg",  # a directory
    ],
)
def test_refused_as_access_violation(root: Path, requested: str) -> None:
    with pytest.raises(AccessViolation) as info:
        resolve(root, requested)
    assert info.value.code == ErrorCode.ACCESS_VIOLATION
    assert str(root) not in info.value.message


def test_absolute_path_is_taken_relative_to_root(root: Path, tmp_path: Path) -> None:
    # "/<tmp>/secret" loses one slash and is looked up under the root, where it does not exist.
    with pytest.raises(FileNotFound):
        resolve(root, str(tmp_path / "secret"))


def test_missing_file_is_not_found(root: Path) -> None:
    with pytest.raises(FileNotFound) as info:
        resolve(root, "missing.efi")
    assert info.value.code == ErrorCode.FILE_NOT_FOUND
    assert isinstance(info.value, FileError)


def test_name_of_exactly_255_is_looked_up(root: Path) -> None:
    with pytest.raises(FileNotFound):
        resolve(root, "a" * 255)


def test_symlink_out_of_root_refused(root: Path, tmp_path: Path) -> None:
    (root / "escape").symlink_to(tmp_path / "secret")
    (root / "escdir").symlink_to(tmp_path)
    for name in ("escape", "escdir/secret"):
        with pytest.raises(AccessViolation):
            resolve(root, name)


def test_symlink_inside_root_followed(root: Path) -> None:
    (root / "grubx64.efi").symlink_to(root / "EFI" / "BOOT" / "bootx64.efi")
    assert resolve(root, "grubx64.efi") == (root / "EFI" / "BOOT" / "bootx64.efi").resolve()


def test_root_reached_through_symlink_works(root: Path, tmp_path: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to(root)
    assert resolve(link, "pxelinux.0") == (root / "pxelinux.0").resolve()


def test_symlink_loop_refused(root: Path) -> None:
    (root / "loop").symlink_to(root / "loop")
    with pytest.raises(AccessViolation):
        resolve(root, "loop")


def test_dangling_symlink_is_not_found(root: Path) -> None:
    (root / "dangling").symlink_to(root / "nowhere")
    with pytest.raises(FileNotFound):
        resolve(root, "dangling")


def test_fifo_refused(root: Path) -> None:
    os.mkfifo(root / "pipe")
    with pytest.raises(AccessViolation):
        resolve(root, "pipe")
    with pytest.raises(AccessViolation):
        FileReader(root / "pipe")  # even if handed one directly, open() must not block


def test_unreadable_file_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests run as root, which the kernel never refuses; so the kernel's answer for a file the
    # server may not read (EACCES from open) is given here, and the mapping to ERROR 2 is checked.
    (root / "private").write_bytes(b"x")

    def refuse(*_args: object, **_kwargs: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("pxe.tftp.files.os.open", refuse)
    with pytest.raises(AccessViolation):
        open_file(root, "private")


def test_file_reader(root: Path) -> None:
    with open_file(root, "/pxelinux.cfg/default") as reader:
        assert reader.size == 12
        assert reader.read(0, 7) == b"DEFAULT"
        assert reader.read(8, 100) == b"menu"
        assert reader.read(12, 10) == b""
        assert reader.read(100, 10) == b""
    reader.close()  # idempotent


def test_file_reader_size_fixed_at_open(root: Path) -> None:
    reader = open_file(root, "pxelinux.0")
    try:
        (root / "pxelinux.0").write_bytes(b"changed-and-longer")
        assert reader.size == len(b"bootloader")
    finally:
        reader.close()


def test_file_reader_missing_path(root: Path) -> None:
    with pytest.raises(FileNotFound):
        FileReader(root / "missing")


def test_file_reader_refuses_symlink_swapped_in(root: Path) -> None:
    (root / "swapped").symlink_to(root / "pxelinux.0")
    with pytest.raises(AccessViolation):
        FileReader(root / "swapped")


def test_bytes_reader() -> None:
    reader = BytesReader(b"#!ipxe\nchain http://x/\n")
    assert reader.size == 23
    assert reader.read(0, 6) == b"#!ipxe"
    assert reader.read(20, 10) == b"x/\n"
    assert reader.read(30, 10) == b""
    reader.close()
