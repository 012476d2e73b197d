"""lab.qmp against a fake QMP server on a UNIX socket: greeting and negotiation, replies and errors, events
interleaved with replies, timeouts (and the late reply after one), broken peers, and concurrent callers."""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.qmp import EVENT_BUFFER, QmpClient, QmpCommandError, QmpConnectionError, QmpTimeoutError

GREETING = {"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "fake"},
                    "capabilities": ["oob"]}}

# What the fake answers to one request: the raw lines to send back (each gets "\r\n"), in order.
Handler = Callable[[dict[str, Any]], list[str]]


def reply(request: dict[str, Any], value: Any = None) -> str:
    return json.dumps({"return": {} if value is None else value, "id": request.get("id")})


def event(name: str, **data: Any) -> str:
    return json.dumps({"event": name, "data": data, "timestamp": {"seconds": 1, "microseconds": 2}})


class FakeQmp:
    """One-connection QMP server in a thread. ``handler`` scripts the answers; ``requests`` records what came."""

    def __init__(self, path: Path, handler: Handler, *, greeting: str | None = None) -> None:
        self.path = path
        self.handler = handler
        self.greeting = json.dumps(GREETING) if greeting is None else greeting
        self.requests: list[dict[str, Any]] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.listener.settimeout(5)
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _send(self, lines: list[str]) -> None:
        assert self.conn is not None
        for line in lines:
            self.conn.sendall(line.encode() + b"\r\n")

    def _serve(self) -> None:
        try:
            self.conn, _ = self.listener.accept()
        except OSError:
            return
        self.conn.settimeout(10)
        buffer = b""
        self._send([self.greeting])
        for _ in range(1000):  # bounded: a test sends a handful of requests
            while b"\n" not in buffer:
                try:
                    chunk = self.conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            self.requests.append(request)
            if request["execute"] == "qmp_capabilities":
                self._send([reply(request)])
                continue
            try:
                self._send(self.handler(request))
            except OSError:
                return

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.shutdown(socket.SHUT_RDWR)  # wakes the serving thread's recv()
            self.conn.close()
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # UNIX socket paths are limited to 107 bytes; pytest's tmp_path can be longer than that.
    with tempfile.TemporaryDirectory(prefix="qmp") as directory:
        yield Path(directory)


@pytest.fixture
def serve(sock_dir: Path) -> Iterator[Callable[..., FakeQmp]]:
    servers: list[FakeQmp] = []

    def start(handler: Handler, **kwargs: Any) -> FakeQmp:
        server = FakeQmp(sock_dir / f"q{len(servers)}.sock", handler, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def echo(request: dict[str, Any]) -> list[str]:
    return [reply(request, {"command": request["execute"], "arguments": request.get("arguments", {})})]


def test_greeting_negotiation_and_a_reply(serve: Callable[..., FakeQmp]) -> None:
    server = serve(echo)
    with QmpClient(server.path, timeout=5) as client:
        assert client.greeting == GREETING
        assert client.version == (7, 2, 22)
        result = client.execute("qom-get", {"cpu-index": 1}, path="/machine/peripheral/nic0", property="bootindex")
    assert result == {"command": "qom-get",
                      "arguments": {"cpu-index": 1, "path": "/machine/peripheral/nic0", "property": "bootindex"}}
    assert [r["execute"] for r in server.requests] == ["qmp_capabilities", "qom-get"]
    assert "arguments" not in server.requests[0]
    assert len({r["id"] for r in server.requests}) == 2, "every command carries its own id"


def test_error_reply_carries_class_and_description(serve: Callable[..., FakeQmp]) -> None:
    def refuse(request: dict[str, Any]) -> list[str]:
        error = {"class": "GenericError", "desc": "The bootindex 1 has already been used"}
        return [json.dumps({"error": error, "id": request["id"]})]

    with QmpClient(serve(refuse).path, timeout=5) as client:
        with pytest.raises(QmpCommandError) as caught:
            client.execute("qom-set", path="/machine/peripheral/nic0", property="bootindex", value=1)
        assert caught.value.command == "qom-set"
        assert caught.value.error_class == "GenericError"
        assert caught.value.desc == "The bootindex 1 has already been used"
        assert "GenericError" in str(caught.value) and "already been used" in str(caught.value)
        assert client.connected, "an error reply leaves the connection usable"


def test_refused_capabilities_negotiation_is_an_error(serve: Callable[..., FakeQmp], sock_dir: Path) -> None:
    path = sock_dir / "refuse.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve_refusal() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
            request = json.loads(conn.recv(4096).split(b"\n")[0])
            error = {"class": "CommandNotFound", "desc": "nope"}
            conn.sendall(json.dumps({"error": error, "id": request["id"]}).encode() + b"\r\n")
            conn.recv(10)

    thread = threading.Thread(target=serve_refusal, daemon=True)
    thread.start()
    client = QmpClient(path, timeout=5)
    with pytest.raises(QmpCommandError, match="CommandNotFound"):
        client.connect()
    assert not client.connected
    thread.join(5)
    listener.close()


def test_events_interleaved_with_replies_are_buffered(serve: Callable[..., FakeQmp]) -> None:
    def chatty(request: dict[str, Any]) -> list[str]:
        if request["execute"] == "system_reset":
            return [event("STOP"), reply(request), event("RESET", guest=False, reason="host-qmp-system-reset")]
        return [event("RTC_CHANGE", offset=1), reply(request, {"status": "running"})]

    with QmpClient(serve(chatty).path, timeout=5) as client:
        assert client.execute("system_reset") == {}
        # RESET came after the reply: not read yet; wait_event reads it from the socket.
        assert [e["event"] for e in client.take_events()] == ["STOP"]
        reset = client.wait_event("RESET", timeout=2)
        assert reset["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
        assert client.execute("query-status") == {"status": "running"}
        assert client.take_events("RESET") == []
        assert [e["event"] for e in client.take_events()] == ["RTC_CHANGE"]


def test_wait_event_prefers_the_buffer_and_applies_the_filter(serve: Callable[..., FakeQmp]) -> None:
    def resets(request: dict[str, Any]) -> list[str]:
        return [event("RESET", guest=True), event("RESET", guest=False), reply(request)]

    with QmpClient(serve(resets).path, timeout=5) as client:
        client.execute("cont")
        host = client.wait_event("RESET", timeout=1, match=lambda e: not e["data"]["guest"])
        assert host["data"]["guest"] is False
        assert [e["data"]["guest"] for e in client.take_events("RESET")] == [True]
        with pytest.raises(QmpTimeoutError):
            client.wait_event("RESET", timeout=0.2)


def test_the_event_buffer_is_bounded(serve: Callable[..., FakeQmp]) -> None:
    def flood(request: dict[str, Any]) -> list[str]:
        return [event("RTC_CHANGE", n=i) for i in range(EVENT_BUFFER + 50)] + [reply(request)]

    with QmpClient(serve(flood).path, timeout=5) as client:
        client.execute("query-status")
        kept = client.take_events()
    assert len(kept) == EVENT_BUFFER
    assert kept[-1]["data"]["n"] == EVENT_BUFFER + 49, "the newest events are kept"


def test_timeout_then_the_late_reply_is_discarded(serve: Callable[..., FakeQmp]) -> None:
    held: list[dict[str, Any]] = []

    def slow_first(request: dict[str, Any]) -> list[str]:
        if request["execute"] == "slow":
            held.append(request)
            return []  # no answer yet
        # The answer to the timed-out command arrives first, then this one's.
        return [reply(held[0], "late"), reply(request, "fresh")]

    with QmpClient(serve(slow_first).path, timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(QmpTimeoutError, match="reply to 'slow'"):
            client.execute("slow", timeout=0.3)
        assert time.monotonic() - started < 3
        assert client.connected
        assert client.execute("query-status") == "fresh"


def test_peer_closing_breaks_the_client_for_good(serve: Callable[..., FakeQmp]) -> None:
    def hang_up(request: dict[str, Any]) -> list[str]:
        raise OSError("hang up")  # the fake stops serving and close() drops the connection

    server = serve(hang_up)
    client = QmpClient(server.path, timeout=5)
    client.connect()
    server.close()
    with pytest.raises(QmpConnectionError):
        client.execute("query-status")
    assert not client.connected
    with pytest.raises(QmpConnectionError, match="broken"):
        client.execute("query-status")
    client.close()


def test_garbage_from_the_peer_is_a_connection_error(serve: Callable[..., FakeQmp]) -> None:
    def garbage(request: dict[str, Any]) -> list[str]:
        return ["this is not json"]

    with QmpClient(serve(garbage).path, timeout=5) as client:
        with pytest.raises(QmpConnectionError, match="not JSON"):
            client.execute("query-status")
        assert not client.connected


def test_a_server_that_is_not_qmp(serve: Callable[..., FakeQmp]) -> None:
    server = serve(echo, greeting=json.dumps({"hello": "world"}))
    client = QmpClient(server.path, timeout=5)
    with pytest.raises(QmpConnectionError, match="expected a QMP greeting"):
        client.connect()
    assert not client.connected


def test_connect_waits_for_the_socket_then_gives_up(sock_dir: Path, serve: Callable[..., FakeQmp]) -> None:
    missing = QmpClient(sock_dir / "never.sock")
    started = time.monotonic()
    with pytest.raises(QmpConnectionError, match="no QMP server"):
        missing.connect(timeout=0.3)
    assert time.monotonic() - started < 3

    late: list[FakeQmp] = []
    timer = threading.Timer(0.3, lambda: late.append(serve(echo)))
    timer.start()
    client = QmpClient(sock_dir / "q0.sock")
    try:
        assert client.connect(timeout=5) == GREETING
    finally:
        timer.join()
        client.close()


def test_not_connected(sock_dir: Path) -> None:
    client = QmpClient(sock_dir / "x.sock")
    with pytest.raises(QmpConnectionError, match="not connected"):
        client.execute("query-status")
    with pytest.raises(QmpConnectionError):
        _ = client.version


def test_concurrent_callers_each_get_their_own_reply(serve: Callable[..., FakeQmp]) -> None:
    with QmpClient(serve(echo).path, timeout=5) as client:
        results: dict[int, Any] = {}

        def call(n: int) -> None:
            for i in range(20):
                got = client.execute(f"cmd-{n}", n=n, i=i)
                assert got == {"command": f"cmd-{n}", "arguments": {"n": n, "i": i}}
            results[n] = True

        threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert results == {0: True, 1: True, 2: True, 3: True}
