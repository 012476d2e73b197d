"""The agent's side of the agent API (``docs/agent-api.md``): JSON over plain HTTP.

Built on ``http.client`` (no third-party libraries in the ramdisk), one connection per call:
the agent makes a call every few seconds, and a fresh connection per call makes the client
safe to share between the main loop and the heartbeat thread that runs while a command does.

Secrets: the boot token goes out once (``lookup``), the agent token in the
``X-Ingot-Agent-Token`` header of every later call. Neither is ever part of a ``repr``, a
``str`` or an exception message; whatever the appliance or a socket error says is scrubbed of
both before it is raised, because those messages end up on the serial console.

Disks (``read_disk``): :meth:`AgentClient.upload_range` sends one range of the disk as
``application/octet-stream`` with ``Content-Range: bytes START-END/TOTAL`` (``PUT
/agent/v1/nodes/{node}/disk/{command}``), :meth:`AgentClient.finish_upload` ends the upload with
``Content-Range: bytes */TOTAL`` and no body, :meth:`AgentClient.upload_status` (``GET`` there)
asks how much has arrived; each answers ``{"committed": N, "total": TOTAL}``.

Errors: an HTTP error status is :class:`AgentApiError` (with the OneView ``errorCode`` and
``message`` when the body has them); a connection that cannot be made, breaks, or times out is
:class:`AgentUnreachable`, a ``ConnectionError``, so :mod:`agent.imagewrite` retries it like any
dropped connection when it comes from :meth:`AgentClient.open_range`.

Runs on the target under ``python3-minimal`` plus ``libpython3-stdlib``.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from agent.bootparams import mask_token

AGENT_VERSION = "1"
TOKEN_HEADER = "X-Ingot-Agent-Token"  # noqa: S105 - the header's name, not a token
API_PREFIX = "/agent/v1"
DEFAULT_TIMEOUT_S = 30.0
MAX_RESPONSE = 4 << 20  # an API answer is a few hundred bytes; more is not the appliance
CHUNK = 1 << 20  # bytes per item when an image stream is iterated
_RETRYABLE_IMAGE_STATUS = (408, 429, 500, 502, 503, 504)


class AgentApiError(Exception):
    """The appliance answered with an HTTP error (or with something that is not the API)."""

    def __init__(self, status: int, error_code: str | None, message: str) -> None:
        super().__init__(status, error_code, message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def __str__(self) -> str:
        code = f" {self.error_code}" if self.error_code else ""
        return f"HTTP {self.status}{code}: {self.message}"


class AgentUnreachable(ConnectionError):
    """No answer: the connection was refused, broke, or timed out. Worth retrying."""


@dataclass(frozen=True)
class LookupResult:
    """What ``lookup`` traded the boot token for."""

    node: str
    agent_token: str = field(repr=False)
    heartbeat_interval_s: float

    def __repr__(self) -> str:
        return (f"LookupResult(node={self.node!r}, agent_token={mask_token(self.agent_token)}, "
                f"heartbeat_interval_s={self.heartbeat_interval_s!r})")


@dataclass(frozen=True)
class Command:
    """One thing the appliance asks the agent to do."""

    id: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HeartbeatReply:
    interval_s: float
    commands: list[Command]


class AgentClient:
    """A client of one appliance (``base_url``, e.g. ``http://10.78.0.1:8080``)."""

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the appliance URL {_origin(base_url)!r} is not an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._prefix = parts.path.rstrip("/")
        self._agent_token: str | None = None
        self._node: str | None = None
        self._secrets: set[str] = set()

    def __repr__(self) -> str:
        return f"AgentClient(base_url={_origin(self.base_url)!r}, agent_token={mask_token(self._agent_token)})"

    @property
    def node_known(self) -> bool:
        """Whether a lookup succeeded (the calls other than ``lookup`` need its token)."""
        return self._agent_token is not None

    # -- the API calls -----------------------------------------------------------------------

    def lookup(self, boot_token: str, macs: Sequence[str], agent_version: str = AGENT_VERSION) -> LookupResult:
        """Trade the boot token for the agent token, which later calls send."""
        self._secrets.add(boot_token)
        body = self._call("POST", "/lookup", {"token": boot_token, "macs": list(macs), "agentVersion": agent_version},
                          authenticated=False)
        node, token = body.get("node"), body.get("agentToken")
        if not isinstance(node, str) or not node or not isinstance(token, str) or not token:
            raise AgentApiError(200, "INVALID_RESPONSE", "the lookup answer has no node or agent token")
        self._secrets.add(token)
        self._agent_token = token
        self._node = node
        return LookupResult(node=node, agent_token=token,
                            heartbeat_interval_s=_interval(body.get("heartbeatIntervalS"), "lookup"))

    def post_inventory(self, inventory: Mapping[str, Any]) -> None:
        self._call("POST", f"/nodes/{self._node_path()}/inventory", dict(inventory))

    def heartbeat(self, uptime_s: float, address: str | None, busy: str | None) -> HeartbeatReply:
        body = self._call("POST", f"/nodes/{self._node_path()}/heartbeat",
                          {"uptimeS": round(uptime_s, 2), "address": address, "busy": busy})
        return HeartbeatReply(interval_s=_interval(body.get("heartbeatIntervalS"), "heartbeat"),
                              commands=_commands(body.get("commands")))

    def report(self, command_id: str, state: str, percent: int, message: str,
               result: Mapping[str, Any] | None = None, error: str | None = None) -> None:
        """Tell the appliance how a command is doing; AgentApiError 409 once it has ended."""
        self._call("POST", f"/nodes/{self._node_path()}/commands/{quote(command_id, safe='')}",
                   {"state": state, "percent": max(0, min(100, int(percent))), "message": message,
                    "result": dict(result) if result is not None else None, "error": error})

    # -- disk uploads (read_disk) -------------------------------------------------------------

    def upload_range(self, command_id: str, start: int, data: bytes, total: int) -> dict[str, Any]:
        """``PUT`` bytes ``[start, start + len(data))`` of the ``total`` a ``read_disk`` command
        uploads; the answer is ``{"committed": N, "total": TOTAL, ...}``."""
        if not data or start < 0 or start + len(data) > total:
            raise ValueError(f"bytes {start}-{start + len(data) - 1} are not a range of {total} bytes")
        return self._request("PUT", self._disk_path(command_id), data,
                             {"Content-Type": "application/octet-stream",
                              "Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}"})

    def finish_upload(self, command_id: str, total: int) -> dict[str, Any]:
        """The end of a ``read_disk`` upload (``Content-Range: bytes */TOTAL``, no body); the
        answer is ``{"committed": TOTAL, "total": TOTAL, ...}``."""
        return self._request("PUT", self._disk_path(command_id), b"",
                             {"Content-Type": "application/octet-stream", "Content-Range": f"bytes */{total}"})

    def upload_status(self, command_id: str) -> dict[str, Any]:
        """How much of a ``read_disk`` upload has arrived: ``{"committed": N, "total": TOTAL or
        null, ...}``."""
        return self._request("GET", self._disk_path(command_id), None)

    def _disk_path(self, command_id: str) -> str:
        return f"/nodes/{self._node_path()}/disk/{quote(command_id, safe='')}"

    # -- images ------------------------------------------------------------------------------

    def image_url(self, url: str) -> str:
        """``url`` made absolute against the appliance's URL (an export may be given as a path)."""
        return urljoin(self.base_url + "/", url)

    def open_range(self, url: str, offset: int) -> RangeStream:
        """The image at ``url`` from byte ``offset`` on (see :func:`open_range`). The agent token
        goes along only to the appliance itself (same scheme, host and port), never elsewhere."""
        url = self.image_url(url)
        headers = {}
        if self._agent_token and _same_origin(url, self.base_url):
            headers[TOKEN_HEADER] = self._agent_token
        try:
            return open_range(url, offset, timeout=self.timeout, headers=headers)
        except AgentApiError as exc:
            raise AgentApiError(exc.status, exc.error_code, self._scrub(exc.message)) from None
        except OSError as exc:
            raise AgentUnreachable(self._scrub(str(exc))) from None

    # -- plumbing ----------------------------------------------------------------------------

    def _node_path(self) -> str:
        if self._agent_token is None or self._node is None:
            raise RuntimeError("no lookup yet: the node and its agent token are unknown")
        return quote(self._node, safe="")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, mask_token(secret))
        return text

    def _call(self, method: str, path: str, body: Mapping[str, Any], *,
              authenticated: bool = True) -> dict[str, Any]:
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        return self._request(method, path, data, {"Content-Type": "application/json"}, authenticated=authenticated)

    def _request(self, method: str, path: str, data: bytes | None, headers: Mapping[str, str] | None = None, *,
                 authenticated: bool = True) -> dict[str, Any]:
        """One call with ``data`` as the body (none for None) and a JSON object as the answer;
        AgentApiError for an HTTP error or an answer that is not one, AgentUnreachable when the
        connection fails."""
        sent = {"Accept": "application/json", "Connection": "close", **(headers or {})}
        if data is not None:
            sent["Content-Length"] = str(len(data))
        if authenticated and self._agent_token:
            sent[TOKEN_HEADER] = self._agent_token
        target = self._prefix + API_PREFIX + path
        conn = _connection(self.base_url, self.timeout)
        try:
            conn.request(method, target, body=data, headers=sent)
            response = conn.getresponse()
            status, reason = response.status, response.reason
            raw = response.read(MAX_RESPONSE + 1)
            response.close()
        except (OSError, http.client.HTTPException) as exc:
            raise AgentUnreachable(self._scrub(f"{method} {API_PREFIX}{path}: {_describe(exc)}")) from None
        finally:
            conn.close()
        if status >= 400:
            code, message = _error_body(raw, reason)
            raise AgentApiError(status, code, self._scrub(message))
        if len(raw) > MAX_RESPONSE:
            raise AgentApiError(status, "INVALID_RESPONSE", f"the answer to {method} {API_PREFIX}{path} is too big")
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise AgentApiError(status, "INVALID_RESPONSE", f"the answer to {method} {API_PREFIX}{path} is not a "
                                                            "JSON object")
        return parsed


class RangeStream:
    """An HTTP response body as :mod:`agent.imagewrite` reads it: iterating gives chunks of up to
    1 MiB; a body that ends before its ``Content-Length``, or breaks, raises ConnectionError.
    Closing (or leaving the ``with`` block, or the end of the iteration) closes the connection."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, offset: int) -> None:
        self._conn = conn
        self._response = response
        self.offset = offset
        length = response.getheader("Content-Length")
        self.length: int | None = int(length) if length and length.isdigit() else None
        self._read = 0

    def read(self, size: int = CHUNK) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end of the body."""
        try:
            data = self._response.read(size)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ConnectionError(f"the image download broke at byte {self.offset + self._read}: "
                                  f"{_describe(exc)}") from None
        if not data and self.length is not None and self._read < self.length:
            self.close()
            raise ConnectionError(f"the image download ended at byte {self.offset + self._read}, "
                                  f"{self.length - self._read} bytes short")
        self._read += len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        try:
            while chunk := self.read(CHUNK):
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._response.close()
        self._conn.close()

    def __enter__(self) -> RangeStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def open_range(url: str, offset: int, *, timeout: float = DEFAULT_TIMEOUT_S,
               headers: Mapping[str, str] | None = None) -> RangeStream:
    """GET ``url`` (http or https) from byte ``offset`` on, with ``Range: bytes=<offset>-``.

    The answer must be ``206`` starting at ``offset`` when ``offset > 0`` (a ``200`` would be the
    whole image again, written at the wrong place), ``200`` or ``206`` from 0 when it is 0.
    Connection failures are OSError, and so is a ``5xx``/``408``/``429`` (ConnectionError: worth
    a retry); any other status is AgentApiError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AgentApiError(0, "INVALID_URL", f"the image URL {_origin(url)!r} is not an http(s) URL")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request_headers = {"Accept-Encoding": "identity", "Connection": "close", **(headers or {})}
    if offset > 0:
        request_headers["Range"] = f"bytes={offset}-"
    conn = _connection(url, timeout)
    try:
        conn.request("GET", target, headers=request_headers)
        response = conn.getresponse()
    except http.client.HTTPException as exc:
        conn.close()
        raise ConnectionError(f"GET {_origin(url)}: {_describe(exc)}") from None
    except OSError:
        conn.close()
        raise
    status = response.status
    start = _range_start(response.getheader("Content-Range")) if status == 206 else 0
    if (status == 200 and offset == 0) or (status == 206 and start == offset):
        return RangeStream(conn, response, offset)
    reason = response.reason
    try:
        body = response.read(64 << 10) if status >= 400 else b""
    except (OSError, http.client.HTTPException):
        body = b""
    response.close()
    conn.close()
    where = f"GET {_origin(url)} from byte {offset}"
    if status in _RETRYABLE_IMAGE_STATUS:
        raise ConnectionError(f"{where}: HTTP {status} {reason}")
    if status >= 400:
        code, message = _error_body(body, reason)
        if parts.query:  # a signed URL's signature is a secret, even quoted back by the server
            message = message.replace(parts.query, "***")
        raise AgentApiError(status, code, f"{where}: {message}")
    if status == 200:
        raise AgentApiError(status, "RANGE_NOT_SUPPORTED", f"{where}: the server ignored the Range request")
    if status == 206:
        raise AgentApiError(status, "RANGE_MISMATCH", f"{where}: the server sent a range starting at {start}")
    raise AgentApiError(status, None, f"{where}: unexpected HTTP {status} {reason}")


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https":
        return http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=ssl.create_default_context())
    return http.client.HTTPConnection(host, parts.port, timeout=timeout)


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` plus its path: no user:password, no query (a signed
    URL's signature is a secret too)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _same_origin(a: str, b: str) -> bool:
    def key(url: str) -> tuple[str, str, int | None]:
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = None
        return parts.scheme, (parts.hostname or "").lower(), port

    return key(a) == key(b)


def _range_start(content_range: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes <first>-<last>/<size>``, or None."""
    if not content_range:
        return None
    unit, _, rest = content_range.strip().partition(" ")
    first = rest.partition("-")[0].strip()
    return int(first) if unit.lower() == "bytes" and first.isdigit() else None


def _error_body(raw: bytes, reason: str) -> tuple[str | None, str]:
    """(errorCode, message) of a OneView error body, else (None, the text or the reason)."""
    text = raw[:MAX_RESPONSE].decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        code, message = parsed.get("errorCode"), parsed.get("message")
        if isinstance(code, str) or isinstance(message, str):
            return (code if isinstance(code, str) else None), (message if isinstance(message, str) else reason)
    snippet = " ".join(text.split())[:200]
    return None, snippet or reason or "no message"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _interval(value: object, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    raise AgentApiError(200, "INVALID_RESPONSE", f"the {where} answer has no positive heartbeatIntervalS")


def _commands(value: object) -> list[Command]:
    """The commands of a heartbeat answer. One without an id cannot be reported on, so it is
    dropped; a missing name or params becomes an unknown command or no params, which the
    runner reports as failed."""
    if not isinstance(value, list):
        return []
    found = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            continue
        name = item.get("name")
        params = item.get("params")
        found.append(Command(id=item["id"], name=name if isinstance(name, str) else "",
                             params=params if isinstance(params, dict) else {}))
    return found
