"""A TCP proxy on 127.0.0.1 that stands for "the network" between a test's agent and the appliance:
it forwards every connection to ``upstream`` (which a test may change, as when a restarted
appliance listens on a new port) and, when asked, cuts one response off after a number of bytes,
as a dropped link would. It records each request's first line and Range header."""

from __future__ import annotations

import contextlib
import socket
import threading

MAX_HEAD = 64 << 10


class FaultyProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.requests: list[str] = []
        self.dropped = 0
        self._drop: tuple[bytes, int] | None = None
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="faulty-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop_once(self, marker: bytes, after_bytes: int) -> None:
        """Cut the next response to a request containing ``marker`` after ``after_bytes`` bytes."""
        with self._lock:
            self._drop = (marker, after_bytes)

    def close(self) -> None:
        self._closed.set()
        self._server.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            try:
                upstream = stack.enter_context(socket.create_connection(self.upstream, timeout=30))
            except OSError:
                return  # the appliance is down: the client sees its connection closed
            lines = head.split(b"\r\n")
            ranges = [line.decode(errors="replace") for line in lines if line.lower().startswith(b"range:")]
            with self._lock:
                self.requests.append(" ".join([lines[0].decode(errors="replace"), *ranges]))
                limit = None
                if self._drop is not None and self._drop[0] in head:
                    limit, self._drop = self._drop[1], None
            upstream.sendall(head)
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
            sent = 0
            while True:
                try:
                    data = upstream.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if limit is not None and sent + len(data) >= limit:
                    client.sendall(data[:limit - sent])
                    with self._lock:
                        self.dropped += 1
                    client.shutdown(socket.SHUT_RDWR)
                    return
                client.sendall(data)
                sent += len(data)


def _pump(source: socket.socket, target: socket.socket) -> None:
    """The rest of the request (a POST body) from the client to the appliance."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
