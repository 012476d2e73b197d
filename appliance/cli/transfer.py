"""File transfers for CLI commands: verified downloads and streamed multipart uploads, each with a
progress bar on stderr."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from appliance.cli.client import ApiClient
from appliance.cli.errors import CliError, UsageError
from appliance.cli.progress import download_progress

_CHUNK = 1 << 16
_UPLOAD_CHUNK = 1 << 20


def download_destination(output: Path | None, file_name: str, force: bool) -> Path:
    """Where a download goes: ``output`` (a file, or a directory to put ``file_name`` in), else
    ``file_name`` here. ``file_name`` comes from the server, so only its last component is used.
    An existing file is refused unless ``force``."""
    name = Path(file_name).name
    destination = output / name if output is not None and output.is_dir() else output or Path(name)
    if destination.exists() and not force:
        raise UsageError(f"{destination} exists.", hints=["Pass --force to replace it, or -o another name."])
    return destination


def fetch_verified(client: ApiClient, uri: str, destination: Path, expected_size: Any, expected_sha256: Any,
                   what: str) -> int:
    """Stream ``uri`` into a temporary file (mode 0600) next to ``destination``, check its size and
    SHA-256 against what the API said (or, with ``expected_sha256`` None, against the download's
    ``X-Checksum-Sha256`` header), then rename it into place. Nothing is left on failure."""
    directory = destination.parent if str(destination.parent) else Path()
    if not directory.is_dir():
        raise UsageError(f"The directory {directory} does not exist.")
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{destination.name}.", suffix=".part")
    temp = Path(temp_name)
    digest = hashlib.sha256()
    written = 0
    try:
        with os.fdopen(fd, "wb") as handle, client.stream(uri) as response, download_progress() as progress:
            total = int(response.headers.get("content-length") or expected_size or 0) or None
            expected_sha256 = expected_sha256 or response.headers.get("x-checksum-sha256")
            bar = progress.add_task(destination.name, total=total)
            for chunk in response.iter_bytes(_CHUNK):
                handle.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                progress.advance(bar, len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
        if isinstance(expected_size, int) and written != expected_size:
            raise CliError(f"The download is {written} bytes; the {what} has {expected_size}. Nothing was saved.")
        if isinstance(expected_sha256, str) and expected_sha256 and digest.hexdigest() != expected_sha256:
            raise CliError(f"The download does not match the {what}'s SHA-256. Nothing was saved.")
        os.replace(temp, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return written


def upload_file(client: ApiClient, path: str, source: Path, params: dict[str, str]) -> httpx.Response:
    """POST ``source`` as the multipart part ``file`` (what the HPE SDK sends), streamed from disk
    with a progress bar; returns the response (202 and a task, for golden images)."""
    try:
        total = source.stat().st_size
        handle = source.open("rb")
    except OSError as exc:
        raise UsageError(f"Cannot read {source}: {exc.strerror or exc}.") from None
    boundary = f"ingot-{secrets.token_hex(12)}"
    name = source.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    with handle, download_progress() as progress:
        bar = progress.add_task(f"upload {source.name}", total=total)

        def body() -> Iterator[bytes]:
            yield head
            while chunk := handle.read(_UPLOAD_CHUNK):
                progress.advance(bar, len(chunk))
                yield chunk
            yield tail

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "uploadfilename": name,
                   "Content-Length": str(len(head) + total + len(tail))}
        return client.send_body("POST", path, body(), headers=headers, params=params)
