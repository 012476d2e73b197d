"""pxe.dns.server against the real ``dig`` and raw sockets, with a stub upstream, all on 127.0.0.1.

The server (and the stub upstream it forwards to) run in one event loop on a background thread so
blocking clients - ``dig`` subprocesses, plain sockets with timeouts - can drive them from the
test thread. Every socket and subprocess has a timeout; nothing listens or sends beyond loopback.
No assertion depends on how long anything took.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

import dns.message
import dns.rcode
import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord  # type: ignore[import-untyped]

from pxe.dns.server import DnsServer
from pxe.dns.zone import Record, Zone

HOST = "127.0.0.1"
SOCK_TIMEOUT = 5.0
DIG_TIMEOUT = 20.0

RECORDS = [
    Record("ingot.lab.example", "A", "10.0.0.1"),
    Record("node1.lab.example", "A", "10.0.0.5"),
    Record("www.lab.example", "CNAME", "node1.lab.example"),
    Record("mirror.lab.example", "CNAME", "example.test"),
    *[Record("many.lab.example", "A", f"10.0.1.{i}") for i in range(1, 101)],
]


# -- event loop thread and stub upstream -----------------------------------------------------------


class LoopThread:
    """A private event loop on a daemon thread; ``call`` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dns-test-loop", daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float = SOCK_TIMEOUT * 3) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(SOCK_TIMEOUT)
        self.loop.close()


class _StubUdp(asyncio.DatagramProtocol):
    def __init__(self, stub: StubUpstream) -> None:
        self.stub = stub
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # a DatagramTransport, though not by isinstance on 3.11

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.stub.respond(data, tcp=False)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


@dataclass
class StubUpstream:
    """A tiny recursive-resolver stand-in for ``example.test`` (dnslib codec), UDP and TCP.

    ``example.test`` A is 192.0.2.10; ``big.example.test`` is truncated over UDP and 100
    records over TCP; ``broken.example.test`` is SERVFAIL; anything else NXDOMAIN. A silent stub
    reads queries and never answers.
    """

    silent: bool = False
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (udp|tcp, qname, qtype)
    port: int = 0
    _udp: asyncio.DatagramTransport | None = None
    _tcp: asyncio.Server | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        for _ in range(20):
            udp, _ = await loop.create_datagram_endpoint(lambda: _StubUdp(self), local_addr=(HOST, 0))
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, HOST, port)
            except OSError:
                udp.close()
                continue
            self._udp, self.port = udp, port
            return port
        raise RuntimeError("no free port pair for the stub upstream")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()

    def respond(self, data: bytes, *, tcp: bool) -> bytes | None:
        request = DNSRecord.parse(data)
        qname = str(request.q.qname).lower()
        self.seen.append(("tcp" if tcp else "udp", qname, QTYPE[request.q.qtype]))
        if self.silent:
            return None
        reply = request.reply(ra=1, aa=0)
        if qname == "example.test." and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A("192.0.2.10")))
        elif qname == "big.example.test.":
            if tcp:
                for i in range(100):
                    reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A(f"198.51.100.{i}")))
            else:
                reply.header.tc = 1
        elif qname == "broken.example.test.":
            reply.header.rcode = RCODE.SERVFAIL
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return bytes(reply.pack())

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = self.respond(await reader.readexactly(length), tcp=True)
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture(scope="module")
def upstream(loop: LoopThread) -> Iterator[StubUpstream]:
    stub = StubUpstream()
    loop.call(stub.start())
    yield stub
    loop.call(stub.stop())


@pytest.fixture(scope="module")
def silent(loop: LoopThread) -> Iterator[StubUpstream]:
    stub = StubUpstream(silent=True)
    loop.call(stub.start())
    yield stub
    loop.call(stub.stop())


@pytest.fixture
def zone() -> Zone:
    return Zone("lab.example", RECORDS, [IPv4Network("10.0.0.0/16")])


@dataclass
class Running:
    server: DnsServer
    port: int
    loop: LoopThread

    def stats(self) -> dict[str, int]:
        """The counters, plus the gauges ``tcp_clients`` and ``forwards_running``, read on the loop."""

        async def read() -> dict[str, int]:
            s = self.server
            return {**s.stats, "tcp_clients": s.tcp_clients, "forwards_running": s.forwards_running}

        return self.loop.call(read())  # type: ignore[no-any-return]

    def wait_for(self, predicate: Callable[[dict[str, int]], bool]) -> dict[str, int]:
        """Counters once ``predicate`` holds (or after a bounded wait, for the assertion to fail)."""
        deadline = time.monotonic() + SOCK_TIMEOUT
        while True:
            stats = self.stats()
            if predicate(stats) or time.monotonic() > deadline:
                return stats
            time.sleep(0.02)


@pytest.fixture
def serve(loop: LoopThread, zone: Zone) -> Iterator[Callable[..., Running]]:
    started: list[DnsServer] = []

    def start(**kwargs: Any) -> Running:
        kwargs.setdefault("zone", zone)
        server = DnsServer(host=HOST, port=0, **kwargs)
        port = loop.call(server.start())
        started.append(server)
        return Running(server, port, loop)

    yield start
    for server in started:
        loop.call(server.stop())


@pytest.fixture
def server(serve: Callable[..., Running], upstream: StubUpstream) -> Running:
    return serve(upstreams=[(HOST, upstream.port)])


# -- dig -----------------------------------------------------------------------------------------


@dataclass
class Dig:
    status: str
    flags: set[str]
    answer: list[tuple[str, str, str]]  # (owner, type, data)
    authority: list[tuple[str, str, str]]
    output: str


def dig(port: int, *args: str, tcp: bool = False) -> Dig:
    cmd = ["dig", f"@{HOST}", "-p", str(port), *args, "+tries=1", "+time=2"]
    if tcp:
        cmd.append("+tcp")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DIG_TIMEOUT, check=False)
    out = proc.stdout
    status = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([a-z ]*);", out)
    assert proc.returncode == 0 and status and flags, f"{cmd}\n{out}\n{proc.stderr}"
    return Dig(status[1], set(flags[1].split()), _section(out, "ANSWER"), _section(out, "AUTHORITY"), out)


def _section(out: str, name: str) -> list[tuple[str, str, str]]:
    match = re.search(rf";; {name} SECTION:\n(.*?)(?:\n\n|\Z)", out, re.S)
    if match is None:
        return []
    rows = []
    for line in match[1].splitlines():
        owner, _ttl, _cls, rtype, data = line.split(None, 4)
        rows.append((owner.lower(), rtype, data))
    return rows


# -- authoritative answers ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_ptr_and_cname(server: Running, tcp: bool) -> None:
    a = dig(server.port, "node1.lab.example", "A", tcp=tcp)
    assert a.status == "NOERROR"
    assert "aa" in a.flags and "ra" in a.flags
    assert a.answer == [("node1.lab.example.", "A", "10.0.0.5")]

    ptr = dig(server.port, "-x", "10.0.0.5", tcp=tcp)
    assert ptr.status == "NOERROR" and "aa" in ptr.flags
    assert ptr.answer == [("5.0.0.10.in-addr.arpa.", "PTR", "node1.lab.example.")]

    cname = dig(server.port, "WWW.Lab.Example.", "A", tcp=tcp)
    assert "aa" in cname.flags
    assert cname.answer == [
        ("www.lab.example.", "CNAME", "node1.lab.example."),
        ("node1.lab.example.", "A", "10.0.0.5"),
    ]
    assert "WWW.Lab.Example." in cname.output  # the question's spelling is echoed

    stats = server.stats()
    assert stats["tcp_queries" if tcp else "udp_queries"] == 3
    assert stats["rcode_noerror"] == 3 and stats["errors"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_nxdomain_and_nodata_inside_the_domain(server: Running, upstream: StubUpstream, tcp: bool) -> None:
    before = len(upstream.seen)
    nx = dig(server.port, "nosuch.lab.example", "A", tcp=tcp)
    assert nx.status == "NXDOMAIN" and "aa" in nx.flags
    assert nx.answer == []
    assert [(owner, rtype) for owner, rtype, _ in nx.authority] == [("lab.example.", "SOA")]

    nx_reverse = dig(server.port, "-x", "10.0.9.9", tcp=tcp)
    assert nx_reverse.status == "NXDOMAIN" and "aa" in nx_reverse.flags

    nodata = dig(server.port, "node1.lab.example", "AAAA", tcp=tcp)
    assert nodata.status == "NOERROR" and nodata.answer == [] and "aa" in nodata.flags
    assert len(upstream.seen) == before  # none of it was forwarded


@pytest.mark.slow
def test_zone_replace_is_seen_by_the_next_query(server: Running, zone: Zone) -> None:
    assert dig(server.port, "node7.lab.example").status == "NXDOMAIN"
    zone.replace([Record("node7.lab.example", "A", "10.0.0.7"), Record("ingot.lab.example", "A", "10.0.0.1")])
    assert dig(server.port, "node7.lab.example").answer == [("node7.lab.example.", "A", "10.0.0.7")]
    assert dig(server.port, "-x", "10.0.0.7", tcp=True).answer == [
        ("7.0.0.10.in-addr.arpa.", "PTR", "node7.lab.example.")
    ]
    assert dig(server.port, "node1.lab.example").status == "NXDOMAIN"


@pytest.mark.slow
def test_udp_truncation_and_tcp_retry(server: Running) -> None:
    truncated = dig(server.port, "many.lab.example", "+noedns", "+ignore")
    assert "tc" in truncated.flags and truncated.answer == []
    # Without +ignore dig retries over TCP by itself and gets every record.
    full = dig(server.port, "many.lab.example", "+noedns")
    assert len(full.answer) == 100 and "tc" not in full.flags
    assert server.stats()["truncated"] >= 2


# -- forwarding ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_forwarding_to_the_upstream(server: Running, upstream: StubUpstream, tcp: bool) -> None:
    forwarded = dig(server.port, "Example.Test", "A", tcp=tcp)
    assert forwarded.status == "NOERROR"
    assert "aa" not in forwarded.flags
    assert forwarded.answer == [("example.test.", "A", "192.0.2.10")]
    assert upstream.seen[-1] == ("udp", "example.test.", "A")  # TCP clients are forwarded over UDP

    assert dig(server.port, "unknown.example.test", tcp=tcp).status == "NXDOMAIN"

    # A CNAME from the zone to a name outside it: the rest of the chain comes from the upstream.
    chased = dig(server.port, "mirror.lab.example", "A", tcp=tcp)
    assert chased.status == "NOERROR" and "aa" in chased.flags
    assert chased.answer == [
        ("mirror.lab.example.", "CNAME", "example.test."),
        ("example.test.", "A", "192.0.2.10"),
    ]


@pytest.mark.slow
def test_truncated_upstream_answers_are_fetched_over_tcp(server: Running, upstream: StubUpstream) -> None:
    over_tcp = dig(server.port, "big.example.test", tcp=True)
    assert len(over_tcp.answer) == 100
    assert upstream.seen[-2:] == [("udp", "big.example.test.", "A"), ("tcp", "big.example.test.", "A")]
    # A UDP client gets TC and retries over TCP itself (dig does).
    over_udp = dig(server.port, "big.example.test")
    assert len(over_udp.answer) == 100


@pytest.mark.slow
def test_servfail_when_the_upstream_does_not_answer(serve: Callable[..., Running], silent: StubUpstream) -> None:
    running = serve(upstreams=[(HOST, silent.port)], forward_timeout=0.3)
    for tcp in (False, True):
        result = dig(running.port, "example.test", tcp=tcp)
        assert result.status == "SERVFAIL"
    stats = running.stats()
    assert stats["forward_failures"] == 2 and stats["upstream_unanswered"] == 2
    assert [q[1] for q in silent.seen[-2:]] == ["example.test.", "example.test."]


@pytest.mark.slow
def test_upstreams_are_tried_in_order(
    serve: Callable[..., Running], silent: StubUpstream, upstream: StubUpstream
) -> None:
    running = serve(upstreams=[(HOST, silent.port), (HOST, upstream.port)], forward_timeout=0.3)
    result = dig(running.port, "example.test")
    assert result.answer == [("example.test.", "A", "192.0.2.10")]
    assert silent.seen[-1][1] == "example.test."
    # SERVFAIL from every upstream is passed on rather than turned into a timeout.
    assert dig(running.port, "broken.example.test").status == "SERVFAIL"


@pytest.mark.slow
def test_no_upstreams_refuses_other_names(serve: Callable[..., Running]) -> None:
    running = serve()
    refused = dig(running.port, "example.test")
    assert refused.status == "REFUSED"
    assert "ra" not in refused.flags
    assert dig(running.port, "node1.lab.example").answer == [("node1.lab.example.", "A", "10.0.0.5")]


# -- raw sockets: limits and hostile input -------------------------------------------------------


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(SOCK_TIMEOUT)
    return sock


def tcp_socket(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=SOCK_TIMEOUT)
    sock.settimeout(SOCK_TIMEOUT)
    return sock


def framed(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


def read_framed(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    (length,) = struct.unpack("!H", exactly(2))
    return exactly(length)


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def query(name: str, rtype: str = "A", qid: int = 0) -> bytes:
    return dns.message.make_query(name, rtype, id=qid).to_wire()  # type: ignore[no-any-return]


def garbage(rng: random.Random, i: int) -> bytes:
    seeds = [query("node1.lab.example"), query("example.test"), query("5.0.0.10.in-addr.arpa", "PTR")]
    kind = i % 6
    if kind == 0:
        data = rng.randbytes(rng.randint(0, 600))
    elif kind == 1:  # a real query with a few bytes changed
        mutated = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        data = bytes(mutated)
    elif kind == 2:  # a response: must not be answered
        return seeds[0][:2] + b"\x81\x80" + seeds[0][4:]
    elif kind == 3:  # a header and nothing else, with absurd counts
        data = rng.randbytes(4) + b"\xff\xff" * 4
    elif kind == 4:  # a compression pointer chain
        data = bytes(4) + b"\x00\x01" + bytes(6) + b"\x01a\xc0\x0c" + bytes(rng.randrange(200)) + b"\xc0\x0e"
    elif i % 60 == 5:  # oversized
        data = rng.randbytes(rng.choice([4097, 20000, 65000]))
    else:  # a header with random counts in front of random bytes
        data = rng.randbytes(12 + rng.randrange(100))
    if len(data) > 2:
        data = data[:2] + bytes([data[2] & 0x7F]) + data[3:]  # a query (QR clear), so it gets looked at
    return data


def round_trip(sock: socket.socket, port: int, qid: int) -> None:
    """Send a real query and read replies until its answer: the flood before it was handled."""
    sock.sendto(query("node1.lab.example", qid=qid), (HOST, port))
    while True:
        reply = sock.recvfrom(70000)[0]
        if reply[:2] == struct.pack("!H", qid) and reply[3] & 0x0F == 0:
            return


@pytest.mark.slow
def test_garbage_flood_then_a_normal_query(server: Running) -> None:
    rng = random.Random(1035)
    sent = 0
    with udp_socket() as sock:
        for i in range(3000):
            sock.sendto(garbage(rng, i), (HOST, server.port))
            sent += 1
            if i % 25 == 24:  # pace the flood so the kernel's socket buffer does not drop most of it
                round_trip(sock, server.port, qid=60000 + i)
                sent += 1
    with tcp_socket(server.port) as conn:  # garbage over TCP: the server hangs up
        conn.sendall(struct.pack("!H", 5) + b"\x00\x01\x02\x03\x04")
        assert closed_by_peer(conn)
    with tcp_socket(server.port) as conn:  # a length prefix promising more than ever comes
        conn.sendall(b"\xff\xff" + rng.randbytes(100))
        conn.shutdown(socket.SHUT_WR)
        assert closed_by_peer(conn)

    assert dig(server.port, "node1.lab.example").answer == [("node1.lab.example.", "A", "10.0.0.5")]
    assert dig(server.port, "node1.lab.example", tcp=True).status == "NOERROR"
    # UDP is read in order, so dig's answer means every datagram before it has been handled.
    stats = server.stats()
    assert stats["errors"] == 0
    assert sent // 2 <= stats["udp_queries"] <= sent + 1  # the kernel may drop a little of a flood
    assert stats["dropped"] > 0 and stats["rcode_formerr"] > 0


@pytest.mark.slow
def test_tcp_pipelining(server: Running) -> None:
    with tcp_socket(server.port) as conn:
        conn.sendall(
            framed(query("node1.lab.example", qid=1))
            + framed(query("example.test", qid=2))
            + framed(query("www.lab.example", qid=3))
        )
        replies = {r.id: r for r in (dns.message.from_wire(read_framed(conn)) for _ in range(3))}
    assert set(replies) == {1, 2, 3}
    assert str(replies[1].answer[0][0]) == "10.0.0.5"
    assert str(replies[2].answer[0][0]) == "192.0.2.10"
    assert len(replies[3].answer) == 2
    assert server.stats()["tcp_connections"] == 1


def test_tcp_idle_connections_are_closed(serve: Callable[..., Running]) -> None:
    running = serve(tcp_idle_timeout=0.2)
    with tcp_socket(running.port) as conn:
        conn.sendall(framed(query("node1.lab.example", qid=9)))
        assert dns.message.from_wire(read_framed(conn)).id == 9
        assert closed_by_peer(conn)  # then nothing more is sent: the server hangs up
    with tcp_socket(running.port) as conn:
        conn.sendall(b"\x00\x40\x00\x01")  # half a message, then silence
        assert closed_by_peer(conn)


def test_tcp_client_limit(serve: Callable[..., Running]) -> None:
    running = serve(max_tcp_clients=2)
    first, second = tcp_socket(running.port), tcp_socket(running.port)
    try:
        for conn in (first, second):  # each connection is being served
            conn.sendall(framed(query("node1.lab.example", qid=5)))
            assert dns.message.from_wire(read_framed(conn)).id == 5
        with tcp_socket(running.port) as third:
            assert closed_by_peer(third)
        assert running.stats()["tcp_rejected"] == 1
    finally:
        first.close()
        second.close()
    assert running.wait_for(lambda s: s["tcp_clients"] == 0)["tcp_clients"] == 0  # slots come back
    with tcp_socket(running.port) as fourth:
        fourth.sendall(framed(query("node1.lab.example", qid=6)))
        assert dns.message.from_wire(read_framed(fourth)).id == 6
    assert running.stats()["tcp_connections"] == 3


def test_in_flight_forwards_are_bounded(serve: Callable[..., Running], silent: StubUpstream) -> None:
    running = serve(upstreams=[(HOST, silent.port)], forward_timeout=30.0, max_forwards=1)
    with udp_socket() as sock:
        sock.sendto(query("example.test", qid=1), (HOST, running.port))  # hangs on the silent upstream
        running.wait_for(lambda s: s["forwarded"] == 1)
        sock.sendto(query("example.test", qid=2), (HOST, running.port))
        reply = dns.message.from_wire(sock.recvfrom(4096)[0])
    assert reply.id == 2 and reply.rcode() == dns.rcode.SERVFAIL
    assert running.stats()["forwards_shed"] == 1
    # Answers from the zone do not need a forward slot.
    assert dig(running.port, "node1.lab.example").status == "NOERROR"


def test_start_reports_a_busy_explicit_port(loop: LoopThread, zone: Zone) -> None:
    with udp_socket() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            loop.call(DnsServer(zone, host=HOST, port=port).start())


def test_udp_and_tcp_share_the_port(server: Running) -> None:
    with udp_socket() as sock:
        sock.sendto(query("node1.lab.example", qid=77), (HOST, server.port))
        assert dns.message.from_wire(sock.recvfrom(4096)[0]).id == 77
    with tcp_socket(server.port) as conn:
        conn.sendall(framed(query("node1.lab.example", qid=78)))
        assert dns.message.from_wire(read_framed(conn)).id == 78


def test_stop_closes_connections_and_cancels_forwards(
    serve: Callable[..., Running], silent: StubUpstream, loop: LoopThread
) -> None:
    running = serve(upstreams=[(HOST, silent.port)], forward_timeout=30.0)
    with udp_socket() as sock, tcp_socket(running.port) as conn:
        sock.sendto(query("example.test", qid=1), (HOST, running.port))
        conn.sendall(framed(query("example.test", qid=2)))
        assert running.wait_for(lambda s: s["forwards_running"] == 2)["forwards_running"] == 2
        loop.call(running.server.stop())
        assert closed_by_peer(conn)
    stats = running.stats()
    assert stats["forwards_running"] == 0 and stats["tcp_clients"] == 0 and stats["errors"] == 0
    loop.call(running.server.stop())  # stopping twice is harmless
