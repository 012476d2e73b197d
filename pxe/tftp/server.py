"""asyncio transport for the sans-I/O TFTP core: sockets, timers and the concurrency cap.

Theory of operation
-------------------
One listening socket (a :class:`asyncio.DatagramProtocol`) receives requests. RFC 1350 §4 has
every transfer run between two fresh transfer IDs (UDP ports), so each accepted RRQ gets its own
ephemeral socket bound to the same host, and each refusal (WRQ, bad name, busy) is sent from a
throw-away ephemeral socket too: a client that sees an ERROR from port 69 would take it for a
packet from the wrong TID.

Transfer sockets are plain non-blocking sockets watched with ``loop.add_reader`` rather than
asyncio transports: every event the :class:`~pxe.tftp.protocol.ReadTransfer` handles must be
processed synchronously (a request arriving twice must find the first one already registered),
and UDP needs none of a transport's write buffering - a datagram the kernel will not take right
now is simply lost and the retransmission timer sends it again. Sockets are *not* connected to
the client, because datagrams from other addresses must still be seen to answer ERROR 5.

Each transfer has one retransmission timer, re-armed by the state machine after every window.
Cancelling and re-creating an asyncio timer per window costs more than the rest of the hot path,
so a :class:`SetTimer` only moves the transfer's deadline forward; the pending timer, when it goes
off early, re-arms itself for the rest. A timer is replaced only when a deadline moves earlier.

Nothing here decides what to send; it only carries out the state machine's actions.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pxe.tftp.files import FileError, open_file
from pxe.tftp.options import OptionLimits
from pxe.tftp.packets import DecodeError, Error, ErrorCode, ReadRequest, WriteRequest, decode, encode
from pxe.tftp.protocol import Action, Finished, Reader, ReadTransfer, RetryPolicy, Send, SetTimer

__all__ = ["ClosableReader", "FileSource", "RootSource", "TftpServer"]

logger = logging.getLogger(__name__)

# Larger than any valid TFTP datagram, so an oversized one arrives whole and fails to decode
# instead of being silently truncated into something that might.
_RECV_SIZE = 65536 + 1
# Datagrams read per readiness callback at most, so that one busy transfer cannot starve the
# others sharing the loop. The callback returns earlier, as soon as it has sent something: the
# client's next ACK cannot be queued before it has what was just sent, and a read that finds
# nothing (EAGAIN) costs about as much as one that finds a datagram. Anything queued after all
# (duplicates, strangers) is reported again by the level-triggered selector.
_READS_PER_WAKEUP = 64

# Round trips a busy-polled transfer runs before the loop gets a turn (see _busy_poll): at about
# 20 us each, other sockets wait well under a millisecond.
_POLLS_PER_TURN = 32

# A timer going off this close to its transfer's deadline counts as on time (asyncio runs timers
# up to its clock resolution early; re-arming for a few nanoseconds would only spin).
_TIMER_SLACK = 0.001

Address = tuple[str, int]

# UDP generic segmentation offload (linux/udp.h, Linux >= 4.18): one sendmsg carries a run of
# equal-sized datagrams. Off where the platform lacks it; switched off at the first refusal.
_SOL_UDP = 17
_UDP_SEGMENT = 103
_GSO_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000
_GSO_DEFAULT = sys.platform == "linux"


class ClosableReader(Reader, Protocol):
    """A transfer's :class:`~pxe.tftp.protocol.Reader` that the server closes when it ends."""

    def close(self) -> None: ...


class FileSource(Protocol):
    """Where requested names come from: a directory, generated boot configs, or a mix.

    ``open`` raises :class:`~pxe.tftp.files.FileError` to refuse a name; its ``code`` and
    ``message`` go to the client. Any other exception is logged and answered with ERROR 0.
    It is called on the event loop, so it must not block for long.
    """

    def open(self, name: str) -> ClosableReader: ...


class RootSource:
    """Serves regular files under ``root`` with the rules of :func:`pxe.tftp.files.resolve`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def open(self, name: str) -> ClosableReader:
        return open_file(self.root, name)


@dataclass(eq=False)
class _Transfer:
    client: Address
    sock: socket.socket
    reader: ClosableReader
    machine: ReadTransfer
    filename: str
    timer: asyncio.TimerHandle | None = None
    timer_at: float = 0.0  # when ``timer`` goes off (loop time)
    deadline: float = 0.0  # when the state machine's timeout is due; ``timer_at`` <= this
    bytes_sent: int = 0
    polling: bool = False  # a _busy_poll continuation is scheduled
    closed: bool = field(default=False)


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, server: TftpServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._server._on_request(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier sends; nothing to do, the listener keeps serving.
        logger.debug("tftp listener socket error: %s", exc)


class TftpServer:
    """Serve read requests over UDP until :meth:`stop`.

    :param root_or_source: a directory (served through :class:`RootSource`) or any
        :class:`FileSource`.
    :param host: address to listen on; transfer sockets bind to it too.
    :param port: listening port; 0 picks a free one (see :meth:`start`).
    :param max_transfers: concurrent transfers; further requests get ERROR 0 "server busy".
    :param busy_poll_s: how long a transfer running alone polls its socket for the client's
        answer after each send before sleeping (see :meth:`_busy_poll`); 0 never polls.
    :param on_finished: called with ``(client, filename, ok, detail)`` when a transfer ends;
        its exceptions are logged and otherwise ignored.

    Counters (read them from the loop's thread, or after :meth:`stop`): ``transfers_started``,
    ``transfers_completed``, ``transfers_failed``, ``requests_refused`` and ``bytes_sent``
    (UDP payload bytes sent on transfer sockets, retransmissions included), and
    ``datagrams_polled`` (client datagrams that a busy poll caught before the loop slept).
    """

    def __init__(
        self,
        root_or_source: str | os.PathLike[str] | FileSource,
        *,
        host: str,
        port: int,
        limits: OptionLimits | None = None,
        retry: RetryPolicy | None = None,
        max_transfers: int = 1000,
        busy_poll_s: float = 0.0,
        on_finished: Callable[[Address, str, bool, str], None] | None = None,
    ) -> None:
        if max_transfers < 1:
            raise ValueError("max_transfers must be at least 1")
        if isinstance(root_or_source, str | os.PathLike):
            self.source: FileSource = RootSource(root_or_source)
        else:
            self.source = root_or_source
        self.host = host
        self.port = port
        self.limits = limits or OptionLimits()
        self.retry = retry or RetryPolicy()
        self.max_transfers = max_transfers
        self.busy_poll_s = busy_poll_s
        #: Called as ``(client, filename, ok, detail)`` when a transfer ends (boot events).
        self.on_finished = on_finished
        self._gso = _GSO_DEFAULT
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.DatagramTransport | None = None
        self._transfers: dict[Address, _Transfer] = {}
        self.transfers_started = 0
        self.transfers_completed = 0
        self.transfers_failed = 0
        self.requests_refused = 0
        self.bytes_sent = 0
        self.datagrams_polled = 0

    @property
    def active_transfers(self) -> int:
        return len(self._transfers)

    async def start(self) -> int:
        """Bind the listening socket and return its port (the real one when ``port`` was 0)."""
        if self._listener is not None:
            raise RuntimeError("TftpServer already started")
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=(self.host, self.port), family=self._family
        )
        self._listener = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        logger.info("tftp listening on %s port %d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening and abort running transfers (their clients get ERROR 0)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for transfer in list(self._transfers.values()):
            self._send(transfer, encode(Error(ErrorCode.NOT_DEFINED, "server shutting down")), transfer.client)
            self._finish(transfer, Finished(ErrorCode.NOT_DEFINED, "server shutting down"))

    # -- requests on the listening port -------------------------------------------------------

    def _on_request(self, data: bytes, addr: Address) -> None:
        try:
            packet = decode(data)
        except DecodeError as exc:
            logger.debug("tftp: dropped %d-byte datagram from %s: %s", len(data), addr, exc)
            return
        if isinstance(packet, WriteRequest):
            self._refuse(addr, ErrorCode.ACCESS_VIOLATION, "access violation: this server is read-only")
            return
        if not isinstance(packet, ReadRequest):
            logger.debug("tftp: dropped %s on the listening port from %s", type(packet).__name__, addr)
            return
        if addr in self._transfers:
            # The client retransmitted its RRQ before our first packet reached it; the running
            # transfer's own retransmissions answer it, a second transfer would only compete.
            return
        if len(self._transfers) >= self.max_transfers:
            self._refuse(addr, ErrorCode.NOT_DEFINED, "server busy")
            return
        try:
            reader = self.source.open(packet.filename)
        except FileError as exc:
            logger.debug("tftp: refused %r from %s: %s", packet.filename, addr, exc.message)
            self._refuse(addr, exc.code, exc.message)
            return
        except Exception:
            logger.exception("tftp: file source failed for %r", packet.filename)
            self._refuse(addr, ErrorCode.NOT_DEFINED, "cannot open file")
            return
        try:
            sock = self._ephemeral_socket()
        except OSError as exc:
            reader.close()
            logger.warning("tftp: cannot open a transfer socket: %s", exc)
            self._refuse(addr, ErrorCode.NOT_DEFINED, "server busy")
            return
        machine = ReadTransfer(reader, limits=self.limits, retry=self.retry)
        transfer = _Transfer(addr, sock, reader, machine, packet.filename)
        self._transfers[addr] = transfer
        self.transfers_started += 1
        assert self._loop is not None  # requests only arrive after start()
        self._loop.add_reader(sock.fileno(), self._on_readable, transfer)
        logger.debug("tftp: %s requested %r", addr, packet.filename)
        self._apply(transfer, machine.start(packet))

    def _refuse(self, addr: Address, code: int, message: str) -> None:
        self.requests_refused += 1
        try:
            with self._ephemeral_socket() as sock:
                sock.sendto(encode(Error(code, message)), addr)
        except OSError as exc:
            logger.debug("tftp: could not send ERROR %d to %s: %s", code, addr, exc)

    def _ephemeral_socket(self) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.host, 0))
        except OSError:
            sock.close()
            raise
        return sock

    # -- running transfers --------------------------------------------------------------------

    def _on_readable(self, transfer: _Transfer) -> None:
        for _ in range(_READS_PER_WAKEUP):
            if transfer.closed:
                return
            try:
                data, raw_addr = transfer.sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # a queued ICMP error; reading it cleared it
                logger.debug("tftp: transfer socket error for %s: %s", transfer.client, exc)
                continue
            if self._handle(transfer, data, raw_addr):  # sent something (or finished): see _READS_PER_WAKEUP
                if self.busy_poll_s and len(self._transfers) == 1 and not transfer.polling:
                    self._busy_poll(transfer)
                return

    def _handle(self, transfer: _Transfer, data: bytes, raw_addr: tuple[str | int, ...]) -> bool:
        """Feed one datagram to the transfer; True if the state machine acted on it."""
        if raw_addr != transfer.client:  # IPv4 compares as received; IPv6 has four fields
            addr = (str(raw_addr[0]), int(raw_addr[1]))
            if addr != transfer.client:
                # RFC 1350 §4: tell the stranger, leave the transfer alone. Never answer an ERROR
                # with an ERROR, or two confused hosts could bounce them forever.
                if data[:2] != b"\x00\x05":
                    self._send(transfer, encode(Error(ErrorCode.UNKNOWN_TID, "unknown transfer ID")), addr)
                return False
        actions = transfer.machine.datagram(data)
        if actions:
            self._apply(transfer, actions)
        return bool(actions)

    def _busy_poll(self, transfer: _Transfer) -> None:
        """Wait for a lone transfer's next datagram by polling its socket, not by sleeping.

        A lock-step transfer is bound by the round trip, and on a VM whose idle vCPUs halt, waking
        from the wait for the ACK costs more than everything else in it: a UDP ping-pong between
        two vCPUs here takes ~70 us per round trip with both sides sleeping and ~20 us when the
        server polls (bench/udp_wakeup). This is Linux's SO_BUSY_POLL, done here because loopback and
        virtio without NAPI polling get nothing from the socket option. It costs one core while a
        single transfer runs and nothing else does; with company the loop is busy anyway.

        Each poll ends ``busy_poll_s`` after the last send without an answer, and after
        _POLLS_PER_TURN round trips it lets the loop take a turn (call_soon: the loop then looks
        at its other sockets without sleeping) before it goes on.
        """
        transfer.polling = False
        for _ in range(_POLLS_PER_TURN):
            deadline = time.perf_counter() + self.busy_poll_s
            while True:
                if transfer.closed or len(self._transfers) != 1:
                    return
                try:
                    data, raw_addr = transfer.sock.recvfrom(_RECV_SIZE)
                    break
                except (BlockingIOError, InterruptedError):
                    if time.perf_counter() >= deadline:
                        return  # the client is slow: back to sleeping in the selector
                except OSError as exc:
                    logger.debug("tftp: transfer socket error for %s: %s", transfer.client, exc)
            self.datagrams_polled += 1
            self._handle(transfer, data, raw_addr)
        assert self._loop is not None
        transfer.polling = True
        self._loop.call_soon(self._busy_poll, transfer)

    def _on_timeout(self, transfer: _Transfer) -> None:
        transfer.timer = None
        if transfer.closed:
            return
        assert self._loop is not None
        if transfer.deadline - self._loop.time() > _TIMER_SLACK:  # moved forward since armed: wait for the rest
            transfer.timer_at = transfer.deadline
            transfer.timer = self._loop.call_at(transfer.deadline, self._on_timeout, transfer)
            return
        self._apply(transfer, transfer.machine.timeout())

    def _apply(self, transfer: _Transfer, actions: list[Action]) -> None:
        window: list[bytes] = []  # consecutive DATA packets of one window, sent together
        for action in actions:
            if isinstance(action, Send):
                window.append(action.data)
                continue
            if window:
                self._send_window(transfer, window)
                window = []
            if isinstance(action, SetTimer):
                self._set_timer(transfer, action.seconds)
            else:
                self._finish(transfer, action)
                return
        if window:
            self._send_window(transfer, window)

    def _send_window(self, transfer: _Transfer, packets: list[bytes]) -> None:
        """Send ``packets`` to the client: with UDP segmentation offload (one ``sendmsg`` for a run
        of equal-sized packets, split into datagrams by the kernel) where it works, else one by one.

        A window of 16 blocks is then one system call instead of 16; the per-datagram syscall
        was most of the server's cost per block with windowsize (bench/tftp).
        """
        if len(packets) == 1:  # lock-step transfers: the common case, kept cheap
            self._send_client(transfer, packets[0])
            return
        start = 0
        while start < len(packets):
            size = len(packets[start])
            end = start + 1
            # A GSO send is equal-sized segments, the last one may be shorter, within 64 KiB.
            limit = min(len(packets), start + _GSO_MAX_SEGMENTS, start + _GSO_MAX_BYTES // max(size, 1))
            while end < limit and len(packets[end - 1]) == size and len(packets[end]) <= size:
                end += 1
            if end - start > 1 and self._gso and self._send_segments(transfer, packets[start:end], size):
                start = end
                continue
            for data in packets[start:end]:
                self._send_client(transfer, data)
            start = end

    def _send_segments(self, transfer: _Transfer, packets: list[bytes], size: int) -> bool:
        """One GSO ``sendmsg``; False (and GSO off for this server) if the kernel refuses it."""
        payload = b"".join(packets)
        try:
            transfer.sock.sendmsg([payload], [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", size))], 0, transfer.client)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EIO):
                logger.info("tftp: UDP segmentation offload unavailable (%s); sending datagrams one by one", exc)
                self._gso = False
                return False
            # Full socket buffer or a transient route error: lost like any UDP datagram; the
            # retransmission timer recovers the window.
            logger.debug("tftp: send to %s failed: %s", transfer.client, exc)
            return True
        transfer.bytes_sent += len(payload)
        self.bytes_sent += len(payload)
        return True

    def _set_timer(self, transfer: _Transfer, seconds: float) -> None:
        assert self._loop is not None
        transfer.deadline = self._loop.time() + seconds
        if transfer.timer is not None:
            if transfer.timer_at <= transfer.deadline:
                return  # goes off first, then re-arms for the rest (see _on_timeout)
            transfer.timer.cancel()
        transfer.timer_at = transfer.deadline
        transfer.timer = self._loop.call_at(transfer.deadline, self._on_timeout, transfer)

    def _send_client(self, transfer: _Transfer, data: bytes) -> None:
        try:
            transfer.sock.sendto(data, transfer.client)
        except OSError as exc:
            # Full socket buffer or a transient route error: the packet is lost like any other UDP
            # datagram and the retransmission timer recovers it.
            logger.debug("tftp: send to %s failed: %s", transfer.client, exc)
            return
        transfer.bytes_sent += len(data)
        self.bytes_sent += len(data)

    def _send(self, transfer: _Transfer, data: bytes, addr: Address) -> None:
        try:
            transfer.sock.sendto(data, addr)
        except OSError as exc:
            # Full socket buffer or a transient route error: the packet is lost like any other UDP
            # datagram and the retransmission timer recovers it.
            logger.debug("tftp: send to %s failed: %s", addr, exc)
            return
        if addr == transfer.client:
            transfer.bytes_sent += len(data)
            self.bytes_sent += len(data)

    def _finish(self, transfer: _Transfer, finished: Finished) -> None:
        if transfer.closed:
            return
        transfer.closed = True
        if transfer.timer is not None:
            transfer.timer.cancel()
            transfer.timer = None
        if self._loop is not None:
            self._loop.remove_reader(transfer.sock.fileno())
        transfer.sock.close()
        try:
            transfer.reader.close()
        except Exception:
            logger.exception("tftp: closing the reader for %r failed", transfer.filename)
        self._transfers.pop(transfer.client, None)
        if finished.ok:
            self.transfers_completed += 1
            logger.debug("tftp: sent %r to %s", transfer.filename, transfer.client)
        else:
            self.transfers_failed += 1
            who = "client" if finished.by_peer else "server"
            logger.info(
                "tftp: transfer of %r to %s failed (%s error %s: %s)",
                transfer.filename,
                transfer.client,
                who,
                finished.error,
                finished.message,
            )
        if self.on_finished is not None:
            detail = f"{transfer.bytes_sent} bytes" if finished.ok else f"error {finished.error}: {finished.message}"
            try:
                self.on_finished(transfer.client, transfer.filename, finished.ok, detail)
            except Exception:
                logger.exception("tftp: the on_finished callback failed")
