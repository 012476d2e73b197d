"""DhcpServer logic with fake sockets: delivery per destination, group commit, error isolation.

No network is touched: :class:`FakeSocket` implements :class:`pxe.dhcp.server.DhcpSocket` in
memory (a socketpair only provides readiness for the event loop), so these tests exercise the
real reader path, the persist queue and the delivery rules without an interface. Real clients
and real sockets are in tests/integration/test_dhcp_netns.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from pxe.backend import HostConfig, MemoryBackend
from pxe.dhcp.codec import BROADCAST_FLAG, DhcpPacket, MessageType, Option, decode, encode, encode_ip
from pxe.dhcp.policy import SubnetConfig
from pxe.dhcp.server import MAX_DATAGRAM, STAT_KEYS, DhcpEvent, DhcpServer, arp_request

SERVER = IPv4Address("10.0.0.1")
MAC = bytes.fromhex("525400123456")
MAC_TEXT = "52:54:00:12:34:56"
PXE_BIOS = {93: b"\x00\x00", 60: b"PXEClient:Arch:00000:UNDI:002001"}
CLIENT = ("0.0.0.0", 68)
Address = tuple[str, int]


class FakeSocket:
    """An in-memory :class:`~pxe.dhcp.server.DhcpSocket`; the test injects datagrams."""

    def __init__(self, interface: str, port: int) -> None:
        self.interface = interface
        self.port = port
        self._ready, self._signal = socket.socketpair()
        self.inbox: deque[tuple[bytes, Address]] = deque()
        self.sent: list[tuple[bytes, Address]] = []
        self.neighbours: list[tuple[IPv4Address, str]] = []
        self.fail_send: OSError | None = None
        self.fail_neighbour: OSError | None = None
        self.closed = False

    def inject(self, data: bytes, source: Address = CLIENT) -> None:
        self.inbox.append((data, source))
        self._signal.send(b"x")

    def fileno(self) -> int:
        return self._ready.fileno()

    def recvfrom(self, size: int) -> tuple[bytes, Address]:
        if not self.inbox:
            raise BlockingIOError
        self._ready.recv(1)
        data, source = self.inbox.popleft()
        return data[:size], source

    def sendto(self, data: bytes, address: Address) -> None:
        if self.fail_send is not None:
            raise self.fail_send
        self.sent.append((data, address))

    def add_neighbour(self, ip: IPv4Address, mac: str) -> None:
        if self.fail_neighbour is not None:
            raise self.fail_neighbour
        self.neighbours.append((ip, mac))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._ready.close()
            self._signal.close()

    def replies(self) -> list[tuple[DhcpPacket, Address]]:
        return [(decode(data), address) for data, address in self.sent]


class Sockets:
    """The socket factory handed to DhcpServer: remembers every socket it opened, by port."""

    def __init__(self) -> None:
        self.opened: dict[int, FakeSocket] = {}
        self.history: list[FakeSocket] = []

    def __call__(self, interface: str, port: int) -> FakeSocket:
        sock = FakeSocket(interface, port)
        self.opened[port] = sock
        self.history.append(sock)
        return sock

    def close_all(self) -> None:
        for sock in self.history:
            sock.close()


def config(**kwargs: Any) -> SubnetConfig:
    base: dict[str, Any] = {
        "server_ip": SERVER,
        "network": IPv4Network("10.0.0.0/24"),
        "router": SERVER,
        "lease_time": 3600,
        "http_base": "http://10.0.0.1:8080",
    }
    base.update(kwargs)
    return SubnetConfig(**base)


def packet(
    message: MessageType,
    extra: dict[int, bytes] | None = None,
    *,
    chaddr: bytes = MAC,
    flags: int = BROADCAST_FLAG,
    ciaddr: str = "0.0.0.0",
    giaddr: str = "0.0.0.0",
    xid: int = 0x1234,
) -> bytes:
    options: dict[int, bytes] = {Option.MESSAGE_TYPE: bytes((message,))}
    options.update(extra or {})
    return encode(DhcpPacket(xid=xid, flags=flags, ciaddr=IPv4Address(ciaddr), giaddr=IPv4Address(giaddr),
                             chaddr=chaddr, options=options))


def selecting(address: str = "10.0.0.100", **kwargs: Any) -> bytes:
    """A REQUEST in SELECTING state (RFC 2131 §4.3.2): options 54 and 50."""
    extra: dict[int, bytes] = {Option.SERVER_ID: encode_ip(SERVER), Option.REQUESTED_IP: encode_ip(address)}
    extra.update(kwargs.pop("extra", {}))
    return packet(MessageType.REQUEST, extra, **kwargs)


def mac(n: int) -> bytes:
    return MAC[:5] + bytes((n,))


class Harness:
    """A started DhcpServer on fake sockets, with its events."""

    def __init__(self, cfg: SubnetConfig | None = None, backend: MemoryBackend | None = None, **kwargs: Any) -> None:
        self.sockets = Sockets()
        self.events: list[DhcpEvent] = []
        self.backend = backend or MemoryBackend([("10.0.0.100", "10.0.0.199")])
        kwargs.setdefault("on_event", self.events.append)
        self.server = DhcpServer(cfg or config(), self.backend, interface="lab0", clock=lambda: 1000.0,
                                 socket_factory=self.sockets, **kwargs)

    @property
    def main(self) -> FakeSocket:
        return self.sockets.opened[67]

    async def __aenter__(self) -> Harness:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()
        self.sockets.close_all()


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Let the loop run until ``condition()`` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


async def turns(n: int = 20) -> None:
    """Let the loop run a few iterations (for asserting that something did *not* happen)."""
    for _ in range(n):
        await asyncio.sleep(0)


class Gate:
    """A persist() the test opens call by call."""

    def __init__(self) -> None:
        self.calls = 0
        self.released = 0
        self._event = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self) -> None:
        self.calls += 1
        call = self.calls
        while self.released < call:
            self._event.clear()
            await self._event.wait()
        if self.fail is not None:
            raise self.fail

    def release(self) -> None:
        self.released += 1
        self._event.set()


# --- delivery ------------------------------------------------------------------------------------


def test_discover_with_broadcast_flag_is_broadcast() -> None:
    async def body() -> None:
        async with Harness() as h:
            h.main.inject(packet(MessageType.DISCOVER))
            await until(lambda: h.server.stats["replied"] == 1)
            [(offer, address)] = h.main.replies()
            assert address == ("255.255.255.255", 68)
            assert offer.message_type is MessageType.OFFER and offer.yiaddr == IPv4Address("10.0.0.100")
            assert h.main.neighbours == []
            assert h.server.stats == {**dict.fromkeys(STAT_KEYS, 0), "received": 1, "replied": 1}
            assert h.events == [DhcpEvent(MAC_TEXT, "DISCOVER", "OFFER", "10.0.0.100", None, None, "", 1000.0)]

    run(body)


def test_no_broadcast_flag_unicasts_to_the_mac_after_adding_a_neighbour() -> None:
    async def body() -> None:
        async with Harness() as h:
            h.main.inject(packet(MessageType.DISCOVER, flags=0))
            await until(lambda: h.server.stats["replied"] == 1)
            assert h.main.neighbours == [(IPv4Address("10.0.0.100"), MAC_TEXT)]
            assert [address for _, address in h.main.sent] == [("10.0.0.100", 68)]

    run(body)


def test_neighbour_failure_falls_back_to_broadcast_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with Harness() as h:
            h.main.fail_neighbour = PermissionError(1, "Operation not permitted")
            h.main.inject(packet(MessageType.DISCOVER, flags=0, chaddr=mac(1), xid=1))
            h.main.inject(packet(MessageType.DISCOVER, flags=0, chaddr=mac(2), xid=2))
            await until(lambda: h.server.stats["replied"] == 2)
            assert [address for _, address in h.main.sent] == [("255.255.255.255", 68)] * 2
            assert h.server.stats["errors"] == 0

    with caplog.at_level(logging.DEBUG, logger="pxe.dhcp.server"):
        run(body)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "broadcasting instead" in r.message]
    assert len(warnings) == 1
    assert "Operation not permitted" in warnings[0].message


def test_non_ethernet_hardware_address_is_broadcast_without_using_up_the_warning() -> None:
    async def body() -> None:
        async with Harness() as h:
            long_chaddr = encode(DhcpPacket(hlen=8, xid=9, chaddr=bytes(range(1, 9)),
                                            options={Option.MESSAGE_TYPE: bytes((MessageType.DISCOVER,))}))
            h.main.inject(long_chaddr)
            await until(lambda: h.server.stats["replied"] == 1)
            assert h.main.neighbours == []
            assert [address for _, address in h.main.sent] == [("255.255.255.255", 68)]

    run(body)


def test_unicast_and_relay_destinations() -> None:
    async def body() -> None:
        async with Harness() as h:
            # RENEWING (RFC 2131 §4.3.2): ciaddr set, no 50/54; the ACK goes to ciaddr:68.
            h.main.inject(packet(MessageType.REQUEST, ciaddr="10.0.0.150", flags=0, xid=1), ("10.0.0.150", 68))
            # Relayed DISCOVER: back to the relay agent, port 67.
            h.main.inject(packet(MessageType.DISCOVER, giaddr="10.0.0.254", chaddr=mac(9), xid=2), ("10.0.0.254", 67))
            await until(lambda: h.server.stats["replied"] == 2)
            assert sorted(address for _, address in h.main.sent) == [("10.0.0.150", 68), ("10.0.0.254", 67)]

    run(body)


def test_proxy_mode_listens_on_4011_and_answers_the_source() -> None:
    async def body() -> None:
        async with Harness(config(mode="proxy")) as h:
            assert set(h.sockets.opened) == {67, 4011}
            boot = h.sockets.opened[4011]
            h.main.inject(packet(MessageType.DISCOVER, PXE_BIOS, xid=1))
            boot.inject(packet(MessageType.REQUEST, PXE_BIOS, ciaddr="10.0.0.77", flags=0, xid=2), ("10.0.0.77", 68))
            await until(lambda: h.server.stats["replied"] == 2)
            [(offer, offer_to)] = h.main.replies()
            assert offer.message_type is MessageType.OFFER and offer.yiaddr == IPv4Address(0)
            assert offer_to == ("255.255.255.255", 68)
            [(ack, ack_to)] = boot.replies()  # sent from the socket the request came in on
            assert ack.message_type is MessageType.ACK and ack.bootfile_name == "undionly.kpxe"
            assert ack_to == ("10.0.0.77", 68)
            assert h.backend.leases == {}

    run(body)


def test_server_mode_has_no_4011_listener_and_reconfigure_opens_and_closes_it() -> None:
    async def body() -> None:
        async with Harness() as h:
            assert set(h.sockets.opened) == {67}
            h.server.reconfigure(config(mode="proxy"))
            assert set(h.sockets.opened) == {67, 4011}
            assert h.server.config.mode == "proxy"
            boot = h.sockets.opened[4011]
            h.server.reconfigure(config())
            assert boot.closed and not h.main.closed

    run(body)


def test_reconfigure_that_cannot_open_4011_keeps_the_old_config() -> None:
    async def body() -> None:
        async with Harness() as h:
            def refuse(interface: str, port: int) -> FakeSocket:
                raise OSError(98, "Address already in use")

            h.server._socket_factory = refuse
            with pytest.raises(OSError):
                h.server.reconfigure(config(mode="proxy"))
            assert h.server.config.mode == "server"

    run(body)


def test_proxy_port_none_disables_the_boot_server() -> None:
    async def body() -> None:
        async with Harness(config(mode="proxy"), proxy_port=None) as h:
            assert set(h.sockets.opened) == {67}

    run(body)


def test_stop_closes_the_sockets_and_start_twice_is_refused() -> None:
    async def body() -> None:
        h = Harness(config(mode="proxy"))
        async with h:
            with pytest.raises(RuntimeError):
                await h.server.start()
        assert all(sock.closed for sock in h.sockets.history)
        await h.server.stop()  # idempotent

    run(body)


@pytest.mark.parametrize("name", ["", "a" * 16, "eth0/1", " eth0"])
def test_interface_name_is_required_and_checked(name: str) -> None:
    with pytest.raises(ValueError):
        DhcpServer(config(), MemoryBackend(), interface=name)


def test_arp_request_layout() -> None:
    request = arp_request(IPv4Address("10.0.0.100"), "52:54:00:12:34:56", "veth-srv")
    assert len(request) == 68  # sizeof(struct arpreq)
    family, port, address = struct.unpack_from("=H2s4s", request, 0)
    assert (family, port, address) == (socket.AF_INET, b"\x00\x00", bytes((10, 0, 0, 100)))
    hw_family, hw = struct.unpack_from("=H6s", request, 16)
    assert (hw_family, hw) == (1, MAC)  # ARPHRD_ETHER
    assert struct.unpack_from("=i", request, 32) == (0x02,)  # ATF_COM, not ATF_PERM
    assert request[36:52] == bytes(16)
    assert request[52:] == b"veth-srv".ljust(16, b"\x00")
    with pytest.raises(ValueError):
        arp_request(IPv4Address("10.0.0.100"), "01:02:03:04:05:06:07:08", "veth-srv")


# --- group commit ----------------------------------------------------------------------------------


def test_ack_waits_for_persist_but_offer_does_not() -> None:
    async def body() -> None:
        gate = Gate()
        async with Harness(persist=gate) as h:
            h.main.inject(selecting(chaddr=mac(1), xid=1))
            await until(lambda: gate.calls == 1)
            h.main.inject(packet(MessageType.DISCOVER, chaddr=mac(2), xid=2))
            await until(lambda: h.server.stats["replied"] == 1)
            assert [p.message_type for p, _ in h.main.replies()] == [MessageType.OFFER]  # the ACK still waits
            assert h.server.pending == 0  # it is in flight with persist #1
            gate.release()
            await until(lambda: h.server.stats["replied"] == 2)
            assert [p.message_type for p, _ in h.main.replies()] == [MessageType.OFFER, MessageType.ACK]
            assert [e.reply_type for e in h.events] == ["OFFER", "ACK"]  # events follow what was sent

    run(body)


def test_acks_queued_during_a_persist_share_the_next_one() -> None:
    async def body() -> None:
        gate = Gate()
        async with Harness(persist=gate) as h:
            h.main.inject(selecting("10.0.0.100", chaddr=mac(1), xid=1))
            await until(lambda: gate.calls == 1)
            for n in (2, 3, 4):
                h.main.inject(selecting(f"10.0.0.10{n}", chaddr=mac(n), xid=n))
            await until(lambda: h.server.pending == 3)
            assert h.main.sent == []
            gate.release()  # persist #1 covered only the first ACK
            await until(lambda: gate.calls == 2)
            assert [p.xid for p, _ in h.main.replies()] == [1]
            gate.release()  # persist #2 covers the three queued while #1 ran
            await until(lambda: h.server.stats["replied"] == 4)
            assert [p.xid for p, _ in h.main.replies()] == [1, 2, 3, 4]
            await turns()
            assert gate.calls == 2  # one durable write for three ACKs

    run(body)


def test_failed_persist_drops_its_acks_and_the_server_recovers(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        gate = Gate()
        async with Harness(persist=gate) as h:
            gate.fail = OSError("disk full")
            h.main.inject(selecting(chaddr=mac(1), xid=1))
            await until(lambda: gate.calls == 1)
            gate.release()
            await until(lambda: h.server.stats["dropped"] == 1)
            assert h.main.sent == []  # never sent un-persisted
            assert h.server.stats["errors"] == 1
            assert h.events[-1].reply_type is None and "persist failed: disk full" in h.events[-1].note
            gate.fail = None
            h.main.inject(selecting(chaddr=mac(1), xid=2))  # the client retries
            await until(lambda: gate.calls == 2)
            gate.release()
            await until(lambda: h.server.stats["replied"] == 1)
            assert [(p.xid, p.message_type) for p, _ in h.main.replies()] == [(2, MessageType.ACK)]

    with caplog.at_level(logging.ERROR, logger="pxe.dhcp.server"):
        run(body)
    assert any("persist failed" in r.message for r in caplog.records)


def test_release_and_decline_schedule_a_persist_without_a_reply() -> None:
    async def body() -> None:
        calls: list[float] = []

        async def persist() -> None:
            calls.append(time.monotonic())

        async with Harness(persist=persist) as h:
            h.main.inject(packet(MessageType.RELEASE, ciaddr="10.0.0.100", flags=0, xid=1))
            await until(lambda: len(calls) == 1)
            h.main.inject(packet(MessageType.DECLINE, {Option.REQUESTED_IP: encode_ip("10.0.0.101")}, xid=2))
            await until(lambda: len(calls) == 2)
            assert h.main.sent == []
            assert h.server.stats["ignored"] == 2
            assert [(e.message_type, e.ip) for e in h.events] == [("RELEASE", "10.0.0.100"), ("DECLINE", "10.0.0.101")]

    run(body)


def test_full_queue_drops_new_acks() -> None:
    async def body() -> None:
        gate = Gate()
        async with Harness(persist=gate, max_pending=2) as h:
            h.main.inject(selecting("10.0.0.100", chaddr=mac(1), xid=1))
            await until(lambda: gate.calls == 1)  # in flight: not counted against the queue
            for n in (2, 3, 4):
                h.main.inject(selecting(f"10.0.0.10{n}", chaddr=mac(n), xid=n))
            await until(lambda: h.server.stats["received"] == 4)
            assert h.server.pending == 2 and h.server.stats["dropped"] == 1
            gate.release()
            gate.release()
            await until(lambda: h.server.stats["replied"] == 3)

    run(body)


def test_stop_sends_what_the_last_persist_covers() -> None:
    async def body() -> None:
        persisted: list[int] = []

        async def persist() -> None:
            await asyncio.sleep(0.01)
            persisted.append(1)

        h = Harness(persist=persist)
        async with h:
            h.main.inject(selecting(xid=1))
            await until(lambda: h.server.stats["received"] == 1)
        # stop() ran: the queued ACK was persisted and sent before the socket closed.
        assert persisted == [1]
        assert [p.message_type for p, _ in h.main.replies()] == [MessageType.ACK]

    run(body)


def test_stop_gives_up_on_a_hung_persist() -> None:
    async def body() -> None:
        gate = Gate()
        h = Harness(persist=gate, stop_grace=0.05)
        async with h:
            h.main.inject(selecting(xid=1))
            await until(lambda: gate.calls == 1)
        assert h.main.sent == []
        assert h.server.stats["dropped"] == 1
        assert h.main.closed

    run(body)


def test_without_persist_acks_go_out_at_once() -> None:
    async def body() -> None:
        async with Harness() as h:
            h.main.inject(selecting(xid=1))
            await until(lambda: h.server.stats["replied"] == 1)
            assert h.backend.leases[IPv4Address("10.0.0.100")].mac == MAC_TEXT

    run(body)


def test_port_4011_acks_do_not_wait_for_persist() -> None:
    async def body() -> None:
        gate = Gate()
        async with Harness(config(mode="proxy"), persist=gate) as h:
            h.sockets.opened[4011].inject(packet(MessageType.REQUEST, PXE_BIOS, ciaddr="10.0.0.77", flags=0),
                                          ("10.0.0.77", 68))
            await until(lambda: h.server.stats["replied"] == 1)
            assert gate.calls == 0

    run(body)


# --- error isolation ----------------------------------------------------------------------------------


def test_malformed_and_oversized_datagrams_are_counted_and_dropped() -> None:
    async def body() -> None:
        async with Harness() as h:
            h.main.inject(b"")
            h.main.inject(b"\x01" * 100)
            h.main.inject(packet(MessageType.DISCOVER)[:240] + b"\x35\x01\x01\x0c\x50abc")  # runs past the end
            h.main.inject(packet(MessageType.DISCOVER, {224: bytes(255)}) + bytes(MAX_DATAGRAM))  # too big
            h.main.inject(packet(MessageType.DISCOVER, xid=7))
            await until(lambda: h.server.stats["received"] == 5)
            assert h.server.stats["malformed"] == 4
            assert [p.xid for p, _ in h.main.replies()] == [7]
            assert len(h.events) == 1  # malformed datagrams are not "decided"

    run(body)


class ExplodingBackend(MemoryBackend):
    """Raises for one MAC: a backend bug or outage must cost only that request."""

    def lookup(self, mac: str) -> HostConfig | None:
        if mac == "52:54:00:12:34:66":
            raise RuntimeError("database is on fire")
        return super().lookup(mac)


def test_exception_in_decide_is_logged_with_the_mac_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with Harness(backend=ExplodingBackend([("10.0.0.100", "10.0.0.199")])) as h:
            h.main.inject(packet(MessageType.DISCOVER, chaddr=mac(0x66), xid=1))
            h.main.inject(packet(MessageType.DISCOVER, chaddr=mac(0x67), xid=2))
            await until(lambda: h.server.stats["received"] == 2)
            assert h.server.stats["errors"] == 1 and h.server.stats["replied"] == 1
            assert [p.xid for p, _ in h.main.replies()] == [2]

    with caplog.at_level(logging.ERROR, logger="pxe.dhcp.server"):
        run(body)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "52:54:00:12:34:66" in record.getMessage() and record.exc_info is not None


def test_send_failure_is_counted_and_the_server_keeps_serving() -> None:
    async def body() -> None:
        async with Harness() as h:
            h.main.fail_send = OSError(101, "Network is unreachable")
            h.main.inject(packet(MessageType.DISCOVER, xid=1))
            await until(lambda: h.server.stats["errors"] == 1)
            assert h.events[-1].reply_type is None and "unreachable" in h.events[-1].note
            h.main.fail_send = None
            h.main.inject(packet(MessageType.DISCOVER, xid=2))
            await until(lambda: h.server.stats["replied"] == 1)

    run(body)


def test_on_event_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def explode(event: DhcpEvent) -> None:
        raise ValueError("ui is gone")

    async def body() -> None:
        async with Harness(on_event=explode) as h:
            h.main.inject(packet(MessageType.DISCOVER))
            await until(lambda: h.server.stats["replied"] == 1)
            assert h.server.stats["errors"] == 0

    with caplog.at_level(logging.ERROR, logger="pxe.dhcp.server"):
        run(body)
    assert any("on_event failed" in r.message for r in caplog.records)


def test_a_burst_larger_than_one_wakeup_is_fully_served() -> None:
    async def body() -> None:
        async with Harness(backend=MemoryBackend([("10.0.0.10", "10.0.0.250")])) as h:
            for n in range(150):
                h.main.inject(packet(MessageType.DISCOVER, chaddr=mac(n), xid=n))
            await until(lambda: h.server.stats["replied"] == 150)
            assert sorted(p.xid for p, _ in h.main.replies()) == list(range(150))

    run(body)


def test_ignored_requests_are_counted_and_reported() -> None:
    async def body() -> None:
        async with Harness(config(unknown_mac="ignore")) as h:
            h.main.inject(packet(MessageType.DISCOVER))
            await until(lambda: h.server.stats["ignored"] == 1)
            assert h.main.sent == []
            assert h.events == [DhcpEvent(MAC_TEXT, "DISCOVER", None, None, None, None, "", 1000.0)]

    run(body)


def test_events_carry_the_boot_method_and_file() -> None:
    async def body() -> None:
        async with Harness() as h:
            h.main.inject(packet(MessageType.DISCOVER, PXE_BIOS))
            await until(lambda: len(h.events) == 1)
            event = h.events[0]
            assert (event.boot_method, event.boot_file, event.reply_type) == ("bios-pxe", "undionly.kpxe", "OFFER")

    run(body)
