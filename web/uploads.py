"""File uploads (``multipart/form-data``) streamed straight to disk, for images of many GiB.

Starlette's ``request.form()`` spools files into the system's temporary directory without a size
limit. An image upload must instead land in the image store's ``incoming/`` directory (the same
file system as the library, so publishing it is a rename), stop at a limit while it streams, and
be refused when the body ends before its closing boundary: a client that dies mid-upload must
never leave an image that looks whole. Whatever goes wrong, the partial file is removed.

The HPE SDK's upload (``golden_images.upload``) is one part named ``file`` in a body it builds by
hand (boundary ``----------ThIs_Is_tHe_bouNdaRY_$``, with a ``Content-Length`` and an
``uploadfilename`` header); browsers and curl send the same shape with their own boundaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from appliance.errors import InvalidInput, PayloadTooLarge

# Headers of one part are small; a part with more, or longer ones, is not an upload we understand.
_MAX_PART_HEADERS = 8
_MAX_HEADER_SIZE = 4096
# What multipart framing adds around a file: boundaries, part headers, CRLFs (generous).
_FRAMING_ALLOWANCE = 64 * 1024


@dataclass(frozen=True)
class ReceivedFile:
    path: Path  # in the directory the caller gave; the caller owns it from here on
    filename: str  # the client's name for it, reduced to a base name (display and format hints only)
    size: int


def _base_name(raw: str) -> str:
    """The last component of a client-supplied name, whichever separator it used."""
    name = PureWindowsPath(PurePosixPath(raw).name).name
    name = "".join(ch for ch in name if ch.isprintable())[:255]
    return "" if name in (".", "..") else name


def _boundary(request: Request) -> bytes:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise InvalidInput(reason="an upload must be sent as multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 70:
        raise InvalidInput(reason="the multipart/form-data body has no usable boundary")
    return boundary


class _Collector:
    """Parser callbacks: find the one file part, hand on its bytes, notice the closing boundary."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.pending: list[bytes] = []  # data of the file part parsed from the latest chunk
        self.filename: str | None = None
        self.in_file = False
        self.files = 0
        self.finished = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        kind, params = parse_options_header(self._disposition)
        name = params.get(b"name", b"").decode("utf-8", "replace")
        self.in_file = kind == b"form-data" and name == self.field and b"filename" in params
        if self.in_file:
            self.files += 1
            if self.files > 1:
                raise InvalidInput(reason=f"the upload holds more than one '{self.field}' part")
            self.filename = _base_name(params[b"filename"].decode("utf-8", "replace"))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.pending.append(data[start:end])

    def _part_end(self) -> None:
        self.in_file = False

    def _end(self) -> None:
        self.finished = True


async def receive_file(request: Request, directory: Path, *, max_bytes: int, field: str = "file") -> ReceivedFile:
    """Stream the request's ``field`` file part into a new file in ``directory``.

    Raises InvalidInput (400) for a body that is not multipart, has no such part, more than one,
    or ends before its closing boundary; PayloadTooLarge (413) as soon as the file passes
    ``max_bytes`` (or at once, when ``Content-Length`` says it will). The file is fsynced before
    this returns and removed whenever it raises.
    """
    boundary = _boundary(request)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes + _FRAMING_ALLOWANCE:
        raise PayloadTooLarge(limit=max_bytes)
    collector = _Collector(field)
    parser = MultipartParser(boundary, collector.callbacks(), max_header_count=_MAX_PART_HEADERS,  # type: ignore[arg-type]
                             max_header_size=_MAX_HEADER_SIZE)
    path = directory / f"upload-{secrets.token_hex(8)}"
    size = epilogue = 0
    out: BinaryIO = await asyncio.to_thread(path.open, "xb")
    try:
        try:
            async for chunk in request.stream():
                if collector.finished:  # the epilogue after the closing boundary (the HPE SDK sends a CRLF)
                    epilogue += len(chunk)
                    if epilogue > _FRAMING_ALLOWANCE:
                        raise InvalidInput(reason="the body goes on after its closing boundary")
                    continue
                parser.write(chunk)
                if collector.pending:
                    data, collector.pending = b"".join(collector.pending), []
                    size += len(data)
                    if size > max_bytes:
                        raise PayloadTooLarge(limit=max_bytes)
                    await asyncio.to_thread(out.write, data)
        except MultipartParseError as exc:
            raise InvalidInput(reason=f"the multipart/form-data body is malformed: {exc}") from exc
        except ClientDisconnect as exc:
            raise InvalidInput(reason="the client went away before the upload was complete") from exc
        if not collector.finished:
            raise InvalidInput(reason="the upload was cut short: its body ended before the closing boundary")
        if collector.files == 0:
            raise InvalidInput(reason=f"the upload has no file part named '{field}'")
        await asyncio.to_thread(_flush, out)
    except BaseException:
        out.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    out.close()
    filename = collector.filename or _base_name(request.headers.get("uploadfilename", ""))
    return ReceivedFile(path, filename, size)


def _flush(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
