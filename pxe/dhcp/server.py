"""asyncio transport for the sans-I/O DHCP core: sockets on one interface, delivery, group commit.

Theory of operation
-------------------
Everything that decides *what* to answer lives in :mod:`pxe.dhcp.codec` and
:mod:`pxe.dhcp.policy`. This module only moves bytes: for each datagram it runs
``decode -> policy.decide -> Decision.encode`` synchronously on the event loop and sends the
result where :attr:`Decision.destination` says. Per-packet work is small and bounded (one
datagram of at most :data:`MAX_DATAGRAM` bytes, at most :data:`_READS_PER_WAKEUP` datagrams per
wake-up), so one busy client cannot starve the loop.

One interface, and only that one
    Every socket binds ``0.0.0.0:<port>`` with ``SO_BINDTODEVICE`` to the configured interface
    (plus ``SO_BROADCAST`` and ``SO_REUSEADDR``), so the kernel delivers only requests that
    arrived on that interface and routes every reply - broadcasts included - out of it. The
    server never sees or answers any other interface. An empty interface name is refused:
    it would mean "every interface".

Listeners
    Port 67 (``port``) always. In proxy mode (``config.mode == "proxy"``) also ``proxy_port``
    (4011, PXE 2.1 §2.2.4 boot server requests), answered back to the request's source.
    Replies leave from the socket the request came in on, so the source port is the one the
    client talked to.

Delivery (RFC 2131 §4.1), per :class:`~pxe.dhcp.policy.DestinationKind`
    ``BROADCAST`` -> 255.255.255.255:68 on the interface; ``UNICAST``/``RELAY`` -> that address
    and port; ``SOURCE`` -> the request's source address and port; ``HARDWARE`` (no address yet,
    no broadcast flag) -> unicast to ``yiaddr`` at the client's MAC without ARP: the client
    cannot answer ARP for an address it does not have yet, so a neighbour entry is added first
    with ``ioctl(SIOCSARP)`` on the socket, as dnsmasq does. A client whose hardware address
    is not Ethernet gets a broadcast; if the ioctl or the send fails (no ``CAP_NET_ADMIN``) the
    reply is broadcast too, and the first such failure is logged at WARNING with the reason.
    The IP source of every reply is the kernel's choice for the interface (its primary
    address); clients identify the server by option 54.

Plain sockets, not transports
    Listeners are non-blocking sockets watched with ``loop.add_reader``, like the transfer
    sockets of :mod:`pxe.tftp.server`: a failed send must surface *synchronously*, so that the
    ``HARDWARE`` path can fall back to broadcast and the failure is counted against the request
    it belongs to. An asyncio datagram transport reports send errors later, through
    ``error_received``, detached from the packet.

Durable before the ACK leaves (group commit)
    With a ``persist`` callable, a reply that acknowledges state the backend just recorded -
    every reply to a REQUEST or INFORM on port 67 - is **not** sent when it is decided. It is
    queued, and one flusher task awaits ``persist()`` and then sends every reply that was
    queued *before that persist began*. Replies decided while a persist is running wait for the
    next one, so under load many ACKs share one durable write. RELEASE and DECLINE have no
    reply but also schedule a persist. If ``persist()`` raises, the queued replies are dropped
    (logged, counted in ``dropped``): a client that sees no ACK retries, whereas a client that
    was ACKed for a lease the appliance then forgets would keep an address someone else may be
    given. An ACK is never sent un-persisted. OFFERs are proposals (RFC 2131 §4.3.1) and
    port-4011 boot-server ACKs record nothing, so neither waits. ``persist`` is never
    cancelled by a timeout (it may be a thread that cannot be interrupted); :meth:`stop` waits
    ``stop_grace`` seconds for the last flush. The :class:`DhcpEvent` of a queued reply is
    emitted when it is sent, or dropped (then with ``reply_type=None``), not when decided.

Hostile input
    A datagram that does not decode is counted in ``malformed`` and logged at DEBUG. Any other
    exception while deciding, encoding or sending one reply is logged with the client's MAC and
    counted in ``errors``; the server keeps serving. Exceptions from ``on_event`` are logged and
    swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import Final, Protocol

from pxe.backend import DhcpBackend
from pxe.dhcp.codec import DecodeError, DhcpPacket, MessageType, decode
from pxe.dhcp.policy import (
    PROXY_PORT,
    SERVER_PORT,
    Decision,
    Destination,
    DestinationKind,
    SubnetConfig,
    decide,
)

__all__ = [
    "MAX_DATAGRAM",
    "STAT_KEYS",
    "DhcpEvent",
    "DhcpServer",
    "DhcpSocket",
    "InterfaceSocket",
    "arp_request",
]

logger = logging.getLogger(__name__)

#: Largest request accepted. DHCP needs 576 bytes (RFC 2131 §2) and clients rarely exceed one
#: Ethernet frame; anything longer is dropped as malformed. One more byte is read so that an
#: oversized datagram is seen as oversized instead of being silently truncated into a valid one.
MAX_DATAGRAM: Final = 8192
_RECV_SIZE: Final = MAX_DATAGRAM + 1
#: Datagrams drained per readiness callback, so one socket cannot monopolise the loop.
_READS_PER_WAKEUP: Final = 64
_LIMITED_BROADCAST: Final = "255.255.255.255"
_IFNAMSIZ: Final = 16  # linux/if.h, including the trailing NUL
_SIOCSARP: Final = 0x8955  # linux/sockios.h: set ARP (neighbour) table entry
_ATF_COM: Final = 0x02  # linux/if_arp.h: entry complete (has a hardware address); not permanent
_ARPHRD_ETHER: Final = 1  # linux/if_arp.h
#: Request types whose replies (or silence) follow a backend write: the ACK waits for persist().
_DURABLE: Final = frozenset({MessageType.REQUEST, MessageType.INFORM, MessageType.RELEASE, MessageType.DECLINE})

#: Keys of :attr:`DhcpServer.stats`.
STAT_KEYS: Final = ("received", "replied", "ignored", "malformed", "errors", "dropped")

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class DhcpEvent:
    """What happened to one decided request, for logs, metrics and the UI.

    :ivar mac: client MAC, ``aa:bb:cc:dd:ee:ff``.
    :ivar message_type: the request's option 53 name (``"DISCOVER"``), or ``"BOOTP"`` without one.
    :ivar reply_type: the reply's option 53 name (``"OFFER"``, ``"ACK"``, ``"NAK"``), or ``None``
        when no reply left (policy silence, or dropped: see :attr:`note`).
    :ivar ip: the address concerned (offered/acknowledged ``yiaddr``, INFORM/RELEASE ``ciaddr``,
        DECLINE option 50), or ``None``.
    :ivar boot_method: :attr:`BootMethod.name` of the boot options in the reply, or ``None``.
    :ivar boot_file: option 67 / ``file`` of the reply, or ``None``.
    :ivar note: why boot options were left out, or why the reply was not sent, or ``""``.
    :ivar at: the server clock when the request was decided.
    """

    mac: str
    message_type: str
    reply_type: str | None
    ip: str | None
    boot_method: str | None
    boot_file: str | None
    note: str
    at: float


class DhcpSocket(Protocol):
    """What the server needs from a socket; :class:`InterfaceSocket` is the real one.

    Tests substitute a fake that never touches a network.
    """

    def fileno(self) -> int:
        """A descriptor that is readable while datagrams are waiting."""
        ...

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        """One datagram and its source; :class:`BlockingIOError` when none is waiting."""
        ...

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        """Send one datagram; :class:`OSError` if the kernel refuses it."""
        ...

    def add_neighbour(self, ip: IPv4Address, mac: str) -> None:
        """Make ``ip`` resolve to ``mac`` on the interface without ARP; :class:`OSError` on failure."""
        ...

    def close(self) -> None: ...


def _is_ethernet(mac: str) -> bool:
    parts = mac.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)


def _check_interface(interface: str) -> None:
    if not interface or len(interface.encode()) >= _IFNAMSIZ or "/" in interface or interface.strip() != interface:
        raise ValueError(f"not a usable interface name: {interface!r}")


#: Receive buffer for the server socket. The default (about 208 KiB) overflows when a rack powers
#: on at once: 200 DISCOVERs arrive together and each dropped one costs its client a 4 s PXE
#: retransmission. Much larger only queues work the server cannot finish in time (measured with
#: bench/storm and bench/dhcp: 4 MiB let ACK delays reach seconds under overload).
RECEIVE_BUFFER = 1024 * 1024
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # asm-generic/socket.h; not in typeshed


def _grow_receive_buffer(sock: socket.socket) -> None:
    try:  # SO_RCVBUFFORCE passes net.core.rmem_max when we have CAP_NET_ADMIN
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


class InterfaceSocket:
    """A non-blocking UDP socket on ``0.0.0.0:port`` that only receives and sends on ``interface``.

    :raises ValueError: ``interface`` is not a valid interface name (an empty name would bind to
        every interface, so it is refused).
    :raises OSError: the interface does not exist, the port is taken, or the process lacks the
        privileges for ``SO_BINDTODEVICE`` / a port below 1024.
    """

    def __init__(self, interface: str, port: int) -> None:
        _check_interface(interface)
        self.interface = interface
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            # Belt and braces: the whole safety of the server rests on this option, so read it back.
            bound = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, _IFNAMSIZ)
            if bound.rstrip(b"\x00").decode() != interface:
                raise OSError(f"SO_BINDTODEVICE did not take: bound to {bound!r}, wanted {interface!r}")
            _grow_receive_buffer(self._sock)
            self._sock.setblocking(False)
            self._sock.bind(("0.0.0.0", port))  # noqa: S104 - restricted to one interface by SO_BINDTODEVICE
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        data, addr = self._sock.recvfrom(size)
        return data, (str(addr[0]), int(addr[1]))

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        self._sock.sendto(data, address)

    def add_neighbour(self, ip: IPv4Address, mac: str) -> None:
        fcntl.ioctl(self._sock.fileno(), _SIOCSARP, arp_request(ip, mac, self.interface))

    def close(self) -> None:
        self._sock.close()


def arp_request(ip: IPv4Address, mac: str, interface: str) -> bytes:
    """``struct arpreq`` (linux/if_arp.h) for ``ioctl(SIOCSARP)``: ``ip`` is at ``mac`` on ``interface``.

    Layout: ``arp_pa`` (sockaddr_in), ``arp_ha`` (sockaddr, family ARPHRD_ETHER), ``arp_flags``
    (ATF_COM: complete but not permanent, so the kernel ages it out like a learned entry),
    ``arp_netmask`` (unused) and ``arp_dev[16]``. Families are host byte order, the address network
    order.

    :raises ValueError: ``mac`` is not a 6-byte Ethernet address.
    """
    if not _is_ethernet(mac):
        raise ValueError(f"cannot add a neighbour entry for non-Ethernet address {mac!r}")
    hw = bytes.fromhex(mac.replace(":", ""))
    protocol_addr = struct.pack("=H", socket.AF_INET) + b"\x00\x00" + ip.packed + bytes(8)
    hardware_addr = struct.pack("=H", _ARPHRD_ETHER) + hw + bytes(8)
    return (
        protocol_addr
        + hardware_addr
        + struct.pack("=i", _ATF_COM)
        + bytes(16)
        + interface.encode().ljust(_IFNAMSIZ, b"\x00")
    )


@dataclass(eq=False, slots=True)
class _Listener:
    sock: DhcpSocket
    port: int
    boot_server: bool  # the PXE port-4011 listener: decide(local_port=4011), replies to SOURCE


@dataclass(frozen=True, slots=True)
class _Outgoing:
    listener: _Listener
    payload: bytes
    destination: Destination
    source: Address
    event: DhcpEvent


class DhcpServer:
    """Serve one subnet on one interface until :meth:`stop`.

    :param config: the subnet; replace it at run time with :meth:`reconfigure`.
    :param backend: hosts and leases; called synchronously on the event loop.
    :param interface: the only interface served (``SO_BINDTODEVICE``). Required, never empty.
    :param port: the DHCP server port (67).
    :param proxy_port: the PXE boot server port (4011), listened on in proxy mode only;
        ``None`` disables it.
    :param persist: makes the backend's state durable; see "Durable before the ACK leaves" in
        the module docstring. ``None``: replies are sent at once (the backend is durable itself,
        or nobody cares).
    :param on_event: called with a :class:`DhcpEvent` for every decided request, on the loop.
    :param clock: seconds, passed to the policy/backend as ``now`` and stamped on events.
    :param socket_factory: opens a listening socket for ``(interface, port)``; tests pass a fake.
    :param max_pending: replies waiting for ``persist`` beyond which new ones are dropped.
    :param stop_grace: seconds :meth:`stop` waits for the last persist and its replies.

    :attr:`stats` counters: ``received`` datagrams; ``replied`` replies sent; ``ignored``
    requests answered with silence (by policy, or RELEASE/DECLINE); ``malformed`` datagrams that
    did not decode; ``errors`` exceptions while handling a request or sending its reply, plus
    failed persists; ``dropped`` replies discarded unsent (persist failed, queue full, stopping).
    """

    def __init__(
        self,
        config: SubnetConfig,
        backend: DhcpBackend,
        *,
        interface: str,
        port: int = SERVER_PORT,
        proxy_port: int | None = PROXY_PORT,
        persist: Callable[[], Awaitable[None]] | None = None,
        on_event: Callable[[DhcpEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
        socket_factory: Callable[[str, int], DhcpSocket] = InterfaceSocket,
        max_pending: int = 4096,
        stop_grace: float = 5.0,
    ) -> None:
        _check_interface(interface)
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._config = config
        self.backend = backend
        self.interface = interface
        self.port = port
        self.proxy_port = proxy_port
        self._persist = persist
        self._on_event = on_event
        self._clock = clock
        self._socket_factory = socket_factory
        self._max_pending = max_pending
        self._stop_grace = stop_grace
        self._stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: _Listener | None = None
        self._boot: _Listener | None = None
        self._pending: list[_Outgoing] = []
        self._dirty = False  # the backend changed since the last persist began
        self._wakeup: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._arp_warned = False

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def config(self) -> SubnetConfig:
        return self._config

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters (see the class docstring)."""
        return dict(self._stats)

    @property
    def pending(self) -> int:
        """Replies waiting for ``persist``."""
        return len(self._pending)

    async def start(self) -> None:
        """Open the listeners (and the flusher, with ``persist``)."""
        if self._loop is not None:
            raise RuntimeError("DhcpServer already started")
        self._loop = asyncio.get_running_loop()
        self._closing = False
        try:
            self._main = self._open(self.port, boot_server=False)
            if self._wants_boot_server(self._config):
                assert self.proxy_port is not None
                self._boot = self._open(self.proxy_port, boot_server=True)
        except BaseException:
            self._close_listeners()
            self._loop = None
            raise
        if self._persist is not None:
            self._wakeup = asyncio.Event()
            self._flusher = self._loop.create_task(self._flush_loop(), name=f"dhcp-persist-{self.interface}")
        ports = [str(lst.port) for lst in (self._main, self._boot) if lst is not None]
        logger.info("dhcp: serving %s (%s mode) on %s port %s", self._config.network, self._config.mode,
                    self.interface, "+".join(ports))

    async def stop(self) -> None:
        """Stop reading requests, send what the last persist covers, close the sockets."""
        if self._loop is None:
            return
        for listener in (self._main, self._boot):
            if listener is not None:
                self._loop.remove_reader(listener.sock.fileno())
        flusher = self._flusher
        if flusher is not None and self._wakeup is not None:
            self._closing = True
            self._wakeup.set()
            done, _ = await asyncio.wait({flusher}, timeout=self._stop_grace)
            if not done:
                logger.warning("dhcp: persist still running after %.1f s; stopping without it", self._stop_grace)
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
            self._drop(self._pending, "server stopping")
            self._pending = []
        self._flusher = None
        self._wakeup = None
        self._close_listeners()
        self._loop = None
        logger.info("dhcp: stopped on %s", self.interface)

    def reconfigure(self, config: SubnetConfig) -> None:
        """Serve ``config`` from the next request on; opens or closes the port-4011 listener.

        :raises OSError: the boot server port cannot be opened; the old config stays in force.
        """
        if self._loop is not None:
            wants_boot = self._wants_boot_server(config)
            if wants_boot and self._boot is None:
                assert self.proxy_port is not None
                self._boot = self._open(self.proxy_port, boot_server=True)
            elif not wants_boot and self._boot is not None:
                self._close_listener(self._boot)
                self._boot = None
        self._config = config
        logger.info("dhcp: reconfigured %s: %s mode, %s", self.interface, config.mode, config.network)

    def _wants_boot_server(self, config: SubnetConfig) -> bool:
        return config.mode == "proxy" and self.proxy_port is not None

    def _open(self, port: int, *, boot_server: bool) -> _Listener:
        assert self._loop is not None
        listener = _Listener(self._socket_factory(self.interface, port), port, boot_server)
        try:
            self._loop.add_reader(listener.sock.fileno(), self._on_readable, listener)
        except BaseException:
            listener.sock.close()
            raise
        return listener

    def _close_listener(self, listener: _Listener) -> None:
        if self._loop is not None:
            self._loop.remove_reader(listener.sock.fileno())
        listener.sock.close()

    def _close_listeners(self) -> None:
        for listener in (self._main, self._boot):
            if listener is not None:
                self._close_listener(listener)
        self._main = self._boot = None

    # -- requests ------------------------------------------------------------------------------

    def _on_readable(self, listener: _Listener) -> None:
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, source = listener.sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # a queued ICMP error from an earlier send; reading cleared it
                logger.debug("dhcp: socket error on %s port %d: %s", self.interface, listener.port, exc)
                continue
            self._handle(listener, data, source)

    def _handle(self, listener: _Listener, data: bytes, source: Address) -> None:
        self._stats["received"] += 1
        if len(data) > MAX_DATAGRAM:
            self._stats["malformed"] += 1
            logger.debug("dhcp: dropped oversized datagram (> %d bytes) from %s", MAX_DATAGRAM, source)
            return
        try:
            request = decode(data)
        except DecodeError as exc:
            self._stats["malformed"] += 1
            logger.debug("dhcp: dropped malformed %d-byte datagram from %s: %s", len(data), source, exc)
            return
        try:
            self._answer(listener, request, source)
        except Exception:
            self._stats["errors"] += 1
            logger.exception("dhcp: failed to answer %s from %s (%s)", _type_name(request), request.mac, source)

    def _answer(self, listener: _Listener, request: DhcpPacket, source: Address) -> None:
        now = self._clock()
        local_port = PROXY_PORT if listener.boot_server else SERVER_PORT
        decision = decide(request, self._config, self.backend, now, local_port=local_port)
        durable = self._persist is not None and not listener.boot_server and request.message_type in _DURABLE
        event = _event(request, decision, now)
        if decision is None:
            self._stats["ignored"] += 1
            if durable and request.message_type in (MessageType.RELEASE, MessageType.DECLINE):
                self._schedule_persist()
            self._emit(event)
            return
        out = _Outgoing(listener, decision.encode(), decision.destination, source, event)
        if durable:
            self._enqueue(out)
        else:
            self._deliver(out)

    # -- group commit --------------------------------------------------------------------------

    def _schedule_persist(self) -> None:
        assert self._wakeup is not None
        self._dirty = True
        self._wakeup.set()

    def _enqueue(self, out: _Outgoing) -> None:
        if len(self._pending) >= self._max_pending:
            logger.warning("dhcp: %d replies already wait for persist; dropping the one to %s",
                           len(self._pending), out.event.mac)
            self._drop([out], "persist queue full")
            return
        self._pending.append(out)
        self._schedule_persist()

    async def _flush_loop(self) -> None:
        assert self._wakeup is not None and self._persist is not None
        wakeup, persist = self._wakeup, self._persist
        while True:
            await wakeup.wait()
            wakeup.clear()
            if self._dirty:
                # Everything queued up to now rides on this persist; later replies wait for the next.
                batch, self._pending, self._dirty = self._pending, [], False
                try:
                    await persist()
                except asyncio.CancelledError:
                    self._drop(batch, "server stopping")
                    raise
                except Exception as exc:
                    self._stats["errors"] += 1
                    logger.error("dhcp: persist failed, dropping %d unsent replies (clients will retry): %s",
                                 len(batch), exc, exc_info=True)
                    self._drop(batch, f"persist failed: {exc}")
                else:
                    for out in batch:
                        self._deliver(out)
            if self._closing and not self._dirty:
                return

    def _drop(self, batch: list[_Outgoing], why: str) -> None:
        for out in batch:
            self._stats["dropped"] += 1
            self._emit(replace(out.event, reply_type=None, note=f"not sent: {why}"))

    # -- replies -------------------------------------------------------------------------------

    def _deliver(self, out: _Outgoing) -> None:
        try:
            self._send(out)
        except Exception as exc:
            self._stats["errors"] += 1
            logger.warning("dhcp: sending %s to %s (%s) failed: %s", out.event.reply_type, out.event.mac,
                           out.destination.kind, exc)
            self._emit(replace(out.event, reply_type=None, note=f"not sent: {exc}"))
            return
        self._stats["replied"] += 1
        self._emit(out.event)

    def _send(self, out: _Outgoing) -> None:
        dest = out.destination
        sock = out.listener.sock
        if dest.kind is DestinationKind.SOURCE:
            sock.sendto(out.payload, out.source)
        elif dest.kind is DestinationKind.BROADCAST:
            sock.sendto(out.payload, (_LIMITED_BROADCAST, dest.port))
        elif dest.kind is DestinationKind.HARDWARE:
            self._send_hardware(out, sock, dest)
        else:  # UNICAST to ciaddr, RELAY to giaddr
            sock.sendto(out.payload, (str(dest.ip), dest.port))

    def _send_hardware(self, out: _Outgoing, sock: DhcpSocket, dest: Destination) -> None:
        # RFC 2131 §4.1: unicast to the client's hardware address and yiaddr. The client cannot
        # answer ARP for yiaddr yet, so tell the kernel the MAC (dnsmasq does the same).
        if dest.mac is None or not _is_ethernet(dest.mac):
            logger.debug("dhcp: %s is not an Ethernet address; broadcasting the reply", dest.mac)
        else:
            try:
                sock.add_neighbour(dest.ip, dest.mac)
                sock.sendto(out.payload, (str(dest.ip), dest.port))
                return
            except OSError as exc:
                level = logging.DEBUG if self._arp_warned else logging.WARNING
                self._arp_warned = True
                logger.log(level, "dhcp: cannot unicast to %s at %s without ARP on %s (%s); broadcasting instead",
                           dest.ip, dest.mac, self.interface, exc)
        sock.sendto(out.payload, (_LIMITED_BROADCAST, dest.port))

    def _emit(self, event: DhcpEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            logger.exception("dhcp: on_event failed for %s", event.mac)


def _type_name(packet: DhcpPacket) -> str:
    message = packet.message_type
    return "BOOTP" if message is None else message.name


def _nonzero(ip: IPv4Address | None) -> str | None:
    return None if ip is None or int(ip) == 0 else str(ip)


def _event(request: DhcpPacket, decision: Decision | None, now: float) -> DhcpEvent:
    reply = decision.reply if decision is not None else None
    ip: str | None
    reply_type: str | None = None
    boot_file: str | None = None
    if reply is not None:
        ip = _nonzero(reply.yiaddr) or _nonzero(reply.ciaddr)
        reply_type = _type_name(reply)
        boot_file = reply.bootfile_name or reply.boot_file or None
    else:
        message = request.message_type
        if message is MessageType.DECLINE:
            ip = _nonzero(request.requested_ip)
        elif message in (MessageType.RELEASE, MessageType.INFORM):
            ip = _nonzero(request.ciaddr)
        else:
            ip = None
    method = decision.boot_method if decision is not None else None
    return DhcpEvent(
        mac=request.mac,
        message_type=_type_name(request),
        reply_type=reply_type,
        ip=ip,
        boot_method=method.name if method is not None else None,
        boot_file=boot_file,
        note=decision.note if decision is not None else "",
        at=now,
    )
