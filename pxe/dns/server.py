"""asyncio transport for Ingot's DNS: UDP and TCP listeners on one port, and the forwarder.

Theory of operation
-------------------
Every query, whatever it arrived on, goes through :func:`pxe.dns.resolver.answer` and the
verdict is carried out here; nothing in this module decides what a reply says.

UDP: one :class:`asyncio.DatagramProtocol` answers zone queries synchronously inside
``datagram_received`` (a lookup in an immutable snapshot is cheaper than scheduling a task).
Replies larger than the client's limit are sent truncated (``Reply.pack_udp``). When the
kernel will not take more replies and the transport's buffer passes its high-water mark
(``pause_writing``, i.e. a flood), further replies are dropped until it drains instead of being
queued without bound; UDP clients retry.

TCP (RFC 1035 §4.2.2, RFC 7766): each message has a two-byte length prefix; a connection may
carry many queries, read one after another and answered concurrently (up to
:data:`_TCP_PIPELINE` at a time per connection, RFC 7766 §6.2.1.1) as they complete. A connection
is closed when it is idle (or dribbles one message) for ``tcp_idle_timeout``, when a reply cannot
be written within that time, when it sends something that is not even a DNS header, and when
``max_tcp_clients`` connections are already open (new ones are closed at once).

Forwarding: a :class:`~pxe.dns.resolver.Forward` verdict is sent to the upstreams in the order
given. Each attempt uses its own connected UDP socket (a fresh random source port, and the
kernel drops datagrams from any other address) and a fresh random message ID, and only a reply
that :meth:`~pxe.dns.resolver.Forward.accepts` - same ID, same question - is relayed, which keeps
blind spoofing as hard as against a resolver. An upstream that does not answer within
``forward_timeout`` seconds, answers with an ICMP error, or says SERVFAIL or REFUSED, is followed
by the next one; when none gives a usable answer the client gets the last SERVFAIL/REFUSED seen,
or SERVFAIL. For a TCP client a truncated UDP answer is asked again over TCP from the same
upstream; a UDP client gets it truncated and retries over TCP itself. At most ``max_forwards``
forwards run at once; past that, queries that need one are answered SERVFAIL straight away so a
flood of out-of-zone names cannot exhaust sockets.

Robustness: a handler never lets an exception escape into the event loop; a hostile packet is at
worst dropped or answered FORMERR and counted. :attr:`DnsServer.stats` counts what happened.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import struct
from collections.abc import Coroutine, Sequence

from pxe.dns.resolver import Forward, Rcode, Reply, answer, is_truncated, reply_rcode
from pxe.dns.zone import Zone

__all__ = ["STAT_KEYS", "DnsServer"]

logger = logging.getLogger(__name__)

Address = tuple[str, int]

_LENGTH = struct.Struct("!H")  # the TCP length prefix (RFC 1035 §4.2.2)
# Queries of one TCP connection in progress at once; reading pauses beyond it.
_TCP_PIPELINE = 16
# How often start() looks for a port free for both UDP and TCP when asked for port 0.
_BIND_ATTEMPTS = 20
_RETRY_NEXT_UPSTREAM = frozenset({Rcode.SERVFAIL, Rcode.REFUSED})

#: The counters in :attr:`DnsServer.stats`.
STAT_KEYS = (
    "udp_queries",  # datagrams received on the listener
    "tcp_queries",  # messages received over TCP
    "tcp_connections",  # TCP connections accepted
    "tcp_rejected",  # TCP connections closed at once: max_tcp_clients reached
    "dropped",  # queries not answered: not a DNS query, or the UDP send buffer was full
    "forwarded",  # queries sent to the upstreams (one per client query, however many attempts)
    "upstream_unanswered",  # upstream attempts without a usable answer (timeout, ICMP error, TCP failure)
    "forward_failures",  # forwarded queries that no upstream answered (the client got SERVFAIL)
    "forwards_shed",  # queries answered SERVFAIL at once because max_forwards were running
    "truncated",  # replies sent with TC set
    "errors",  # unexpected exceptions caught in a handler (a bug; see the log)
    *(f"rcode_{rcode.name.lower()}" for rcode in Rcode),  # replies sent, by header rcode
    "rcode_other",
)


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._server._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (a client that went away); the listener keeps serving.
        logger.debug("dns: udp listener socket error: %s", exc)

    def pause_writing(self) -> None:
        self._server._udp_paused = True

    def resume_writing(self) -> None:
        self._server._udp_paused = False


class _UpstreamExchange(asyncio.DatagramProtocol):
    """One attempt of one forward over UDP: resolves ``reply`` with the first accepted datagram,
    or with ``None`` when the socket reports an error (ICMP port unreachable)."""

    def __init__(self, forward: Forward, qid: int) -> None:
        self._forward = forward
        self._qid = qid
        self.reply: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.reply.done():
            return
        if self._forward.accepts(data, self._qid):
            self.reply.set_result(data)
        else:
            logger.debug("dns: ignored a non-matching reply from %s", addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("dns: upstream socket error: %s", exc)
        if not self.reply.done():
            self.reply.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_result(None)


class DnsServer:
    """Serve a :class:`~pxe.dns.zone.Zone` over UDP and TCP and forward other names, until :meth:`stop`.

    :param zone: the authoritative data; its ``replace`` takes effect from the next query.
    :param host: IP address to listen on (UDP and TCP).
    :param port: port for both; 0 picks one free for both (see :meth:`start`).
    :param upstreams: ``(ip, port)`` of the resolvers to forward other names to, tried in order.
        Without any, out-of-zone queries are REFUSED.
    :param forward_timeout: seconds to wait for each upstream before trying the next.
    :param max_tcp_clients: TCP connections open at once; further ones are closed on accept.
    :param max_forwards: forwarded queries in progress at once; further ones get SERVFAIL.
    :param tcp_idle_timeout: seconds a TCP connection may wait between (or take to send) queries.

    ``stats`` maps each name of :data:`STAT_KEYS` to a count; read it on the loop's thread or
    after :meth:`stop` for consistent numbers.
    """

    def __init__(
        self,
        zone: Zone,
        *,
        host: str,
        port: int,
        upstreams: Sequence[tuple[str, int]] = (),
        forward_timeout: float = 2.0,
        max_tcp_clients: int = 256,
        max_forwards: int = 256,
        tcp_idle_timeout: float = 10.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not in 0..65535")
        for upstream in upstreams:
            if len(upstream) != 2 or not 0 < upstream[1] <= 65535:
                raise ValueError(f"upstream {upstream!r} is not an (address, port) pair")
        if forward_timeout <= 0 or tcp_idle_timeout <= 0:
            raise ValueError("forward_timeout and tcp_idle_timeout must be positive")
        if max_tcp_clients < 1 or max_forwards < 1:
            raise ValueError("max_tcp_clients and max_forwards must be at least 1")
        self.zone = zone
        self.host = host
        self.port = port
        self.upstreams: tuple[Address, ...] = tuple((str(h), int(p)) for h, p in upstreams)
        self.forward_timeout = forward_timeout
        self.max_tcp_clients = max_tcp_clients
        self.max_forwards = max_forwards
        self.tcp_idle_timeout = tcp_idle_timeout
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # UDP forwards and TCP queries: stop() cancels them
        # TCP connection handlers and their writers: stop() aborts the connections and lets the
        # handlers end by themselves (on 3.11 asyncio reports a cancelled handler as an error).
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._tcp_clients = 0
        self._udp_paused = False  # the listener's send buffer is above its high-water mark
        self._forwards_running = 0
        self._stopping = False

    @property
    def forwarding(self) -> bool:
        return bool(self.upstreams)

    @property
    def tcp_clients(self) -> int:
        """TCP connections open right now."""
        return self._tcp_clients

    @property
    def forwards_running(self) -> int:
        """Forwarded queries waiting for an upstream right now."""
        return self._forwards_running

    async def start(self) -> int:
        """Bind UDP, then TCP on the same port, and return that port.

        With ``port=0`` the kernel picks the UDP port; if TCP cannot bind it (another program
        holds it) a new pair is tried, a few times. An explicit port that is busy raises
        ``OSError``.
        """
        if self._udp is not None:
            raise RuntimeError("DnsServer already started")
        self._stopping = self._udp_paused = False
        loop = asyncio.get_running_loop()
        attempts = _BIND_ATTEMPTS if self.port == 0 else 1
        for attempt in range(1, attempts + 1):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpListener(self), local_addr=(self.host, self.port), family=self._family
            )
            port = int(udp.get_extra_info("sockname")[1])
            try:
                tcp = await asyncio.start_server(
                    self._serve_tcp, self.host, port, family=self._family, reuse_address=True
                )
            except OSError:
                udp.close()
                if attempt == attempts:
                    raise
                continue
            self._udp, self._tcp, self.port = udp, tcp, port
            break
        logger.info("dns listening on %s port %d (udp, tcp) for %s", self.host, self.port, self.zone.domain)
        return self.port

    async def stop(self) -> None:
        """Close both listeners, cancel running forwards and close TCP connections."""
        self._stopping = True
        if self._tcp is not None:
            self._tcp.close()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        handlers = list(self._connections)
        for writer in self._connections.values():
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *handlers, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
            self._tcp = None

    # -- UDP ------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        self.stats["udp_queries"] += 1
        try:
            verdict = answer(data, self.zone, forwarding=self.forwarding)
            if verdict is None:
                self.stats["dropped"] += 1
            elif isinstance(verdict, Reply):
                self._send_udp(verdict.pack_udp(), addr)
            elif not self._reserve_forward():
                self._send_udp(verdict.fail().pack_udp(), addr)
            else:
                # Reserved here, not in the task: several datagrams may arrive before it runs.
                task = self._spawn(self._forward_udp(verdict, addr))
                task.add_done_callback(self._release_forward)
        except Exception:
            self.stats["errors"] += 1
            logger.exception("dns: failed to handle a datagram from %s", addr)

    async def _forward_udp(self, forward: Forward, addr: Address) -> None:
        try:
            self._send_udp(await self._forward(forward, tcp=False), addr)
        except Exception:
            self.stats["errors"] += 1
            logger.exception("dns: forwarding %s for %s failed", forward.qname, addr)

    def _send_udp(self, data: bytes, addr: Address) -> None:
        transport = self._udp
        if transport is None:  # stopped while a forward was running
            return
        if self._udp_paused:
            self.stats["dropped"] += 1
            return
        self._count_reply(data)
        transport.sendto(data, addr)

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _count_reply(self, data: bytes) -> None:
        try:
            key = f"rcode_{Rcode(reply_rcode(data)).name.lower()}"
        except ValueError:
            key = "rcode_other"
        self.stats[key] += 1
        if is_truncated(data):
            self.stats["truncated"] += 1

    # -- TCP ------------------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:  # accepted just before stop() closed the listener
            writer.transport.abort()
            return
        if self._tcp_clients >= self.max_tcp_clients:
            self.stats["tcp_rejected"] += 1
            writer.transport.abort()
            return
        handler = asyncio.current_task()
        assert handler is not None
        self._connections[handler] = writer
        self._tcp_clients += 1
        self.stats["tcp_connections"] += 1
        peer = writer.get_extra_info("peername")
        slots = asyncio.Semaphore(_TCP_PIPELINE)
        write_lock = asyncio.Lock()
        pending: set[asyncio.Task[None]] = set()

        def finished(done: asyncio.Task[None]) -> None:
            pending.discard(done)
            slots.release()

        try:
            while not writer.is_closing():
                try:
                    async with asyncio.timeout(self.tcp_idle_timeout):
                        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                        message = await reader.readexactly(length)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                self.stats["tcp_queries"] += 1
                await slots.acquire()
                query = self._spawn(self._tcp_query(message, writer, write_lock, peer))
                pending.add(query)
                query.add_done_callback(finished)
            if pending:
                await asyncio.wait(pending)  # answer what was asked before hanging up
        except Exception:
            self.stats["errors"] += 1
            logger.exception("dns: tcp connection from %s failed", peer)
        finally:
            for query in pending:
                query.cancel()
            writer.close()
            self._tcp_clients -= 1
            self._connections.pop(handler, None)

    async def _tcp_query(
        self, message: bytes, writer: asyncio.StreamWriter, write_lock: asyncio.Lock, peer: object
    ) -> None:
        try:
            verdict = answer(message, self.zone, forwarding=self.forwarding)
            if verdict is None:
                # Not even a DNS header: the stream cannot be trusted any more (RFC 7766 §8).
                self.stats["dropped"] += 1
                writer.close()
                return
            if isinstance(verdict, Reply):
                data = verdict.pack()
            elif not self._reserve_forward():
                data = verdict.fail().pack()
            else:
                try:
                    data = await self._forward(verdict, tcp=True)
                finally:
                    self._release_forward()
            async with write_lock:
                if writer.is_closing():
                    return
                self._count_reply(data)
                writer.write(_LENGTH.pack(len(data)) + data)
                try:
                    async with asyncio.timeout(self.tcp_idle_timeout):
                        await writer.drain()
                except (TimeoutError, ConnectionError):
                    writer.transport.abort()  # a client that does not read its replies
        except Exception:
            self.stats["errors"] += 1
            logger.exception("dns: tcp query from %s failed", peer)

    # -- forwarding -----------------------------------------------------------------------------

    def _reserve_forward(self) -> bool:
        if self._forwards_running >= self.max_forwards:
            self.stats["forwards_shed"] += 1
            return False
        self._forwards_running += 1
        return True

    def _release_forward(self, _: object = None) -> None:
        self._forwards_running -= 1

    async def _forward(self, forward: Forward, *, tcp: bool) -> bytes:
        """Ask the upstreams in order; the client's reply (relayed, or SERVFAIL)."""
        self.stats["forwarded"] += 1
        fallback: bytes | None = None
        for upstream in self.upstreams:
            qid = secrets.randbelow(0x10000)
            data = await self._exchange_udp(forward, qid, upstream)
            if data is not None and tcp and is_truncated(data):
                data = await self._exchange_tcp(forward, qid, upstream)
            if data is None:
                self.stats["upstream_unanswered"] += 1
                continue
            if reply_rcode(data) in _RETRY_NEXT_UPSTREAM:
                fallback = fallback or data
                continue
            return forward.relay(data, udp=not tcp)
        if fallback is not None:
            return forward.relay(fallback, udp=not tcp)
        self.stats["forward_failures"] += 1
        logger.info("dns: no upstream answered for %s", forward.qname)
        reply = forward.fail(Rcode.SERVFAIL)
        return reply.pack() if tcp else reply.pack_udp()

    async def _exchange_udp(self, forward: Forward, qid: int, upstream: Address) -> bytes | None:
        loop = asyncio.get_running_loop()
        try:
            transport, exchange = await loop.create_datagram_endpoint(
                lambda: _UpstreamExchange(forward, qid), remote_addr=upstream
            )
        except OSError as exc:
            logger.warning("dns: cannot open a socket to upstream %s port %d: %s", *upstream, exc)
            return None
        try:
            transport.sendto(forward.upstream_query(qid))
            async with asyncio.timeout(self.forward_timeout):
                return await exchange.reply
        except TimeoutError:
            logger.debug("dns: upstream %s port %d did not answer %s", *upstream, forward.qname)
            return None
        finally:
            transport.close()

    async def _exchange_tcp(self, forward: Forward, qid: int, upstream: Address) -> bytes | None:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.forward_timeout):
                reader, writer = await asyncio.open_connection(*upstream)
                query = forward.upstream_query(qid)
                writer.write(_LENGTH.pack(len(query)) + query)
                await writer.drain()
                while True:
                    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                    data = await reader.readexactly(length)
                    if forward.accepts(data, qid):
                        return data
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            logger.debug("dns: tcp to upstream %s port %d failed for %s: %r", *upstream, forward.qname, exc)
            return None
        finally:
            if writer is not None:
                writer.close()
