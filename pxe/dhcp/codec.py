"""Sans-I/O DHCPv4 codec: ``bytes`` <-> :class:`DhcpPacket` (RFC 2131, RFC 2132, RFC 3396).

Theory of operation
-------------------
:func:`decode` turns one UDP payload into an immutable :class:`DhcpPacket`; :func:`encode` does
the reverse. Neither touches a socket, a clock or a logger, so the server (``pxe/dhcp/server.py``)
is a thin loop of ``decode -> policy.decide -> encode`` and everything here is table-testable.

Wire layout (RFC 2131 §2, fig. 1)::

    op(1) htype(1) hlen(1) hops(1) xid(4) secs(2) flags(2)
    ciaddr(4) yiaddr(4) siaddr(4) giaddr(4) chaddr(16) sname(64) file(128)
    magic cookie 99.130.83.99 (4)  options(variable, TLV, ends with END)

Options are kept as an ordered mapping ``code -> value bytes``; the typed properties on
:class:`DhcpPacket` interpret the common ones. Decoding:

* PAD (0) is skipped; END (255) stops an options area; bytes after END are padding and ignored.
* Option overload (option 52, RFC 2132 §9.3) continues the options in ``file`` (1), ``sname``
  (2) or both (3), read in that order. The overloaded fields come back as ``b""`` and option 52
  itself is consumed, so the packet shows only the logical options.
* An option present several times is one long option: the values are concatenated in the order
  options, file, sname (RFC 3396 §5).
* The common options with a fixed format (see :data:`_CHECKS`) are validated, so once
  :func:`decode` returns, the typed properties do not raise.

Any malformed input raises :class:`DecodeError` and only that; the transport drops the datagram.

Encoding writes options in mapping order, splits values longer than 255 bytes into consecutive
instances (RFC 3396 §6), appends END, pads to the 300-byte BOOTP minimum (RFC 1542 §3.2.1) and
raises :class:`EncodeError` if the result is longer than ``max_size``. It never uses option
overload itself: a reply that does not fit is a policy bug to be fixed by sending fewer options.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "BOOTP_MIN_SIZE",
    "BROADCAST_FLAG",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAGIC_COOKIE",
    "MAX_PACKET_SIZE",
    "DecodeError",
    "DhcpPacket",
    "EncodeError",
    "MessageType",
    "Op",
    "Option",
    "decode",
    "encode",
    "encode_ip",
    "encode_ips",
    "encode_text",
    "encode_u16",
    "encode_u32",
]

MAGIC_COOKIE: Final = b"\x63\x82\x53\x63"  # RFC 2131 §3 / RFC 1497: 99.130.83.99
BOOTP_MIN_SIZE: Final = 300  # RFC 1542 §3.2.1: some relays and old clients drop shorter BOOTP messages
MAX_PACKET_SIZE: Final = 65535  # largest UDP payload length field; anything longer is not one datagram
#: RFC 2131 §2: every client accepts a 576-octet IP datagram, i.e. 576 - 20 (IP) - 8 (UDP) of DHCP.
DEFAULT_MAX_MESSAGE_SIZE: Final = 548
BROADCAST_FLAG: Final = 0x8000  # RFC 2131 §2, fig. 2: leftmost bit of flags

_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # RFC 2131 §2, fig. 1
_FIXED_SIZE: Final = _HEADER.size + len(MAGIC_COOKIE)  # 240
_SNAME_LEN: Final = 64
_FILE_LEN: Final = 128
_CHADDR_LEN: Final = 16


class DecodeError(ValueError):
    """The bytes are not a well-formed DHCPv4 message. The only exception :func:`decode` raises."""


class EncodeError(ValueError):
    """A :class:`DhcpPacket` cannot be put on the wire (field out of range, too big for the client)."""


class Op(IntEnum):
    """BOOTP ``op`` (RFC 951 / RFC 2131 §2)."""

    BOOTREQUEST = 1
    BOOTREPLY = 2


class MessageType(IntEnum):
    """Option 53 values (RFC 2132 §9.6; 9 RFC 3203; 10-13 RFC 4388)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8
    FORCERENEW = 9
    LEASEQUERY = 10
    LEASEUNASSIGNED = 11
    LEASEUNKNOWN = 12
    LEASEACTIVE = 13


class Option(IntEnum):
    """Option codes this codec knows by name (RFC 2132 unless noted)."""

    PAD = 0
    SUBNET_MASK = 1  # §3.3
    ROUTER = 3  # §3.5
    DNS_SERVERS = 6  # §3.8
    HOST_NAME = 12  # §3.14
    DOMAIN_NAME = 15  # §3.17
    BROADCAST_ADDRESS = 28  # §5.3
    NTP_SERVERS = 42  # §8.3
    VENDOR_SPECIFIC = 43  # §8.4
    REQUESTED_IP = 50  # §9.1
    LEASE_TIME = 51  # §9.2
    OVERLOAD = 52  # §9.3
    MESSAGE_TYPE = 53  # §9.6
    SERVER_ID = 54  # §9.7
    PARAMETER_REQUEST_LIST = 55  # §9.8
    MAX_MESSAGE_SIZE = 57  # §9.10
    VENDOR_CLASS = 60  # §9.13
    CLIENT_ID = 61  # §9.14
    TFTP_SERVER_NAME = 66  # §9.4
    BOOTFILE_NAME = 67  # §9.5
    USER_CLASS = 77  # RFC 3004
    CLIENT_ARCH = 93  # RFC 4578 §2.1
    CLIENT_NDI = 94  # RFC 4578 §2.2
    CLIENT_MACHINE_ID = 97  # RFC 4578 §2.3 (UUID/GUID)
    END = 255


# --- value helpers: bytes -> typed (raise DecodeError) and typed -> bytes ----------------------


def _one_ip(code: int, value: bytes) -> IPv4Address:
    if len(value) != 4:
        raise DecodeError(f"option {code}: expected 4 bytes (IPv4 address), got {len(value)}")
    return IPv4Address(value)


def _ips(code: int, value: bytes) -> tuple[IPv4Address, ...]:
    if not value or len(value) % 4:
        raise DecodeError(f"option {code}: expected a non-empty multiple of 4 bytes, got {len(value)}")
    return tuple(IPv4Address(value[i : i + 4]) for i in range(0, len(value), 4))


def _uint(code: int, value: bytes, size: int) -> int:
    if len(value) != size:
        raise DecodeError(f"option {code}: expected {size} bytes, got {len(value)}")
    return int.from_bytes(value, "big")


def _text(value: bytes) -> str:
    # RFC 2132 says these are not NUL terminated, but Windows and some PXE ROMs add one anyway.
    # Names are not guaranteed ASCII, so undecodable bytes are replaced rather than rejected.
    return value.rstrip(b"\x00").decode("utf-8", errors="replace")


def _message_type(value: bytes) -> MessageType:
    raw = _uint(Option.MESSAGE_TYPE, value, 1)
    try:
        return MessageType(raw)
    except ValueError:
        raise DecodeError(f"option 53: unknown DHCP message type {raw}") from None


def _client_arch(value: bytes) -> tuple[int, ...]:
    if not value or len(value) % 2:
        raise DecodeError(f"option 93: expected a non-empty multiple of 2 bytes, got {len(value)}")
    return tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2))


def _client_ndi(value: bytes) -> tuple[int, int, int]:
    if len(value) != 3:
        raise DecodeError(f"option 94: expected 3 bytes (type, major, minor), got {len(value)}")
    return value[0], value[1], value[2]


def _machine_id(value: bytes) -> bytes:
    # RFC 4578 §2.3: type 0 followed by a 16-byte GUID; nothing else is defined.
    if len(value) != 17 or value[0] != 0:
        raise DecodeError(f"option 97: expected type 0 and a 16-byte GUID, got {len(value)} bytes")
    return value[1:]


def _max_message_size(value: bytes) -> int:
    return _uint(Option.MAX_MESSAGE_SIZE, value, 2)


#: Fixed-format options validated by decode(), so the typed accessors cannot fail afterwards.
_CHECKS: Final[dict[int, Callable[[bytes], object]]] = {
    Option.SUBNET_MASK: lambda v: _one_ip(1, v),
    Option.ROUTER: lambda v: _ips(3, v),
    Option.DNS_SERVERS: lambda v: _ips(6, v),
    Option.BROADCAST_ADDRESS: lambda v: _one_ip(28, v),
    Option.NTP_SERVERS: lambda v: _ips(42, v),
    Option.REQUESTED_IP: lambda v: _one_ip(50, v),
    Option.LEASE_TIME: lambda v: _uint(51, v, 4),
    Option.MESSAGE_TYPE: _message_type,
    Option.SERVER_ID: lambda v: _one_ip(54, v),
    Option.MAX_MESSAGE_SIZE: _max_message_size,
    Option.CLIENT_ARCH: _client_arch,
    Option.CLIENT_NDI: _client_ndi,
    Option.CLIENT_MACHINE_ID: _machine_id,
}


def encode_ip(address: IPv4Address | str) -> bytes:
    """One IPv4 address as option bytes (options 1, 28, 50, 54)."""
    return IPv4Address(address).packed


def encode_ips(addresses: Iterable[IPv4Address | str]) -> bytes:
    """A list of IPv4 addresses as option bytes (options 3, 6, 42)."""
    return b"".join(IPv4Address(a).packed for a in addresses)


def encode_u16(value: int) -> bytes:
    """A 16-bit unsigned option value (option 57)."""
    return value.to_bytes(2, "big")


def encode_u32(value: int) -> bytes:
    """A 32-bit unsigned option value (option 51, 58, 59)."""
    return value.to_bytes(4, "big")


def encode_text(value: str) -> bytes:
    """A text option (12, 15, 66, 67), not NUL terminated (RFC 2132 §2)."""
    return value.encode("utf-8")


# --- the packet --------------------------------------------------------------------------------

_ZERO_IP: Final = IPv4Address(0)


@dataclass(frozen=True, slots=True)
class DhcpPacket:
    """One DHCPv4 message. Immutable; build replies with :func:`dataclasses.replace`.

    Fields are the RFC 2131 §2 header, in wire order. ``chaddr`` is normalised to 16 bytes and
    ``sname``/``file`` have trailing NULs stripped, so a decoded packet compares equal to the
    one it was encoded from. ``options`` is a read-only ordered mapping ``code -> bytes``
    without PAD, END or (after decoding) option 52. Packets compare by value but are not
    hashable, because ``options`` is a mapping.
    """

    op: int = Op.BOOTREQUEST  # 1 request, 2 reply
    htype: int = 1  # hardware type, ARP hrd numbers (1 = Ethernet)
    hlen: int = 6  # hardware address length, 0..16
    hops: int = 0  # relay agent hop count
    xid: int = 0  # transaction id chosen by the client
    secs: int = 0  # seconds since the client began acquiring
    flags: int = 0  # bit 15 = BROADCAST (RFC 2131 §2, fig. 2); others MBZ
    ciaddr: IPv4Address = _ZERO_IP  # client IP, if it already has one
    yiaddr: IPv4Address = _ZERO_IP  # "your" IP, the address being offered/assigned
    siaddr: IPv4Address = _ZERO_IP  # next server (TFTP) address
    giaddr: IPv4Address = _ZERO_IP  # relay agent address
    chaddr: bytes = b""  # client hardware address, 16 bytes on the wire
    sname: bytes = b""  # server host name, 64 bytes NUL padded (or overloaded options)
    file: bytes = b""  # boot file name, 128 bytes NUL padded (or overloaded options)
    options: Mapping[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise so equality survives a round trip; object.__setattr__ because frozen.
        if len(self.chaddr) > _CHADDR_LEN:
            raise ValueError(f"chaddr is at most {_CHADDR_LEN} bytes, got {len(self.chaddr)}")
        object.__setattr__(self, "chaddr", self.chaddr.ljust(_CHADDR_LEN, b"\x00"))
        object.__setattr__(self, "sname", self.sname.rstrip(b"\x00"))
        object.__setattr__(self, "file", self.file.rstrip(b"\x00"))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    # -- header helpers --

    @property
    def broadcast(self) -> bool:
        """The client asked for broadcast replies (RFC 2131 §4.1): it cannot receive unicast yet."""
        return bool(self.flags & BROADCAST_FLAG)

    @property
    def mac(self) -> str:
        """``chaddr`` cut to ``hlen``, as lowercase ``aa:bb:cc:dd:ee:ff``."""
        return self.chaddr[: min(self.hlen, _CHADDR_LEN)].hex(":")

    @property
    def server_name(self) -> str:
        """``sname`` as text (RFC 2131 §2: a NUL-terminated string)."""
        return _text(self.sname.split(b"\x00", 1)[0])

    @property
    def boot_file(self) -> str:
        """``file`` as text (RFC 2131 §2: a NUL-terminated string)."""
        return _text(self.file.split(b"\x00", 1)[0])

    # -- typed option accessors; None when the option is absent --

    def _get(self, code: int, parse: Callable[[bytes], Any]) -> Any:
        value = self.options.get(code)
        return None if value is None else parse(value)

    @property
    def message_type(self) -> MessageType | None:
        """Option 53. ``None`` means a plain BOOTP message."""
        result: MessageType | None = self._get(Option.MESSAGE_TYPE, _message_type)
        return result

    @property
    def subnet_mask(self) -> IPv4Address | None:
        """Option 1."""
        return self._ip(Option.SUBNET_MASK)

    @property
    def routers(self) -> tuple[IPv4Address, ...] | None:
        """Option 3."""
        return self._ip_list(Option.ROUTER)

    @property
    def dns_servers(self) -> tuple[IPv4Address, ...] | None:
        """Option 6."""
        return self._ip_list(Option.DNS_SERVERS)

    @property
    def host_name(self) -> str | None:
        """Option 12."""
        return self._str(Option.HOST_NAME)

    @property
    def domain_name(self) -> str | None:
        """Option 15."""
        return self._str(Option.DOMAIN_NAME)

    @property
    def broadcast_address(self) -> IPv4Address | None:
        """Option 28."""
        return self._ip(Option.BROADCAST_ADDRESS)

    @property
    def ntp_servers(self) -> tuple[IPv4Address, ...] | None:
        """Option 42."""
        return self._ip_list(Option.NTP_SERVERS)

    @property
    def requested_ip(self) -> IPv4Address | None:
        """Option 50."""
        return self._ip(Option.REQUESTED_IP)

    @property
    def lease_time(self) -> int | None:
        """Option 51, seconds (0xFFFFFFFF = infinite)."""
        result: int | None = self._get(Option.LEASE_TIME, lambda v: _uint(51, v, 4))
        return result

    @property
    def server_id(self) -> IPv4Address | None:
        """Option 54."""
        return self._ip(Option.SERVER_ID)

    @property
    def parameter_request_list(self) -> tuple[int, ...] | None:
        """Option 55: codes the client wants, in its order of preference."""
        value = self.options.get(Option.PARAMETER_REQUEST_LIST)
        return None if value is None else tuple(value)

    @property
    def max_message_size(self) -> int | None:
        """Option 57 as sent. RFC 2132 §9.10 says at least 576; clamping is the policy's job."""
        result: int | None = self._get(Option.MAX_MESSAGE_SIZE, _max_message_size)
        return result

    @property
    def vendor_class(self) -> bytes | None:
        """Option 60, raw (e.g. ``PXEClient:Arch:00000:UNDI:002001``)."""
        return self.options.get(Option.VENDOR_CLASS)

    @property
    def client_id(self) -> bytes | None:
        """Option 61, raw (usually type 1 + MAC, or an RFC 4361 IAID/DUID)."""
        return self.options.get(Option.CLIENT_ID)

    @property
    def tftp_server_name(self) -> str | None:
        """Option 66."""
        return self._str(Option.TFTP_SERVER_NAME)

    @property
    def bootfile_name(self) -> str | None:
        """Option 67."""
        return self._str(Option.BOOTFILE_NAME)

    @property
    def user_class(self) -> bytes | None:
        """Option 77, raw. iPXE sends the bare string ``iPXE`` rather than RFC 3004's framing."""
        return self.options.get(Option.USER_CLASS)

    @property
    def client_archs(self) -> tuple[int, ...] | None:
        """Option 93: architecture codes in the client's order of preference (RFC 4578 §2.1)."""
        result: tuple[int, ...] | None = self._get(Option.CLIENT_ARCH, _client_arch)
        return result

    @property
    def client_arch(self) -> int | None:
        """Option 93, first (preferred) code."""
        archs = self.client_archs
        return archs[0] if archs else None

    @property
    def client_ndi(self) -> tuple[int, int, int] | None:
        """Option 94: (interface type, major, minor); type 1 = UNDI (RFC 4578 §2.2)."""
        result: tuple[int, int, int] | None = self._get(Option.CLIENT_NDI, _client_ndi)
        return result

    @property
    def client_machine_id(self) -> bytes | None:
        """Option 97: the 16 GUID bytes as sent, without the type byte (RFC 4578 §2.3).

        Left raw on purpose: firmware disagrees on the byte order of the first three fields.
        """
        result: bytes | None = self._get(Option.CLIENT_MACHINE_ID, _machine_id)
        return result

    def _ip(self, code: int) -> IPv4Address | None:
        result: IPv4Address | None = self._get(code, lambda v: _one_ip(code, v))
        return result

    def _ip_list(self, code: int) -> tuple[IPv4Address, ...] | None:
        result: tuple[IPv4Address, ...] | None = self._get(code, lambda v: _ips(code, v))
        return result

    def _str(self, code: int) -> str | None:
        value = self.options.get(code)
        return None if value is None else _text(value)


# --- decode ------------------------------------------------------------------------------------


def _parse_area(area: bytes, where: str, into: dict[int, bytes], *, allow_overload: bool) -> None:
    """Read TLV options from one area into ``into``, concatenating repeats (RFC 3396 §5)."""
    i = 0
    end = len(area)
    while i < end:
        code = area[i]
        if code == Option.END:
            return
        if code == Option.PAD:
            i += 1
            continue
        if i + 1 >= end:
            raise DecodeError(f"{where}: option {code} has no length byte")
        length = area[i + 1]
        start = i + 2
        if start + length > end:
            raise DecodeError(f"{where}: option {code} length {length} runs past the end of the area")
        if code == Option.OVERLOAD and not allow_overload:
            raise DecodeError(f"{where}: option 52 (overload) may only appear in the options field")
        into[code] = into.get(code, b"") + area[start : start + length]
        i = start + length
    raise DecodeError(f"{where}: no END option (255)")


def decode(data: bytes | bytearray | memoryview) -> DhcpPacket:
    """Parse one DHCPv4/BOOTP-with-cookie message.

    :param data: a UDP payload (copied, so the caller may reuse its buffer).
    :raises DecodeError: the message is malformed; the message says how. No other exception.
    :returns: the packet, with options concatenated (RFC 3396) and overload (option 52) resolved.
    """
    try:
        return _decode(bytes(data))
    except DecodeError:
        raise
    except (ValueError, TypeError, IndexError, struct.error) as exc:  # pragma: no cover - defence in depth
        raise DecodeError(f"malformed DHCP message: {exc}") from exc


def _decode(data: bytes) -> DhcpPacket:
    if len(data) > MAX_PACKET_SIZE:
        raise DecodeError(f"message is {len(data)} bytes, more than a UDP datagram can carry ({MAX_PACKET_SIZE})")
    if len(data) < _FIXED_SIZE:
        raise DecodeError(f"message is {len(data)} bytes, shorter than the {_FIXED_SIZE}-byte fixed header")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file) = (
        _HEADER.unpack_from(data)
    )
    if data[_HEADER.size : _FIXED_SIZE] != MAGIC_COOKIE:
        raise DecodeError(f"bad magic cookie {data[_HEADER.size : _FIXED_SIZE].hex()}, expected 63825363")
    if hlen > _CHADDR_LEN:
        raise DecodeError(f"hlen {hlen} is larger than chaddr ({_CHADDR_LEN} bytes)")

    options: dict[int, bytes] = {}
    _parse_area(data[_FIXED_SIZE:], "options", options, allow_overload=True)
    overload_value = options.pop(Option.OVERLOAD, None)
    if overload_value is not None:
        if len(overload_value) != 1 or overload_value[0] not in (1, 2, 3):
            raise DecodeError(f"option 52 (overload) must be one byte 1, 2 or 3, got {overload_value.hex() or 'empty'}")
        overload = overload_value[0]
        # RFC 2131 §4.1 / RFC 3396 §5: options field, then file, then sname.
        if overload & 1:
            _parse_area(file, "file (overloaded)", options, allow_overload=False)
            file = b""
        if overload & 2:
            _parse_area(sname, "sname (overloaded)", options, allow_overload=False)
            sname = b""

    for code, check in _CHECKS.items():
        if code in options:
            check(options[code])

    return DhcpPacket(
        op=op,
        htype=htype,
        hlen=hlen,
        hops=hops,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=IPv4Address(ciaddr),
        yiaddr=IPv4Address(yiaddr),
        siaddr=IPv4Address(siaddr),
        giaddr=IPv4Address(giaddr),
        chaddr=chaddr,
        sname=sname,
        file=file,
        options=options,
    )


# --- encode ------------------------------------------------------------------------------------


def _check_field(name: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise EncodeError(f"{name}={value} does not fit in {bits} bits")


def encode(packet: DhcpPacket, *, max_size: int | None = None) -> bytes:
    """Serialise ``packet``.

    :param packet: the message; options are written in mapping order.
    :param max_size: the largest message (UDP payload) the receiver accepts. The policy derives
        it from the request's option 57 (minus IP/UDP headers, 28 bytes, and clamped to at least
        :data:`DEFAULT_MAX_MESSAGE_SIZE`). ``None`` only enforces :data:`MAX_PACKET_SIZE`.
    :raises EncodeError: a header field is out of range, an option code is PAD/END/out of range,
        ``sname``/``file`` are too long, or the result is longer than ``max_size``.
    :returns: the wire bytes, at least :data:`BOOTP_MIN_SIZE` long.
    """
    for name, number, bits in (
        ("op", packet.op, 8),
        ("htype", packet.htype, 8),
        ("hlen", packet.hlen, 8),
        ("hops", packet.hops, 8),
        ("xid", packet.xid, 32),
        ("secs", packet.secs, 16),
        ("flags", packet.flags, 16),
    ):
        _check_field(name, number, bits)
    if len(packet.sname) > _SNAME_LEN:
        raise EncodeError(f"sname is {len(packet.sname)} bytes, the field holds {_SNAME_LEN}")
    if len(packet.file) > _FILE_LEN:
        raise EncodeError(f"file is {len(packet.file)} bytes, the field holds {_FILE_LEN}")

    out = bytearray(
        _HEADER.pack(
            packet.op,
            packet.htype,
            packet.hlen,
            packet.hops,
            packet.xid,
            packet.secs,
            packet.flags,
            packet.ciaddr.packed,
            packet.yiaddr.packed,
            packet.siaddr.packed,
            packet.giaddr.packed,
            packet.chaddr,
            packet.sname,  # struct's "s" NUL-pads to the field width
            packet.file,
        )
    )
    out += MAGIC_COOKIE
    for code, value in packet.options.items():
        if not 0 < code < Option.END:
            raise EncodeError(f"option code {code} cannot be encoded (PAD/END are structural, codes are 1..254)")
        if code == Option.OVERLOAD:
            raise EncodeError("option 52 (overload) is not written by this encoder")
        if not value:
            out += bytes((code, 0))
            continue
        # RFC 3396 §6: a value over 255 bytes goes out as consecutive instances of the same code.
        for start in range(0, len(value), 255):
            chunk = value[start : start + 255]
            out += bytes((code, len(chunk))) + chunk
    out.append(Option.END)
    if len(out) < BOOTP_MIN_SIZE:
        out += bytes(BOOTP_MIN_SIZE - len(out))

    limit = MAX_PACKET_SIZE if max_size is None else min(max_size, MAX_PACKET_SIZE)
    if len(out) > limit:
        raise EncodeError(
            f"encoded message is {len(out)} bytes but the receiver accepts at most {limit}; send fewer options"
        )
    return bytes(out)
