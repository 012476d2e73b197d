"""HPE's golden-image zip: one raw disk image in a zip archive, taken out without trusting it.

The archive comes from an upload, so everything in it is hostile until shown otherwise: the
member's name is never used as a path (the disk goes where the caller says), its declared size is
not believed (bytes are counted as they are inflated, so a zip bomb stops at the limit), and the
CRC is checked by :mod:`zipfile` when the member has been read to its end.
"""

from __future__ import annotations

import lzma
import os
import zipfile
import zlib
from pathlib import Path
from typing import IO, BinaryIO

from golden_images.assess import ImageRefused

_CHUNK = 1 << 20


def _read(source: IO[bytes]) -> bytes:
    """The next piece of the inflated member. A damaged bzip2 stream raises OSError from inside
    the decompressor; that is the archive's fault, unlike an OSError while writing the copy."""
    try:
        return source.read(_CHUNK)
    except OSError as exc:
        raise ImageRefused(f"the zip is damaged: {exc}") from exc


def is_zip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def extract_single_disk(archive: Path, dest: Path, *, max_bytes: int) -> int:
    """Write the archive's one member to ``dest`` (created; fsynced); return its size in bytes.
    On any refusal ``dest`` is removed again."""
    with dest.open("xb") as out:  # never over an existing file
        try:
            return _extract(archive, out, max_bytes)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise


def _extract(archive: Path, out: BinaryIO, max_bytes: int) -> int:
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise ImageRefused(f"the zip holds {len(members)} files; a golden-image zip holds one disk image")
            member = members[0]
            if member.flag_bits & 0x1:
                raise ImageRefused("the zip is encrypted")
            written = 0
            with bundle.open(member) as source:
                while chunk := _read(source):
                    written += len(chunk)
                    if written > max_bytes:
                        raise ImageRefused(f"the disk image in the zip is larger than the limit of {max_bytes} bytes")
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise ImageRefused(f"the zip is damaged: {exc}") from exc
    except NotImplementedError as exc:  # a compression method zipfile cannot inflate
        raise ImageRefused(f"the zip uses an unsupported compression method: {exc}") from exc
    if written == 0:
        raise ImageRefused("the disk image in the zip is empty")
    return written
