"""Map a requested TFTP filename onto a file under the TFTP root, and readers for transfers.

The filename comes from an unauthenticated UDP packet, so :func:`resolve` treats it as hostile:
the result is always a regular file inside ``root`` after every symlink is followed, or a
:class:`FileError` carrying the TFTP error code to send (1 file not found, 2 access violation).

Conveniences for real PXE clients, each kept narrow:

- one leading ``/`` is stripped, since many PXE ROMs and GRUB send ``/pxelinux.0``; a second one
  is refused rather than guessed about;
- backslashes become ``/`` because Windows boot managers (WDS, bootmgr) request ``boot\\x64\\...``;
- empty and ``.`` segments are dropped; ``..`` anywhere is refused even when it would stay inside
  the root, because no legitimate boot client needs it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import TracebackType

from pxe.tftp.packets import ErrorCode

__all__ = [
    "MAX_FILENAME",
    "AccessViolation",
    "BytesReader",
    "FileError",
    "FileNotFound",
    "FileReader",
    "open_file",
    "resolve",
]

MAX_FILENAME = 255  # longer requests are refused before touching the file system


class FileError(Exception):
    """A request that cannot be served; ``code`` is the TFTP error code to answer with.

    ``message`` is safe to send to the client: it never contains the server-side path.
    """

    code: ErrorCode = ErrorCode.NOT_DEFINED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FileNotFound(FileError):
    code = ErrorCode.FILE_NOT_FOUND


class AccessViolation(FileError):
    code = ErrorCode.ACCESS_VIOLATION


def resolve(root: Path, requested: str) -> Path:
    """Return the real path of ``requested`` inside ``root``.

    :raises AccessViolation: NUL, over-long, absolute, ``..``, empty, escaping symlink, or not a
        regular file.
    :raises FileNotFound: nothing exists at the resolved name.
    """
    if "\0" in requested:
        raise AccessViolation("NUL in filename")
    if len(requested) > MAX_FILENAME:
        raise AccessViolation("filename too long")
    name = requested.replace("\\", "/")
    if name.startswith("/"):
        name = name[1:]
    if name.startswith("/"):
        raise AccessViolation("absolute path")
    segments = [s for s in name.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise AccessViolation("'..' in filename")
    if not segments:
        raise AccessViolation("no filename")
    real_root = root.resolve(strict=True)
    try:
        real = real_root.joinpath(*segments).resolve(strict=True)
    except FileNotFoundError:
        raise FileNotFound("file not found") from None
    except (OSError, RuntimeError):  # RuntimeError: symlink loop on Python < 3.13
        raise AccessViolation("cannot resolve filename") from None
    if not real.is_relative_to(real_root):
        raise AccessViolation("outside the TFTP root")
    if not real.is_file():
        raise AccessViolation("not a regular file")
    return real


def open_file(root: Path, requested: str) -> FileReader:
    """Resolve ``requested`` under ``root`` and open it for a transfer.

    :raises FileError: as :func:`resolve`, or AccessViolation if the file cannot be opened.
    """
    return FileReader(resolve(root, requested))


# Bytes one pread fetches ahead for a transfer: 44 blocks of 1468 or 128 of 512 per system call
# instead of one, at 64 KiB of memory per running transfer.
READ_AHEAD = 64 * 1024


class FileReader:
    """A :class:`pxe.tftp.protocol.Reader` over a regular file; its size is fixed at open time.

    Reads use ``pread`` so concurrent retransmissions need no shared file offset. Each fetches
    at least :data:`READ_AHEAD` bytes and keeps them, so the following blocks of a transfer, and
    retransmissions of the same ones, are sliced from memory without a system call.
    """

    def __init__(self, path: Path) -> None:
        # O_NOFOLLOW: the path was resolved already, so a symlink here means it was swapped since.
        # O_NONBLOCK: a FIFO swapped in would otherwise block open() until a writer appears.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags)
        except FileNotFoundError:
            raise FileNotFound("file not found") from None
        except OSError:
            raise AccessViolation("cannot open file") from None
        st = os.fstat(self._fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(self._fd)
            raise AccessViolation("not a regular file")
        self._size = st.st_size
        self._buffer = b""  # file bytes from ``_buffer_at``, as the last pread returned them
        self._buffer_at = 0

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, size: int) -> bytes:
        start = offset - self._buffer_at
        if start >= 0 and start + size <= len(self._buffer):
            return self._buffer[start : start + size]
        self._buffer = self._pread(offset, max(size, READ_AHEAD))
        self._buffer_at = offset
        return self._buffer[:size]

    def _pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; fewer only at the end of the file."""
        first = os.pread(self._fd, size, offset)
        if len(first) == size or not first:
            return first
        parts = [first]
        offset += len(first)
        size -= len(first)
        while size > 0:
            chunk = os.pread(self._fd, size, offset)
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
            size -= len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class BytesReader:
    """A :class:`pxe.tftp.protocol.Reader` over content generated in memory (iPXE/GRUB configs)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    def read(self, offset: int, size: int) -> bytes:
        return self._data[offset : offset + size]

    def close(self) -> None:
        """Nothing to release; present so callers can close every reader alike."""
