"""Initramfs archives, written here: newc cpio, sorted names, fixed times, so the same inputs
give the same bytes (no ``find | cpio`` and no dependence on the order a directory lists in).

:class:`Archive` collects entries (directories, files, symlinks, device nodes, or a whole tree
such as a bootstrapped root filesystem); :meth:`Archive.cpio` writes them, parents before
children; :func:`compress` applies what the kernel unpacks (``gzip`` or ``zstd``).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path

from lab.build import BuildError, run

BUSYBOX = Path("/bin/busybox")
TRAILER = "TRAILER!!!"


class Archive:
    """Entries of a newc archive, by path inside it (no leading ``/``)."""

    def __init__(self) -> None:
        # path -> (mode, data, rdev, uid, gid)
        self._entries: dict[str, tuple[int, bytes, int, int, int]] = {}

    def __contains__(self, path: str) -> bool:
        return path.strip("/") in self._entries

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self._entries.setdefault("/".join(parts[:i]), (stat.S_IFDIR | 0o755, b"", 0, 0, 0))

    def _put(self, path: str, mode: int, data: bytes = b"", rdev: int = 0, uid: int = 0, gid: int = 0) -> None:
        path = path.strip("/")
        if not path or path == TRAILER:
            raise ValueError(f"bad archive path {path!r}")
        self._parents(path)
        self._entries[path] = (mode, data, rdev, uid, gid)

    def add_dir(self, path: str, perm: int = 0o755) -> None:
        self._put(path, stat.S_IFDIR | perm)

    def add_file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        self._put(path, stat.S_IFREG | perm, data)

    def add_symlink(self, path: str, target: str) -> None:
        self._put(path, stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, path: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._put(path, stat.S_IFCHR | perm, rdev=os.makedev(major, minor))

    def add_tree(self, root: Path, *, skip_contents_of: Iterable[str] = ()) -> None:
        """Everything under ``root`` with its modes and owners (symlinks as links; hard links
        become separate copies). Directories named in ``skip_contents_of`` are added empty."""
        skipped = {s.strip("/") for s in skip_contents_of}
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            rel_dir = here.relative_to(root).as_posix()
            if rel_dir in skipped:
                dirnames.clear()
                continue
            for name in [*dirnames, *filenames]:
                path = here / name
                rel = path.relative_to(root).as_posix()
                st = path.lstat()
                mode = st.st_mode
                if stat.S_ISLNK(mode):
                    data = os.readlink(path).encode()
                elif stat.S_ISREG(mode):
                    data = path.read_bytes()
                elif stat.S_ISDIR(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                    data = b""
                else:  # sockets have no place in an archive
                    continue
                self._put(rel, mode, data, st.st_rdev if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else 0,
                          st.st_uid, st.st_gid)
            # symlinks to directories are entries, not places to walk into (os.walk does not follow them)

    def cpio(self) -> bytes:
        """The newc archive: sorted paths (so parents come first), mtime 0, one inode each."""
        out = io.BytesIO()

        def pad(n: int) -> None:
            out.write(b"\0" * (-n % 4))

        items = [(path, *self._entries[path]) for path in sorted(self._entries)]
        for ino, (name, mode, data, rdev, uid, gid) in enumerate([*items, (TRAILER, 0, b"", 0, 0, 0)], start=1):
            raw = name.encode() + b"\0"
            header = "070701" + "".join(f"{v:08x}" for v in (
                ino if name != TRAILER else 0, mode, uid, gid, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
                0, 0, os.major(rdev), os.minor(rdev), len(raw), 0))
            out.write(header.encode() + raw)
            pad(110 + len(raw))
            out.write(data)
            pad(len(data))
        return out.getvalue()


def compress(archive: bytes, method: str, *, level: int | None = None, timeout: float = 600) -> bytes:
    """``archive`` compressed for the kernel's initramfs unpacker: ``gzip`` (in process, mtime
    0) or ``zstd`` (the ``zstd`` tool, all cores, checksummed frames)."""
    if method == "gzip":
        return gzip.compress(archive, compresslevel=level or 9, mtime=0)
    if method == "zstd":
        argv = ["zstd", "-q", "-c", f"-{level or 19}", "-T0", "--check"]
        try:
            proc = subprocess.run(argv, input=archive, capture_output=True, timeout=timeout, check=False)
        except FileNotFoundError as exc:
            raise BuildError("zstd is not installed (Debian package zstd)") from exc
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"zstd timed out after {timeout:.0f} s") from exc
        if proc.returncode != 0:
            raise BuildError(f"zstd failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
        return proc.stdout
    raise ValueError(f"compression must be gzip or zstd, not {method!r}")


def busybox_files() -> dict[str, Path]:
    """The host's busybox and the shared libraries it loads: {path inside the initramfs: host file}."""
    if not BUSYBOX.is_file():
        raise BuildError(f"{BUSYBOX} is missing (Debian package busybox or busybox-static)")
    files = {"bin/busybox": BUSYBOX.resolve()}
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    for line in run(["ldd", str(BUSYBOX)], timeout=30).splitlines() if _dynamic(BUSYBOX) else []:
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            name = match.group(1)
            files[name.lstrip("/")] = Path(name).resolve()
    return files


def _dynamic(path: Path) -> bool:
    """Whether the ELF64 file has a PT_INTERP program header (busybox-static has none, and
    ``ldd`` exits non-zero on it)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head[:4] != b"\x7fELF" or head[4] != 2:
        raise BuildError(f"{path} is not an ELF64 executable")
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    return any(struct.unpack_from("<I", head, phoff + i * phentsize)[0] == 3 for i in range(phnum))  # PT_INTERP
