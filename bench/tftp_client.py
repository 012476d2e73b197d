"""An asyncio TFTP read client for benchmarks: RFC 1350, options (RFC 2347/2348/2349), windowsize (RFC 7440).

    .venv/bin/python -m bench.tftp_client HOST PORT FILENAME --expect PATH [--count 1] [--blksize 1468]
        [--windowsize 16]

``bench.tftp`` runs this same client against every server, so what the client costs per block is
the same for all of them; it is written to cost little:

- one plain non-blocking UDP socket per transfer, watched with ``loop.add_reader``; each wakeup
  reads the datagrams already queued until it has sent an ACK, so a window of DATA costs one trip
  through the loop, and no read is spent finding the queue empty when nothing more can be due
  (the level-triggered selector reports the socket again if something was queued after all);
- the DATA fast path looks at four header bytes, feeds the payload to an incremental sha256 and
  sends an ACK at the end of each window (every block when no window was negotiated); nothing is
  decoded into objects and nothing is buffered;
- one retransmission timer per transfer ticks every ``timeout`` seconds rather than being re-armed
  per block: a tick that finds no progress since the previous one retransmits the RRQ (before the
  server answered) or an ACK of the last block received in order (ACK 0 right after an OACK), and
  ``retries`` ticks in a row without progress end the transfer. A retransmission can therefore
  come between one and two ``timeout`` after the last progress; the servers measured here
  retransmit on their own timers anyway.

Receiving follows RFC 7440 §4: blocks are accepted only in order; a block beyond the one expected
(a loss inside a window) is answered once with an ACK of the last block received in order, so the
server resends from there; a block already received (the server retransmitted because an ACK was
lost) is answered with that same ACK once per stall. Datagrams from any other transfer ID leave
the transfer alone (RFC 1350 §4): once the server's first reply fixes its TID the socket is
connected to it, so the kernel answers strangers with ICMP port unreachable (those queued before
that get ERROR 5), and ``send``/``recv`` skip an address per packet. The transfer ends when a
block shorter than the block size arrives; its ACK is sent once and the socket is closed (no
dally).

A transfer is reported complete only when the byte count and the sha256 of everything received
equal those of the file (``Expected``), and, when the server answered tsize, that too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ClientOptions", "Expected", "Result", "fetch", "fetch_many"]

_U16_PAIR = struct.Struct("!HH")
_RECV_SIZE = 65536 + 1
_READS_PER_WAKEUP = 256  # datagrams read per readiness callback at most, so transfers share the loop
_OP_DATA, _OP_ACK, _OP_ERROR, _OP_OACK = 3, 4, 5, 6


@dataclass(frozen=True)
class Expected:
    """What the transfer must deliver: the file's size and the hex sha256 of its content."""

    size: int
    sha256: str

    @classmethod
    def of_file(cls, path: Path) -> Expected:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return cls(path.stat().st_size, digest.hexdigest())


@dataclass(frozen=True)
class ClientOptions:
    """What the RRQ asks for and how patient the client is.

    :param blksize: RFC 2348 block size to request; ``None`` sends no blksize option (512 bytes).
    :param windowsize: RFC 7440 window to request; ``None`` sends no windowsize option (lock-step).
    :param tsize: ask for the transfer size (RFC 2349) and check it against the file.
    :param timeout: seconds without progress before the RRQ, or an ACK of the last block received
        in order, is sent again.
    :param retries: retransmissions in a row without progress before the transfer fails.
    """

    blksize: int | None = 1468
    windowsize: int | None = None
    tsize: bool = True
    timeout: float = 1.0
    retries: int = 5


@dataclass(frozen=True)
class Result:
    """One transfer, as the client saw it. ``seconds`` runs from the first RRQ to its end."""

    ok: bool
    error: str
    received: int
    seconds: float
    blksize: int
    windowsize: int
    retransmits: int
    out_of_order: int


class _Read:
    """One read transfer; ``done`` resolves to its :class:`Result` (never raises)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: tuple[str, int],
        filename: str,
        options: ClientOptions,
        expected: Expected,
    ) -> None:
        self.loop = loop
        self.server = server
        self.options = options
        self.expected = expected
        self.done: asyncio.Future[Result] = loop.create_future()
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        self.peer: tuple[str, int] | None = None
        self.blksize = 512
        self.windowsize = 1
        self.tsize: int | None = None
        self.expect = 1  # next block wanted, absolute (from 1)
        self.in_window = 0  # blocks received in order since the last ACK we sent
        self.received = 0
        self.hash = hashlib.sha256()
        self.rrq = self._rrq(filename)
        self.progress = 0
        self.seen_progress = 0
        self.stalls = 0
        self.retransmits = 0
        self.out_of_order = 0
        self.nak_for = 0  # the gap (``expect``) already answered with an ACK
        self.reack_progress = -1  # ``progress`` when a duplicate was last re-ACKed
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.finished = False
        self.send_errors = 0

    def _rrq(self, filename: str) -> bytes:
        fields = [filename, "octet"]
        if self.options.blksize is not None:
            fields += ["blksize", str(self.options.blksize)]
        if self.options.tsize:
            fields += ["tsize", "0"]
        if self.options.windowsize is not None:
            fields += ["windowsize", str(self.options.windowsize)]
        return b"\x00\x01" + b"".join(f.encode("ascii") + b"\0" for f in fields)

    def start(self) -> None:
        self.started = time.perf_counter()
        self.loop.add_reader(self.sock.fileno(), self._on_first)
        self._send(self.rrq)
        self.timer = self.loop.call_later(self.options.timeout, self._tick)

    # -- before the server's transfer ID is known -------------------------------------------------

    def _on_first(self) -> None:
        try:
            data, raw = self.sock.recvfrom(_RECV_SIZE)
        except OSError:  # nothing queued after all, or an ICMP error for the RRQ
            return
        addr = (str(raw[0]), int(raw[1]))
        if addr[0] != self.server[0] or len(data) < 4 or data[0] != 0:
            return
        opcode = data[1]
        if opcode == _OP_ERROR:
            self._finish(f"server ERROR {data[2] << 8 | data[3]}: {_text(data[4:])}")
            return
        if opcode not in (_OP_OACK, _OP_DATA):
            return
        # The server's transfer ID is known: connect to it, so the kernel drops (and answers with
        # ICMP port unreachable) datagrams from any other TID, and send/recv skip the address.
        self.peer = addr
        self.sock.connect(addr)
        fd = self.sock.fileno()
        self.loop.remove_reader(fd)
        if opcode == _OP_OACK:
            if not self._accept_oack(data):
                return
            self.progress += 1
            self._send(b"\x00\x04\x00\x00")
        else:  # the server ignored every option: RFC 1350 defaults, and this is already block 1
            self._on_datagram(data)
        self._drain_queued()
        if not self.finished:
            self.loop.add_reader(fd, self._on_readable)
            self._on_readable()

    def _drain_queued(self) -> None:
        """Datagrams queued before ``connect``: the peer's are handled, strangers get ERROR 5."""
        while not self.finished:
            try:
                data, raw = self.sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            addr = (str(raw[0]), int(raw[1]))
            if addr == self.peer:
                self._on_datagram(data)
            elif data[:2] != b"\x00\x05":  # never answer an ERROR with an ERROR
                with contextlib.suppress(OSError):
                    self.sock.sendto(b"\x00\x05\x00\x05unknown transfer ID\x00", addr)

    def _accept_oack(self, data: bytes) -> bool:
        fields = data[2:].split(b"\0")[:-1]
        if len(fields) % 2:
            self._finish("malformed OACK", error_to_peer=8)
            return False
        got = {k.decode("ascii", "replace").lower(): v.decode("ascii", "replace") for k, v in zip(
            fields[::2], fields[1::2], strict=True)}
        try:
            self.blksize = int(got.get("blksize", "512"))
            self.windowsize = int(got.get("windowsize", "1"))
            self.tsize = int(got["tsize"]) if "tsize" in got else None
        except ValueError:
            self._finish(f"unparsable OACK {got}", error_to_peer=8)
            return False
        asked_blk = self.options.blksize or 512
        asked_win = self.options.windowsize or 1
        if not 8 <= self.blksize <= asked_blk or not 1 <= self.windowsize <= asked_win:
            self._finish(f"OACK outside what was asked: {got}", error_to_peer=8)
            return False
        if self.tsize is not None and self.tsize != self.expected.size:
            self._finish(f"tsize {self.tsize} != {self.expected.size}", error_to_peer=8)
            return False
        return True

    # -- the transfer -----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        recv, handle = self.sock.recv, self._on_datagram
        for _ in range(_READS_PER_WAKEUP):
            if self.finished:
                return
            try:
                data = recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable: the server's TID is gone; the timer gives up
                continue
            if handle(data):
                return  # an ACK went out: nothing new is due before the server has it

    def _on_datagram(self, data: bytes) -> bool:
        """Handle one datagram from the server's TID; True if an ACK (or ERROR) was sent."""
        if len(data) >= 4 and data[1] == _OP_DATA and data[0] == 0:
            block = data[2] << 8 | data[3]
            expect = self.expect
            if block == expect & 0xFFFF:
                size = len(data) - 4
                if size > self.blksize:
                    self._finish(f"DATA block of {size} bytes > blksize {self.blksize}", error_to_peer=4)
                    return True
                self.hash.update(data[4:])
                self.received += size
                self.expect = expect + 1
                self.progress += 1
                if size < self.blksize:
                    self._send(b"\x00\x04" + data[2:4])
                    self._complete()
                    return True
                self.in_window += 1
                if self.in_window >= self.windowsize:
                    self.in_window = 0
                    self._send(b"\x00\x04" + data[2:4])
                    return True
                return False
            self.out_of_order += 1
            # Where is ``block`` relative to ``expect`` (16-bit arithmetic, half the space each way)?
            if (block - expect) & 0xFFFF < 0x8000:  # ahead: a block of this window was lost
                if self.nak_for != expect:
                    self.nak_for = expect
                    self._reack()
            elif self.reack_progress != self.progress:  # behind: our ACK was lost, the server resent
                self.reack_progress = self.progress
                self._reack()
            return False  # more of a window already sent may be queued: keep reading
        if len(data) >= 4 and data[1] == _OP_ERROR and data[0] == 0:
            self._finish(f"server ERROR {data[2] << 8 | data[3]}: {_text(data[4:])}")
            return True
        if data[:2] == b"\x00\x06" and self.expect == 1:
            self._send(b"\x00\x04\x00\x00")  # our ACK 0 was lost: the OACK came again
            return True
        return False

    def _reack(self) -> None:
        """ACK the last block received in order (0 = the OACK) and restart the window from it."""
        self.in_window = 0
        self._send(_U16_PAIR.pack(_OP_ACK, (self.expect - 1) & 0xFFFF))

    def _tick(self) -> None:
        self.timer = None
        if self.finished:
            return
        if self.progress != self.seen_progress:
            self.seen_progress = self.progress
            self.stalls = 0
        else:
            self.stalls += 1
            if self.stalls > self.options.retries:
                self._finish(f"no progress for {self.stalls} x {self.options.timeout} s after "
                             f"{self.received} bytes", error_to_peer=0)
                return
            self.retransmits += 1
            if self.peer is None:
                self._send(self.rrq)
            else:
                self._reack()
        self.timer = self.loop.call_later(self.options.timeout, self._tick)

    def _send(self, data: bytes) -> None:
        """Send to the server's TID once known (the socket is connected), else to its listening port."""
        try:
            if self.peer is None:
                self.sock.sendto(data, self.server)
            else:
                self.sock.send(data)
        except OSError:  # lost like any datagram; the timer retransmits
            self.send_errors += 1

    def _complete(self) -> None:
        if self.received != self.expected.size:
            self._finish(f"received {self.received} bytes, expected {self.expected.size}")
        elif self.hash.hexdigest() != self.expected.sha256:
            self._finish("sha256 mismatch")
        else:
            self._finish("")

    def _finish(self, error: str, *, error_to_peer: int | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        if error_to_peer is not None and self.peer is not None:
            self._send(_U16_PAIR.pack(_OP_ERROR, error_to_peer) + error.encode("ascii", "replace")[:200] + b"\0")
        self.close()
        self.done.set_result(Result(
            ok=not error, error=error, received=self.received, seconds=time.perf_counter() - self.started,
            blksize=self.blksize, windowsize=self.windowsize, retransmits=self.retransmits,
            out_of_order=self.out_of_order))

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


async def fetch_many(
    server: tuple[str, int],
    filename: str,
    count: int,
    expected: Expected,
    options: ClientOptions,
    *,
    deadline: float,
) -> list[Result]:
    """Start ``count`` reads of ``filename`` at once; return their results in order.

    A transfer still running ``deadline`` seconds after the start is abandoned and reported failed
    (an ERROR 0 goes to its server TID so the server can let go too).
    """
    loop = asyncio.get_running_loop()
    reads: list[_Read] = []
    try:
        for _ in range(count):
            reads.append(_Read(loop, server, filename, options, expected))
        for read in reads:
            read.start()
        await asyncio.wait([read.done for read in reads], timeout=deadline)
    finally:
        for read in reads:
            read._finish(f"deadline of {deadline} s passed after {read.received} bytes", error_to_peer=0)
    return [read.done.result() for read in reads]


async def fetch(server: tuple[str, int], filename: str, expected: Expected, options: ClientOptions,
                *, deadline: float = 60.0) -> Result:
    """One read of ``filename``; see :func:`fetch_many`."""
    return (await fetch_many(server, filename, 1, expected, options, deadline=deadline))[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("filename")
    parser.add_argument("--expect", type=Path, required=True, help="local copy of the file, to check against")
    parser.add_argument("--count", type=int, default=1, help="concurrent transfers")
    parser.add_argument("--blksize", type=int, default=1468)
    parser.add_argument("--windowsize", type=int, default=None)
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 1000:
        parser.error("--count must be in 1..1000")
    expected = Expected.of_file(args.expect)
    options = ClientOptions(blksize=args.blksize, windowsize=args.windowsize)
    started = time.perf_counter()
    results = asyncio.run(fetch_many((args.host, args.port), args.filename, args.count, expected, options,
                                     deadline=args.deadline))
    wall = time.perf_counter() - started
    good = [r for r in results if r.ok]
    print(f"{len(good)}/{len(results)} complete in {wall:.2f} s, "
          f"{sum(r.received for r in good) / wall / 1e6:.1f} MB/s; blksize {results[0].blksize}, "
          f"windowsize {results[0].windowsize}, retransmits {sum(r.retransmits for r in results)}")
    for result in results:
        if not result.ok:
            print(f"  FAILED: {result.error}")
    return 0 if len(good) == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
