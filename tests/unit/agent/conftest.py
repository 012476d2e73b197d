"""A fake appliance for the agent's client and runner: a real stdlib ``ThreadingHTTPServer`` on
127.0.0.1 (port 0), speaking the agent API of docs/agent-api.md and serving images with HTTP
range requests, and taking ``read_disk`` uploads as the appliance's ``DiskUpload`` does (a sparse
file, ``committed`` the furthest end received in full). Loopback only, one fixture per test,
always shut down."""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

NODE = "11111111-2222-3333-4444-555555555555"
MACS = ["52:54:00:12:34:01", "52:54:00:12:34:02"]
_NODE_PATH = re.compile(r"^/agent/v1/nodes/([^/]+)/(inventory|heartbeat|commands/([^/]+))$")
_RANGE = re.compile(r"^bytes=(\d+)-$")
_DISK_PATH = re.compile(r"^/agent/v1/nodes/([^/]+)/disk/([^/]+)$")
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|(\*))/(\d+)")


class FakeAppliance:
    """The appliance as the agent sees it. Tests set what it answers and read what it got."""

    def __init__(self) -> None:
        self.boot_token = "boot-" + secrets.token_urlsafe(18)
        self.agent_token = "agent-" + secrets.token_urlsafe(24)
        self.interval_s = 0.05
        self.lookup_statuses: deque[int] = deque()  # error statuses for the next lookups
        self.echo_tokens = False  # error messages quote the token sent (the client must scrub it)
        self.batches: deque[list[dict[str, Any]]] = deque()  # commands for the next heartbeats
        self.heartbeat_statuses: deque[int] = deque()  # error statuses for the next heartbeats
        self.ended: set[str] = set()  # command ids a report gets 409 for
        self.images: dict[str, bytes] = {}  # path -> bytes, served by GET
        self.drop_after: int | None = None  # the next image GET closes after this many body bytes
        self.ignore_range = False
        self.image_status: int | None = None  # the next image GET fails with this status
        self.before_image: Callable[[], None] | None = None
        # read_disk uploads: what the next PUTs do instead of answering 200: an error
        # status (the body is read, nothing written), "cut" (half the body read, then the
        # connection closes: nothing committed) or "lost" (the range is committed, then the
        # connection closes before the answer)
        self.put_faults: deque[int | str] = deque()
        self.status_faults: deque[int] = deque()  # error statuses for the next status GETs
        self.disks: dict[str, bytearray] = {}  # command id -> the file the ranges are written to
        self.disk_state: dict[str, dict[str, Any]] = {}  # command id -> committed, total, complete
        self.disk_puts: list[tuple[str, str | None, int, str | None, str | None]] = []  # (command id,
        # Content-Range, body length, Content-Type, agent token header)
        self.disk_gets: list[tuple[str, str | None]] = []  # (command id, agent token header)
        self.lookups: list[dict[str, Any]] = []
        self.inventories: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.image_gets: list[tuple[str, int, str | None]] = []  # (path, offset, agent token header)
        self.events: list[str] = []  # reports and (from tests) what else happened, in order
        self.lock = threading.Lock()
        self.busy_seen = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-appliance", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def command(self, name: str, **params: Any) -> dict[str, Any]:
        """A command for the next heartbeats (``batches.append([...])``)."""
        return {"id": "cmd-" + secrets.token_hex(6), "name": name, "params": params}

    def reports_for(self, command_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for cid, body in self.reports if cid == command_id]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"errorCode": code, "message": message, "details": "", "recommendedActions": []}


def _handler(app: FakeAppliance) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, _error("INVALID_JSON", "the body is not JSON"))
                return
            if self.path == "/agent/v1/lookup":
                self._lookup(body)
                return
            match = _NODE_PATH.match(self.path)
            if match is None or match.group(1) != NODE:
                self._send(404, _error("RESOURCE_NOT_FOUND", f"no such resource {self.path}"))
                return
            sent = self.headers.get("X-Ingot-Agent-Token")
            if sent != app.agent_token:
                shown = f" ({sent})" if app.echo_tokens else ""
                self._send(401, _error("AUTHENTICATION_FAILED", f"a missing or wrong agent token{shown}"))
                return
            kind, command_id = match.group(2), match.group(3)
            with app.lock:
                if kind == "inventory":
                    app.inventories.append(body)
                    reply: dict[str, Any] = {"status": "OK"}
                elif kind == "heartbeat":
                    if app.heartbeat_statuses:
                        status = app.heartbeat_statuses.popleft()
                        self._send(status, _error("INTERNAL_ERROR", "the database is away"))
                        return
                    app.heartbeats.append(body)
                    if body.get("busy"):
                        app.busy_seen.set()
                    commands = app.batches.popleft() if app.batches else []
                    reply = {"heartbeatIntervalS": app.interval_s, "commands": commands}
                else:
                    if command_id in app.ended:
                        self._send(409, _error("AGENT_COMMAND_ENDED", f"command {command_id} has ended"))
                        return
                    app.reports.append((command_id, body))
                    app.events.append(f"report {body['state']}")
                    if body["state"] in ("succeeded", "failed"):
                        app.ended.add(command_id)
                    reply = {"status": "OK"}
            self._send(200, reply)

        def _lookup(self, body: dict[str, Any]) -> None:
            with app.lock:
                app.lookups.append(body)
                status = app.lookup_statuses.popleft() if app.lookup_statuses else None
            shown = f" {body.get('token')}" if app.echo_tokens else ""
            if status is not None:
                self._send(status, _error("RESOURCE_NOT_FOUND" if status == 404 else "INTERNAL_ERROR",
                                          f"the boot token{shown} is unknown"))
            elif body.get("token") != app.boot_token:
                self._send(404, _error("RESOURCE_NOT_FOUND", f"the boot token{shown} is unknown or expired"))
            elif not set(body.get("macs") or []) & set(MACS):
                self._send(409, _error("AGENT_LOOKUP_MISMATCH", "none of the MACs is the token's"))
            else:
                self._send(200, {"node": NODE, "agentToken": app.agent_token, "heartbeatIntervalS": app.interval_s})

        def _disk_request(self) -> tuple[str, dict[str, Any]] | None:
            """The command id and upload state of a disk upload request, or None once answered."""
            match = _DISK_PATH.match(self.path)
            assert match is not None
            if match.group(1) != NODE:
                self._send(404, _error("RESOURCE_NOT_FOUND", f"no such resource {self.path}"))
                return None
            if self.headers.get("X-Ingot-Agent-Token") != app.agent_token:
                sent = self.headers.get("X-Ingot-Agent-Token")
                shown = f" ({sent})" if app.echo_tokens else ""
                self._send(401, _error("AUTHENTICATION_FAILED", f"a missing or wrong agent token{shown}"))
                return None
            command_id = match.group(2)
            if command_id in app.ended:
                self._send(409, _error("AGENT_COMMAND_ENDED", f"command {command_id} has ended"))
                return None
            with app.lock:
                state = app.disk_state.setdefault(command_id, {"committed": 0, "total": None, "complete": False})
            return command_id, state

        def do_PUT(self) -> None:
            if not _DISK_PATH.match(self.path):
                self._send(404, _error("RESOURCE_NOT_FOUND", f"no such resource {self.path}"))
                return
            length = int(self.headers.get("Content-Length") or 0)
            content_range = self.headers.get("Content-Range")
            with app.lock:
                fault = app.put_faults.popleft() if app.put_faults else None
            if fault == "cut":
                self.rfile.read(length // 2)
                self.close_connection = True
                return  # no answer: the agent sees the connection closed
            body = self.rfile.read(length)
            found = self._disk_request()
            if found is None:
                return
            command_id, state = found
            with app.lock:
                app.disk_puts.append((command_id, content_range, len(body), self.headers.get("Content-Type"),
                                      self.headers.get("X-Ingot-Agent-Token")))
            if isinstance(fault, int):
                self._send(fault, _error("AGENT_COMMAND_ENDED" if fault == 409 else "UPLOAD_FAILED",
                                         f"the range was not taken (HTTP {fault})"))
                return
            where = _CONTENT_RANGE.fullmatch(content_range or "")
            if where is None:
                self._send(400, _error("INVALID_INPUT", "Content-Range must be 'bytes START-END/TOTAL'"))
                return
            total = int(where.group(4))
            with app.lock:
                if state["total"] is not None and state["total"] != total:
                    self._send(409, _error("RESOURCE_CONFLICT", f"this upload is {state['total']} bytes"))
                    return
                disk = app.disks.setdefault(command_id, bytearray())
                state["total"] = total
                if where.group(3):  # the end: bytes */TOTAL
                    if body:
                        self._send(400, _error("INVALID_INPUT", "the end of an upload has no body"))
                        return
                    disk.extend(bytes(max(0, total - len(disk))))
                    state.update(committed=total, complete=True)
                else:
                    start, end = int(where.group(1)), int(where.group(2))
                    if start > end or end >= total or len(body) != end - start + 1:
                        self._send(400, _error("INVALID_INPUT", f"bytes {start}-{end}/{total} with {len(body)}"))
                        return
                    disk.extend(bytes(max(0, end + 1 - len(disk))))  # sparse: what is not sent is zero
                    disk[start:end + 1] = body
                    state["committed"] = max(state["committed"], end + 1)
                reply = dict(state)
            if fault == "lost":
                self.close_connection = True
                return  # committed, and no answer
            self._send(200, reply)

        def do_GET(self) -> None:
            if _DISK_PATH.match(self.path):
                with app.lock:
                    status = app.status_faults.popleft() if app.status_faults else None
                found = self._disk_request()
                if found is None:
                    return
                with app.lock:
                    app.disk_gets.append((found[0], self.headers.get("X-Ingot-Agent-Token")))
                    reply = dict(found[1])
                if status is not None:
                    self._send(status, _error("UNAVAILABLE", "try again later"))
                else:
                    self._send(200, reply)
                return
            data = app.images.get(self.path)
            header = self.headers.get("Range")
            match = _RANGE.match(header) if header else None
            offset = int(match.group(1)) if match else 0
            with app.lock:
                app.image_gets.append((self.path, offset, self.headers.get("X-Ingot-Agent-Token")))
                drop, app.drop_after = app.drop_after, None
                status, app.image_status = app.image_status, None
            if app.before_image is not None:
                app.before_image()
            if data is None:
                self._send(404, _error("RESOURCE_NOT_FOUND", f"no image {self.path}"))
                return
            if status is not None:
                self._send(status, _error("UNAVAILABLE", "try again later"))
                return
            if match and not app.ignore_range:
                if offset >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[offset:]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {offset}-{len(data) - 1}/{len(data)}")
            else:
                body = data
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # A dropped connection: the headers promise the whole body, then the socket closes.
            self.wfile.write(body if drop is None else body[:drop])

    return Handler


@pytest.fixture
def appliance() -> Iterator[FakeAppliance]:
    app = FakeAppliance()
    app.start()
    try:
        yield app
    finally:
        app.stop()
