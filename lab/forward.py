"""A TCP port forwarder from the host's loopback into the lab namespace, without any host interface.

The appliance inside the lab listens on ``10.P.Q.1:8443``, an address that exists only in the lab
namespace. To reach its API and UI from the host's browser and CLI, one would usually add a veth
pair into the host namespace — and then the lab is wired to the machine. Instead this forwarder
uses the fact that a socket keeps the network namespace it was *created* in:

1. it binds its listening sockets on the host's loopback (``127.0.0.1:PORT``), in the host namespace;
2. then it joins the lab namespace with ``setns(2)`` (:func:`lab.netns.enter_namespace`);
3. every connection it accepts still comes in through the host's loopback, and every outgoing
   connection it opens to the target is made inside the lab.

Bytes are copied both ways untouched (TLS included: the browser talks to the appliance's own
certificate), each direction half-closed on EOF. Connections are bounded (``--max-connections``;
beyond that a new one is closed at once), and SIGTERM or SIGINT closes the listeners and every
connection, then exits 0. Listening is refused on anything but loopback addresses.

::

    python -m lab.forward --netns ingot-lab --listen 127.0.0.1:8443 --to 10.100.7.1:8443 \\
        [--listen 127.0.0.1:8080 --to 10.100.7.1:8080 ...] [--max-connections 128] [--duration 0]

When it is ready it prints one JSON line on stdout, ``{"listen": ["127.0.0.1:8443", ...],
"netns": "ingot-lab"}`` (with the ports actually bound, so ``--listen 127.0.0.1:0`` works).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lab.netns import enter_namespace

__all__ = ["Route", "format_endpoint", "forward_argv", "main", "open_listener", "parse_endpoint", "serve"]

log = logging.getLogger("lab.forward")

BUFFER = 64 * 1024
CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 128


@dataclass(frozen=True)
class Route:
    """Forward what arrives on ``listen`` (host loopback) to ``target`` (inside the lab)."""

    listen: tuple[str, int]
    target: tuple[str, int]


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"10.0.0.1:8443"`` or ``"[::1]:8443"`` → (address, port); the address must be numeric."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not ADDRESS:PORT")
    host = host.removeprefix("[").removesuffix("]")
    return str(ipaddress.ip_address(host)), int(port)


def format_endpoint(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def forward_argv(netns: str, routes: Sequence[Route], *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 duration: float = 0.0) -> list[str]:
    """The command line that runs this forwarder (start it in the *host* namespace)."""
    argv = [sys.executable, "-m", "lab.forward", "--netns", netns, "--max-connections", str(max_connections),
            "--duration", str(duration)]
    for route in routes:
        argv += ["--listen", format_endpoint(route.listen), "--to", format_endpoint(route.target)]
    return argv


def open_listener(endpoint: tuple[str, int]) -> socket.socket:
    """A listening TCP socket on ``endpoint``, in the caller's namespace; loopback addresses only."""
    host, port = endpoint
    address = ipaddress.ip_address(host)
    if not address.is_loopback:
        raise ValueError(f"refusing to listen on {host}: the lab is reachable on loopback only")
    sock = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Forwarder:
    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.connections: set[asyncio.Task[None]] = set()

    async def handle(self, target: tuple[str, int], client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = client_writer.get_extra_info("peername")
        if len(self.connections) >= self.max_connections:
            log.warning("refusing %s: %d connections open already", peer, len(self.connections))
            client_writer.close()
            return
        self.connections.add(task)
        try:
            try:
                upstream_reader, upstream_writer = await asyncio.wait_for(
                    asyncio.open_connection(*target), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                log.info("%s: cannot connect to %s: %s", peer, format_endpoint(target), exc or "timeout")
                return
            try:
                await _splice(client_reader, client_writer, upstream_reader, upstream_writer)
            finally:
                upstream_writer.close()
        finally:
            client_writer.close()
            self.connections.discard(task)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side (TLS close_notify etc. pass as data)."""
    while data := await reader.read(BUFFER):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def _splice(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                  b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
    """Both directions until both reached EOF, or until either fails (then both are dropped)."""
    copies = {asyncio.create_task(_copy(a_reader, b_writer)), asyncio.create_task(_copy(b_reader, a_writer))}
    try:
        await asyncio.wait(copies, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for copy in copies:
            copy.cancel()
        results = await asyncio.gather(*copies, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, OSError):  # resets are routine
            log.warning("connection dropped: %r", result)


async def serve(listeners: Sequence[tuple[socket.socket, tuple[str, int]]], *,
                max_connections: int = DEFAULT_MAX_CONNECTIONS, stop: asyncio.Event | None = None,
                on_ready: Callable[[], None] | None = None) -> None:
    """Forward each listener's connections to its target until ``stop`` is set.

    Outgoing connections are made in the namespace of the calling thread: join the lab first.
    On stop the listeners are closed and open connections cancelled.

    :param listeners: (listening socket, target) pairs; see :func:`open_listener`.
    :param on_ready: called once every listener accepts connections.
    """
    stop = stop or asyncio.Event()
    forwarder = _Forwarder(max_connections)
    servers = []
    for sock, target in listeners:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             target: tuple[str, int] = target) -> None:
            await forwarder.handle(target, reader, writer)

        servers.append(await asyncio.start_server(on_connect, sock=sock))
    if on_ready is not None:
        on_ready()
    try:
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for task in list(forwarder.connections):
            task.cancel()
        await asyncio.gather(*forwarder.connections, return_exceptions=True)


async def _run(netns: str, listeners: Sequence[tuple[socket.socket, tuple[str, int]]], max_connections: int,
               duration: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if duration > 0:
        loop.call_later(duration, stop.set)
    bound = [format_endpoint(sock.getsockname()[:2]) for sock, _ in listeners]

    def announce() -> None:
        print(json.dumps({"listen": bound, "netns": netns}), flush=True)
        log.info("forwarding %s", ", ".join(f"{b} -> {format_endpoint(t)}" for b, (_, t) in zip(bound, listeners,
                                                                                                  strict=True)))

    await serve(listeners, max_connections=max_connections, stop=stop, on_ready=announce)
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.forward",
                                     description="Forward host loopback ports into a lab network namespace.")
    parser.add_argument("--netns", required=True, help="the lab's network namespace")
    parser.add_argument("--listen", action="append", required=True, type=parse_endpoint,
                        help="loopback ADDRESS:PORT on the host (repeatable; port 0 picks a free one)")
    parser.add_argument("--to", action="append", required=True, type=parse_endpoint,
                        help="ADDRESS:PORT inside the lab, one per --listen, in the same order")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS)
    parser.add_argument("--duration", type=float, default=0.0, help="exit after this many seconds (0: never)")
    args = parser.parse_args(argv)
    if len(args.listen) != len(args.to):
        parser.error("give one --to for every --listen")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s lab.forward %(levelname)s %(message)s")

    listeners: list[tuple[socket.socket, tuple[str, int]]] = []
    try:
        for listen, target in zip(args.listen, args.to, strict=True):
            listeners.append((open_listener(listen), target))  # in the host namespace
        enter_namespace(args.netns)  # from here on, new sockets are made inside the lab
    except (OSError, ValueError) as exc:
        for sock, _ in listeners:
            sock.close()
        print(f"lab.forward: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(args.netns, listeners, args.max_connections, args.duration))
    finally:
        for sock, _ in listeners:
            with contextlib.suppress(OSError):
                sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
