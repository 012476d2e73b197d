"""TFTP packet codec: bytes <-> frozen dataclasses, no I/O.

Theory of operation: :func:`decode` turns one UDP payload into exactly one packet object or raises
:class:`DecodeError`; :func:`encode` is its inverse. Nothing here knows about transfers, timers or
files - that is ``pxe.tftp.protocol`` - so the server can drop anything that fails to decode
without affecting other transfers.

Wire formats (RFC 1350 §5, RFC 2347 §2 for options and OACK), all integers big-endian::

    RRQ/WRQ  | opcode=1/2 | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | ... |
    DATA     | opcode=3 | block (2) | 0..65464 bytes |
    ACK      | opcode=4 | block (2) |
    ERROR    | opcode=5 | code (2) | message | 0 |
    OACK     | opcode=6 | opt1 | 0 | value1 | 0 | ... |

Strings are 7-bit ASCII (RFC 1350 calls them netascii). Option names and modes are
case-insensitive (RFC 1350 §5, RFC 2347 §2), so the decoder lower-cases them; option values and
filenames keep their case.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

__all__ = [
    "MAX_BLKSIZE",
    "MAX_DATAGRAM",
    "MODES",
    "Ack",
    "Data",
    "DecodeError",
    "Error",
    "ErrorCode",
    "Opcode",
    "OptionAck",
    "Packet",
    "ReadRequest",
    "WriteRequest",
    "decode",
    "encode",
]

# RFC 2348: the largest blksize a client may ask for (fits a 64 KiB IP datagram).
MAX_BLKSIZE = 65464
# Opcode (2) + block number (2) + the largest payload; nothing valid is longer than this.
MAX_DATAGRAM = 4 + MAX_BLKSIZE
# RFC 1350 §5 transfer modes. "mail" is obsolete but still well-formed; the transfer layer refuses it.
MODES = frozenset({"netascii", "octet", "mail"})

_U16 = struct.Struct("!H")
_U16_PAIR = struct.Struct("!HH")


class DecodeError(ValueError):
    """The datagram is not a well-formed TFTP packet. The transport logs it and drops it."""


class Opcode(enum.IntEnum):
    """RFC 1350 §5 opcodes, plus OACK from RFC 2347."""

    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(enum.IntEnum):
    """RFC 1350 appendix error codes, plus 8 from RFC 2347."""

    NOT_DEFINED = 0  # see the message
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5  # transfer ID, i.e. the UDP port pair
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_NEGOTIATION = 8  # RFC 2347: the receiver refuses the offered options


@dataclass(frozen=True)
class ReadRequest:
    """RRQ (opcode 1). ``options`` keeps the client's order; names are lower-case."""

    filename: str
    mode: str = "octet"
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteRequest:
    """WRQ (opcode 2). Decoded so the server can refuse it with a proper ERROR."""

    filename: str
    mode: str = "octet"
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Data:
    """DATA (opcode 3). ``block`` is the 16-bit wire number; it wraps after 65535."""

    block: int
    data: bytes


@dataclass(frozen=True)
class Ack:
    """ACK (opcode 4). Block 0 acknowledges an OACK (RFC 2347 §2)."""

    block: int


@dataclass(frozen=True)
class Error:
    """ERROR (opcode 5). ``code`` stays an ``int``: peers send values outside :class:`ErrorCode`."""

    code: int
    message: str = ""


@dataclass(frozen=True)
class OptionAck:
    """OACK (opcode 6): the options the server accepted, with the values it chose."""

    options: dict[str, str]


Packet = ReadRequest | WriteRequest | Data | Ack | Error | OptionAck


def decode(datagram: bytes) -> Packet:
    """Parse one UDP payload.

    :raises DecodeError: for anything malformed; no other exception escapes.
    """
    if len(datagram) > MAX_DATAGRAM:
        raise DecodeError(f"datagram of {len(datagram)} bytes exceeds {MAX_DATAGRAM}")
    if len(datagram) < 2:
        raise DecodeError("datagram shorter than an opcode")
    (opcode,) = _U16.unpack_from(datagram)
    body = datagram[2:]
    if opcode in (Opcode.RRQ, Opcode.WRQ):
        filename, mode, options = _decode_request(body)
        cls = ReadRequest if opcode == Opcode.RRQ else WriteRequest
        return cls(filename, mode, options)
    if opcode == Opcode.DATA:
        if len(body) < 2:
            raise DecodeError("DATA without a block number")
        return Data(_U16.unpack_from(body)[0], bytes(body[2:]))
    if opcode == Opcode.ACK:
        if len(body) != 2:
            raise DecodeError(f"ACK body must be 2 bytes, got {len(body)}")
        return Ack(_U16.unpack(body)[0])
    if opcode == Opcode.ERROR:
        if len(body) < 3 or body[-1] != 0:
            raise DecodeError("ERROR without a NUL-terminated message")
        (code,) = _U16.unpack_from(body)
        # The message is only ever logged, so a sloppy peer's bytes are replaced rather than rejected.
        return Error(code, body[2:-1].split(b"\0", 1)[0].decode("ascii", "replace"))
    if opcode == Opcode.OACK:
        fields = _split_fields(body)
        if not fields:
            raise DecodeError("OACK without options")
        return OptionAck(_pair_options(fields))
    raise DecodeError(f"unknown opcode {opcode}")


def encode(packet: Packet) -> bytes:
    """Serialise a packet.

    :raises ValueError: if the packet cannot be represented (block out of range, non-ASCII or
        NUL in a string, oversized payload). These are programming errors, not peer errors.
    """
    if isinstance(packet, ReadRequest | WriteRequest):
        opcode = Opcode.RRQ if isinstance(packet, ReadRequest) else Opcode.WRQ
        if not packet.filename:
            raise ValueError("empty filename")
        if packet.mode.lower() not in MODES:
            raise ValueError(f"unknown mode {packet.mode!r}")
        parts = [packet.filename, packet.mode, *_flatten(packet.options)]
        return _U16.pack(opcode) + b"".join(_cstring(p) for p in parts)
    if isinstance(packet, Data):
        if len(packet.data) > MAX_BLKSIZE:
            raise ValueError(f"DATA payload of {len(packet.data)} bytes exceeds {MAX_BLKSIZE}")
        return _U16_PAIR.pack(Opcode.DATA, _u16(packet.block)) + packet.data
    if isinstance(packet, Ack):
        return _U16_PAIR.pack(Opcode.ACK, _u16(packet.block))
    if isinstance(packet, Error):
        return _U16_PAIR.pack(Opcode.ERROR, _u16(packet.code)) + _cstring(packet.message)
    if isinstance(packet, OptionAck):
        if not packet.options:
            raise ValueError("OACK needs at least one option")
        return _U16.pack(Opcode.OACK) + b"".join(_cstring(p) for p in _flatten(packet.options))
    raise TypeError(f"not a TFTP packet: {packet!r}")


def _decode_request(body: bytes) -> tuple[str, str, dict[str, str]]:
    fields = _split_fields(body)
    if len(fields) < 2:
        raise DecodeError("request needs a filename and a mode")
    filename, mode = fields[0], fields[1].lower()
    if not filename:
        raise DecodeError("empty filename")
    if mode not in MODES:
        raise DecodeError(f"unknown mode {mode!r}")
    return filename, mode, _pair_options(fields[2:])


def _split_fields(body: bytes) -> list[str]:
    """Split a run of NUL-terminated ASCII strings; the last one must be terminated too."""
    if not body:
        return []
    if body[-1] != 0:
        raise DecodeError("string field is not NUL-terminated")
    try:
        text = body[:-1].decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecodeError("non-ASCII bytes in a string field") from exc
    return text.split("\0")


def _pair_options(fields: list[str]) -> dict[str, str]:
    if len(fields) % 2:
        raise DecodeError("option without a value")
    options: dict[str, str] = {}
    for name, value in zip(fields[::2], fields[1::2], strict=True):
        key = name.lower()
        if not key:
            raise DecodeError("empty option name")
        # RFC 2347 does not define repeats; refusing them avoids guessing which one the client meant.
        if key in options:
            raise DecodeError(f"option {key!r} given twice")
        options[key] = value
    return options


def _flatten(options: dict[str, str]) -> list[str]:
    return [s for pair in options.items() for s in pair]


def _cstring(text: str) -> bytes:
    if "\0" in text:
        raise ValueError(f"NUL inside string field {text!r}")
    return text.encode("ascii") + b"\0"


def _u16(value: int) -> int:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{value} does not fit in 16 bits")
    return value
