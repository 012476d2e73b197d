"""Where an imported image comes from when it is not uploaded: an HTTP(S) URL, or a file on the
appliance under a directory the administrator allowed.

A URL is streamed into the store's workspace with the size limit enforced while reading (a
server may lie in Content-Length or send none), its SHA-256 computed on the way, so a checksum the
caller gave is checked without a second pass. A local path is resolved (symbolic links and
``..`` included) before it is compared with the allowed directories, so neither can lead out of
them; the file is read, never moved or changed. Blocking calls: run them in a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import httpx

_CHUNK = 1 << 20
Progress = Callable[[float], None]


class SourceRefused(Exception):
    """The URL or path may not be imported from; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FetchFailed(Exception):
    """The download did not complete: the server, the network or the limit stopped it."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha256: str


def check_url(url: str) -> str:
    """The URL if an import may fetch it: http or https with a host, no credentials in it (they
    would be stored in the task and its log); SourceRefused otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SourceRefused(f"{url!r} is not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise SourceRefused(f"images are fetched over http or https, not {parts.scheme or 'a URL without scheme'}")
    if not parts.hostname:
        raise SourceRefused("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise SourceRefused("the URL carries credentials; put the image where it can be fetched without them")
    if port == 0:
        raise SourceRefused("the URL's port is 0")
    return url


def url_file_name(url: str) -> str:
    """The last segment of the URL's path (``.../rhel9.qcow2?sig=...`` gives ``rhel9.qcow2``)."""
    return PurePosixPath(unquote(urlsplit(url).path)).name


def fetch(url: str, destination: Path, *, max_bytes: int, timeout: float, verify_tls: bool = True,
          on_progress: Progress | None = None) -> Fetched:
    """Download ``url`` into ``destination`` (created, fsynced). ``on_progress`` gets the percent
    when the server sent a Content-Length. Raises FetchFailed with the reason."""
    check_url(url)
    digest = hashlib.sha256()
    written = 0
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout), verify=verify_tls, follow_redirects=True,
                          max_redirects=5) as client, \
                client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
            if response.status_code != 200:
                raise FetchFailed(f"the server answered {response.status_code} {response.reason_phrase}")
            declared = response.headers.get("content-length", "")
            total = int(declared) if declared.isdigit() else 0
            if total > max_bytes:
                raise FetchFailed(f"the image is {total} bytes; the limit is {max_bytes}")
            with destination.open("xb") as out:
                for chunk in response.iter_raw(_CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise FetchFailed(f"the image is larger than the limit of {max_bytes} bytes")
                    out.write(chunk)
                    digest.update(chunk)
                    if on_progress is not None and total:
                        on_progress(min(100.0, 100.0 * written / total))
                out.flush()
                os.fsync(out.fileno())
    except httpx.RemoteProtocolError as exc:  # httpx itself checks the body against Content-Length
        raise FetchFailed(f"the server closed the connection after {written} bytes ({exc})") from exc
    except httpx.TimeoutException as exc:
        raise FetchFailed(f"no data for {timeout:.0f} s ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise FetchFailed(f"{type(exc).__name__}: {exc}") from exc
    return Fetched(destination, written, digest.hexdigest())


def resolve_local(path: str, allowed: Sequence[Path]) -> Path:
    """The regular file ``path`` names, if it lies under one of the ``allowed`` directories once
    every symbolic link and ``..`` is resolved; SourceRefused otherwise."""
    if not allowed:
        raise SourceRefused("imports from the appliance's own files are off (set INGOT_IMAGES__IMPORT_DIRS "
                            "to the directories they may come from)")
    if not path.startswith("/"):
        raise SourceRefused("a local path must be absolute")
    try:
        real = Path(path).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise SourceRefused(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc})") from exc
    roots = [root.resolve() for root in allowed]
    if not any(real.is_relative_to(root) for root in roots):
        raise SourceRefused(f"{path} is not under a directory imports may come from "
                            f"({', '.join(str(r) for r in roots)})")
    if not stat.S_ISREG(real.stat().st_mode):
        raise SourceRefused(f"{path} is not a regular file")
    if not os.access(real, os.R_OK):
        raise SourceRefused(f"{path} cannot be read by the appliance")
    return real
