"""Per-transfer TFTP read (server-sends) state machine, sans-I/O.

Theory of operation
-------------------
One :class:`ReadTransfer` serves one RRQ. The caller (``pxe.tftp.server``, later) owns the
socket bound to the transfer's ephemeral port, one timer, and the :class:`Reader`. It feeds the
transfer three kinds of event and carries out the actions each call returns, in order:

========================  =====================================================================
event                     meaning
========================  =====================================================================
``start(request)``        the RRQ arrived (already decoded, file already resolved to a reader)
``datagram(bytes)``       a datagram arrived from the client's transfer ID (address and port;
                          the caller answers other TIDs with ERROR 5 itself, RFC 1350 §4)
``timeout()``             the timer last requested with :class:`SetTimer` expired
========================  =====================================================================

=================  ============================================================================
action             what the caller does
=================  ============================================================================
:class:`Send`      send the bytes to the client's TID
:class:`SetTimer`  (re)arm the single retransmission timer; it replaces any pending one
:class:`Finished`  cancel the timer, close the reader, forget the transfer; no more actions
=================  ============================================================================

States: ``idle`` -> (``oack`` ->) ``sending`` -> ``done``. With negotiated options the server
first sends OACK and waits for ACK 0 (RFC 2347 §2); otherwise it starts with DATA 1.

In ``sending`` the server sends up to ``windowsize`` DATA blocks (RFC 7440), then waits. An ACK
for any block of the outstanding window moves the window to start just after it and a new window
is sent at once - so a client that lost block *k* and ACKs *k-1* gets *k* onwards again without
waiting for a timeout. ACKs for blocks already acknowledged are ignored; answering them would
double every packet from then on (the Sorcerer's Apprentice bug, RFC 1123 §4.2.3.1). A timeout
resends the whole outstanding window (or the OACK) with exponential backoff, and after
``max_retries`` consecutive timeouts the transfer ends with ERROR 0.

Blocks are counted internally from 1 without bound; the wire carries the count modulo 65536, so
the number after 65535 is 0 (what tftp-hpa, iPXE and the Linux kernel expect). The transfer ends
when the client ACKs the first block shorter than ``blksize``, which is empty when the size is an
exact multiple of ``blksize`` (RFC 1350 §6).

Malformed datagrams and packets that make no sense for a read (DATA, requests, OACK) are dropped
without ending the transfer: on a shared LAN noise is likelier than a confused client. An ERROR
from the client ends the transfer without a reply (RFC 1350 §7: ERRORs are not acknowledged).

``netascii`` requests are served byte-for-byte: boot files are binary and no PXE client uses
netascii, so the CR/LF translation of RFC 1350 is not implemented. ``mail`` is refused.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Protocol

from pxe.tftp.options import Negotiated, OptionLimits, negotiate
from pxe.tftp.packets import Ack, DecodeError, Error, ErrorCode, Opcode, OptionAck, ReadRequest, decode, encode

__all__ = [
    "Action",
    "Finished",
    "ReadTransfer",
    "Reader",
    "RetryPolicy",
    "Send",
    "SetTimer",
    "TransferState",
]

# DATA header (opcode, block). The hot path builds DATA packets itself rather than through
# ``encode(Data(...))``: same bytes, without two objects and a type dispatch per block.
_DATA_HEADER = struct.Struct("!HH")
_OP_DATA, _OP_ACK = int(Opcode.DATA), int(Opcode.ACK)


class Reader(Protocol):
    """Random-access source of a transfer's bytes; static files and generated configs alike.

    ``read`` may be called again for the same offset (retransmission) and must return the same
    bytes. It returns fewer than ``size`` bytes only at the end of the content. ``size`` is the
    total length if known in advance (used for tsize), else ``None``. May raise ``OSError``,
    which ends the transfer with ERROR 0. The caller, not the transfer, closes the reader.
    """

    @property
    def size(self) -> int | None: ...

    def read(self, offset: int, size: int) -> bytes: ...


@dataclass(frozen=True)
class Send:
    """Send ``data`` (one encoded TFTP packet) to the client's transfer ID."""

    data: bytes


@dataclass(frozen=True)
class SetTimer:
    """Arm the transfer's single timer for ``seconds``, replacing any pending one."""

    seconds: float


@dataclass(frozen=True)
class Finished:
    """The transfer is over. ``error`` is ``None`` on success, else the TFTP error code.

    :param by_peer: the client sent the ERROR (``message`` is the client's text).
    """

    error: int | None = None
    message: str = ""
    by_peer: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


Action = Send | SetTimer | Finished


@dataclass(frozen=True)
class RetryPolicy:
    """Retransmission timing.

    :param timeout: first retransmission timeout in seconds when the client did not negotiate one.
    :param backoff: multiplier applied to the timeout after each consecutive timeout.
    :param max_timeout: cap for the backed-off timeout (never below the negotiated one).
    :param max_retries: consecutive timeouts tolerated; one more ends the transfer.
    """

    timeout: float = 1.0
    backoff: float = 2.0
    max_timeout: float = 8.0
    max_retries: int = 5

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.max_timeout <= 0 or self.backoff < 1 or self.max_retries < 0:
            raise ValueError(f"invalid retry policy {self!r}")


class TransferState(enum.StrEnum):
    IDLE = "idle"
    OACK = "oack"  # OACK sent, waiting for ACK 0
    SENDING = "sending"
    DONE = "done"


class ReadTransfer:
    """State of one read transfer. See the module docstring for events, actions and rules."""

    def __init__(self, reader: Reader, *, limits: OptionLimits | None = None, retry: RetryPolicy | None = None) -> None:
        self._reader = reader
        self._limits = limits or OptionLimits()
        self._retry = retry or RetryPolicy()
        self._state = TransferState.IDLE
        self._negotiated = Negotiated()
        self._oack = b""
        self._base_timeout = self._retry.timeout
        self._timeout = self._retry.timeout
        self._retries = 0
        self._acked = 0  # highest block (absolute, from 1) the client acknowledged
        self._sent = 0  # highest block (absolute) sent so far
        self._last: int | None = None  # absolute number of the final, short block once read

    @property
    def state(self) -> TransferState:
        return self._state

    @property
    def negotiated(self) -> Negotiated:
        return self._negotiated

    @property
    def blocks_acked(self) -> int:
        return self._acked

    def start(self, request: ReadRequest) -> list[Action]:
        """Begin the transfer for a decoded RRQ.

        :raises RuntimeError: if called twice (a caller bug, not a peer error).
        """
        if self._state is not TransferState.IDLE:
            raise RuntimeError(f"start() in state {self._state}")
        if request.mode == "mail":
            return self._abort(ErrorCode.ILLEGAL_OPERATION, "mail mode is not supported")
        self._negotiated = negotiate(request.options, file_size=self._reader.size, limits=self._limits)
        if self._negotiated.timeout is not None:
            self._base_timeout = float(self._negotiated.timeout)
        self._timeout = self._base_timeout
        if self._negotiated.accepted:
            self._state = TransferState.OACK
            self._oack = encode(OptionAck(self._negotiated.accepted))
            return [Send(self._oack), SetTimer(self._timeout)]
        self._state = TransferState.SENDING
        return self._send_window()

    def datagram(self, data: bytes) -> list[Action]:
        """Handle a datagram from the client's transfer ID."""
        if self._state is TransferState.SENDING and len(data) == 4 and data[0] == 0 and data[1] == _OP_ACK:
            # The hot path, one ACK per window: exactly what decode() would make an Ack of.
            return self._ack(data[2] << 8 | data[3])
        if self._state in (TransferState.IDLE, TransferState.DONE):
            return []
        try:
            packet = decode(data)
        except DecodeError:
            return []
        if isinstance(packet, Error):
            self._state = TransferState.DONE
            return [Finished(packet.code, packet.message, by_peer=True)]
        if not isinstance(packet, Ack):
            return []
        if self._state is TransferState.OACK:
            if packet.block != 0:
                return []
            self._state = TransferState.SENDING
            self._progress()
            return self._send_window()
        return self._ack(packet.block)

    def _ack(self, wire_block: int) -> list[Action]:
        """An ACK in state ``sending``; ``wire_block`` is the 16-bit number on the wire."""
        # Map the 16-bit number onto the outstanding window (acked, sent]; a window never spans
        # more than 65535 blocks, so the mapping is unambiguous.
        block = self._acked + ((wire_block - self._acked) & 0xFFFF)
        if block <= self._acked or block > self._sent:
            return []  # duplicate or stale ACK: see the Sorcerer's Apprentice note above
        self._acked = block
        self._progress()
        if block == self._last:
            self._state = TransferState.DONE
            return [Finished()]
        return self._send_window()

    def timeout(self) -> list[Action]:
        """Handle expiry of the timer set by the last :class:`SetTimer`."""
        if self._state not in (TransferState.OACK, TransferState.SENDING):
            return []
        self._retries += 1
        if self._retries > self._retry.max_retries:
            return self._abort(ErrorCode.NOT_DEFINED, "timed out waiting for ACK")
        cap = max(self._retry.max_timeout, self._base_timeout)
        self._timeout = min(self._timeout * self._retry.backoff, cap)
        if self._state is TransferState.OACK:
            return [Send(self._oack), SetTimer(self._timeout)]
        return self._send_window()

    def _progress(self) -> None:
        self._retries = 0
        self._timeout = self._base_timeout

    def _send_window(self) -> list[Action]:
        blksize = self._negotiated.blksize
        read, pack = self._reader.read, _DATA_HEADER.pack
        actions: list[Action] = []
        block = self._acked
        for _ in range(self._negotiated.windowsize):
            if self._last is not None and block >= self._last:
                break
            block += 1
            try:
                chunk = read((block - 1) * blksize, blksize)
            except OSError:
                return self._abort(ErrorCode.NOT_DEFINED, "read error")
            if len(chunk) > blksize:
                return self._abort(ErrorCode.NOT_DEFINED, "read error")
            if len(chunk) < blksize:
                self._last = block
            actions.append(Send(pack(_OP_DATA, block & 0xFFFF) + chunk))
        self._sent = max(self._sent, block)
        actions.append(SetTimer(self._timeout))
        return actions

    def _abort(self, code: ErrorCode, message: str) -> list[Action]:
        self._state = TransferState.DONE
        return [Send(encode(Error(code, message))), Finished(code, message)]
