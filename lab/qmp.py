"""A small synchronous QMP (QEMU Machine Protocol) client over a UNIX socket.

Theory of operation (QEMU's ``docs/interop/qmp-spec.txt``):

* The server speaks first: a greeting ``{"QMP": {"version": ..., "capabilities": [...]}}``. Until the client
  sends ``qmp_capabilities`` the server is in *capabilities negotiation* mode and refuses everything else.
* Then the client sends ``{"execute": CMD, "arguments": {...}, "id": ID}``; the server answers with
  ``{"return": ..., "id": ID}`` or ``{"error": {"class": ..., "desc": ...}, "id": ID}``.
* At any moment the server may also send an asynchronous event ``{"event": NAME, "data": ..., "timestamp":
  ...}``. Events are interleaved with replies; this client buffers the newest :data:`EVENT_BUFFER` of them
  (older ones are dropped) for :meth:`QmpClient.wait_event` / :meth:`QmpClient.take_events`.
* Every message is one JSON object followed by ``\\r\\n``.

Every command carries a fresh ``id``: after a timeout the late reply of the old command is recognised by its
id and discarded, so a timeout does not desynchronise the connection. There is no reconnect: a broken
connection raises :class:`QmpConnectionError` for good and the owner decides what to do.

Thread safety: one lock serialises whole request/reply exchanges, so several threads (pyghmi's BMC thread, a
test) may share one client. The lock is held while waiting for a reply; keep timeouts short.

We write our own instead of using the ``qemu.qmp`` package: that one is asyncio-only, and the virtual BMC
calls from a plain thread.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EVENT_BUFFER = 256  # newest events kept; QEMU can emit many (e.g. RTC_CHANGE), nobody must run out of memory
_MAX_MESSAGE = 16 * 1024 * 1024  # a larger line means a broken peer, not QMP

JsonObject = dict[str, Any]


class QmpError(Exception):
    """Base of every error this client raises."""


class QmpConnectionError(QmpError):
    """The socket could not be opened, was closed by QEMU, or carried something that is not QMP."""


class QmpTimeoutError(QmpError):
    """No reply (or no awaited event) within the timeout. The connection stays usable."""


class QmpCommandError(QmpError):
    """QEMU refused a command. ``error_class`` is QEMU's class (``GenericError``, ``CommandNotFound``,
    ``DeviceNotFound``, ...), ``desc`` its human-readable reason."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QMP {command!r} failed: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QmpClient:
    """One QMP connection. Use :meth:`connect` (or the context manager), then :meth:`execute`.

    :param path: the UNIX socket QEMU listens on (``-qmp unix:PATH,server=on,wait=off``).
    :param timeout: default seconds to wait for a reply.
    """

    def __init__(self, path: str | Path, *, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.greeting: JsonObject | None = None
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._events: collections.deque[JsonObject] = collections.deque(maxlen=EVENT_BUFFER)
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._broken: str | None = None

    def __repr__(self) -> str:
        return f"QmpClient({str(self.path)!r}, connected={self._sock is not None})"

    def __enter__(self) -> QmpClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connection ----------------------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> JsonObject:
        """Open the socket (retrying until ``timeout`` while it does not exist yet or refuses: QEMU may still
        be starting), read the greeting and leave capabilities negotiation. Returns the greeting.

        :raises QmpConnectionError: no QMP server answered within the timeout, or it did not speak QMP.
        :raises QmpCommandError: QEMU refused ``qmp_capabilities``.
        """
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self._lock:
            if self._sock is not None:
                raise QmpConnectionError(f"{self.path}: already connected")
            last: OSError | None = None
            for _ in range(100_000):  # bounded; the deadline ends it long before
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    sock.connect(str(self.path))
                except (FileNotFoundError, ConnectionRefusedError) as exc:
                    sock.close()
                    last = exc
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.05)
                    continue
                except OSError as exc:
                    sock.close()
                    raise QmpConnectionError(f"{self.path}: cannot connect: {exc}") from exc
                self._sock = sock
                break
            if self._sock is None:
                raise QmpConnectionError(f"{self.path}: no QMP server after {wait:.1f} s ({last})")
            self._buffer.clear()
            self._broken = None
            try:
                greeting = self._read_message(deadline)
                if not isinstance(greeting.get("QMP"), dict):
                    raise QmpConnectionError(f"{self.path}: expected a QMP greeting, got {_short(greeting)}")
                self.greeting = greeting
                self.execute("qmp_capabilities", timeout=max(0.1, deadline - time.monotonic()))
            except QmpTimeoutError as exc:
                self.close()
                raise QmpConnectionError(f"{self.path}: no QMP greeting within {wait:.1f} s") from exc
            except BaseException:
                self.close()
                raise
            return greeting

    def close(self) -> None:
        """Close the socket. Idempotent; buffered events are kept."""
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.close()
                self._sock = None

    @property
    def connected(self) -> bool:
        return self._sock is not None and self._broken is None

    @property
    def version(self) -> tuple[int, int, int]:
        """QEMU's (major, minor, micro) from the greeting."""
        if self.greeting is None:
            raise QmpConnectionError("not connected")
        qemu = self.greeting["QMP"]["version"]["qemu"]
        return int(qemu["major"]), int(qemu["minor"]), int(qemu["micro"])

    # --- commands and events -------------------------------------------------------------------------------

    def execute(self, command: str, /, arguments: Mapping[str, Any] | None = None, *,
                timeout: float | None = None, **kwargs: Any) -> Any:
        """Run one command and return its ``return`` value.

        Arguments come from ``arguments`` (for names with dashes, such as ``cpu-index``) and ``kwargs``.

        :raises QmpCommandError: QEMU answered with an error.
        :raises QmpTimeoutError: no reply within ``timeout`` (default: the client's); the late reply, if any,
            is discarded when it arrives.
        :raises QmpConnectionError: not connected, or the connection broke.
        """
        args = {**(arguments or {}), **kwargs}
        with self._lock:
            sock = self._require_socket()
            request_id = next(self._ids)
            message: JsonObject = {"execute": command, "id": request_id}
            if args:
                message["arguments"] = args
            try:
                sock.sendall(json.dumps(message).encode() + b"\r\n")
            except OSError as exc:
                self._break(f"send failed: {exc}")
                raise QmpConnectionError(f"{self.path}: {command!r}: send failed: {exc}") from exc
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
            for _ in range(1_000_000):  # bounded; each pass consumes one message or ends by the deadline
                reply = self._read_message(deadline, what=f"reply to {command!r}")
                if "event" in reply:
                    self._events.append(reply)
                    continue
                if reply.get("id") != request_id:
                    log.debug("%s: discarding a reply to another (timed-out) command: %s", self.path, _short(reply))
                    continue
                if "error" in reply:
                    error = reply["error"] if isinstance(reply["error"], dict) else {}
                    raise QmpCommandError(command, str(error.get("class", "?")), str(error.get("desc", "")))
                if "return" not in reply:
                    raise QmpConnectionError(f"{self.path}: malformed reply to {command!r}: {_short(reply)}")
                return reply["return"]
            raise QmpConnectionError(f"{self.path}: too many messages while waiting for {command!r}")

    def take_events(self, name: str | None = None) -> list[JsonObject]:
        """Remove and return the buffered events (all, or only those called ``name``), oldest first.
        Does not read the socket: events arrive while commands run, or through :meth:`wait_event`."""
        with self._lock:
            taken = [e for e in self._events if name is None or e.get("event") == name]
            kept = [e for e in self._events if not (name is None or e.get("event") == name)]
            self._events.clear()
            self._events.extend(kept)
            return taken

    def wait_event(self, name: str, timeout: float | None = None,
                   match: Callable[[JsonObject], bool] | None = None) -> JsonObject:
        """Return (and remove) the oldest buffered or incoming event called ``name`` (and accepted by ``match``).

        :raises QmpTimeoutError: none within ``timeout``.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)

        def wanted(event: JsonObject) -> bool:
            return event.get("event") == name and (match is None or match(event))

        with self._lock:
            for event in list(self._events):
                if wanted(event):
                    self._events.remove(event)
                    return event
            self._require_socket()
            for _ in range(1_000_000):  # bounded; each pass consumes one message or ends by the deadline
                message = self._read_message(deadline, what=f"event {name}")
                if "event" not in message:
                    log.debug("%s: discarding a late reply: %s", self.path, _short(message))
                    continue
                if wanted(message):
                    return message
                self._events.append(message)
            raise QmpTimeoutError(f"{self.path}: too many other messages while waiting for event {name}")

    # --- wire ----------------------------------------------------------------------------------------------

    def _require_socket(self) -> socket.socket:
        if self._broken is not None:
            raise QmpConnectionError(f"{self.path}: connection broken earlier: {self._broken}")
        if self._sock is None:
            raise QmpConnectionError(f"{self.path}: not connected")
        return self._sock

    def _break(self, reason: str) -> None:
        self._broken = reason
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _read_message(self, deadline: float, what: str = "greeting") -> JsonObject:
        """The next complete message (caller holds the lock). Blank lines are skipped."""
        sock = self._require_socket()
        for _ in range(1_000_000):  # bounded; each pass reads data or ends by the deadline
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline]).strip()
                del self._buffer[:newline + 1]
                if not line:
                    continue
                try:
                    message = json.loads(line)
                except ValueError as exc:
                    self._break(f"not JSON: {line[:200]!r}")
                    raise QmpConnectionError(f"{self.path}: QEMU sent something that is not JSON: "
                                             f"{line[:200]!r}") from exc
                if not isinstance(message, dict):
                    self._break("not a JSON object")
                    raise QmpConnectionError(f"{self.path}: QEMU sent a non-object: {line[:200]!r}")
                return message
            if len(self._buffer) > _MAX_MESSAGE:
                self._break("message too long")
                raise QmpConnectionError(f"{self.path}: a message longer than {_MAX_MESSAGE} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QmpTimeoutError(f"{self.path}: no {what} within the timeout")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise QmpTimeoutError(f"{self.path}: no {what} within the timeout") from None
            except OSError as exc:
                self._break(f"receive failed: {exc}")
                raise QmpConnectionError(f"{self.path}: receive failed while waiting for {what}: {exc}") from exc
            if not chunk:
                self._break("closed by QEMU")
                raise QmpConnectionError(f"{self.path}: QEMU closed the connection while we waited for {what}")
            self._buffer += chunk
        raise QmpConnectionError(f"{self.path}: too many reads while waiting for {what}")


def _short(message: object) -> str:
    text = json.dumps(message)
    return text if len(text) <= 300 else text[:300] + "..."
