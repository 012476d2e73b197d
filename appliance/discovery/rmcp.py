"""RMCP codec for BMC discovery: ASF Presence Ping/Pong and session-less Get Channel Authentication Capabilities.

Sans-I/O: functions turn values into datagrams and datagrams into values; no sockets here (the scanner
owns those). Anything that is not a well-formed message of the kinds we know raises :class:`DecodeError`,
and only that, so a transport can drop junk with one ``except``.

References: DMTF ASF 2.0 (DSP0136) §3.2 for RMCP and the Presence Ping/Pong; IPMI v2.0 §13.2 (RMCP),
§13.6 (IPMI v1.5 session header), §22.13 (Get Channel Authentication Capabilities).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RMCP_VERSION = 0x06
RMCP_SEQ_NO_ACK = 0xFF  # sequence 255: "do not send an RMCP ACK"
CLASS_ASF = 0x06
CLASS_IPMI = 0x07
ASF_IANA = 4542  # the ASF message header carries the IANA number of the DMTF
ASF_PRESENCE_PING = 0x80
ASF_PRESENCE_PONG = 0x40

BMC_SLAVE_ADDRESS = 0x20
REMOTE_CONSOLE_SWID = 0x81  # software ID of a remote console (IPMI §5.5)
NETFN_APP_REQUEST = 0x06
NETFN_APP_RESPONSE = 0x07
CMD_GET_CHANNEL_AUTH_CAPS = 0x38
CHANNEL_THIS = 0x0E  # "the channel this request arrived on"

AUTHTYPE_NONE = 0x00
AUTHTYPE_RMCP_PLUS = 0x06


class DecodeError(ValueError):
    """The bytes are not a message this codec understands (truncated, bad checksum, wrong type, ...)."""


@dataclass(frozen=True)
class PresencePing:
    tag: int = 0
    sequence: int = RMCP_SEQ_NO_ACK


@dataclass(frozen=True)
class PresencePong:
    """ASF Presence Pong. ``entities`` bit 7 says IPMI is supported; bits 3..0 are the ASF version."""

    tag: int = 0
    iana: int = ASF_IANA
    oem: int = 0
    entities: int = 0x81
    interactions: int = 0x00
    sequence: int = RMCP_SEQ_NO_ACK

    @property
    def ipmi_supported(self) -> bool:
        return bool(self.entities & 0x80)

    @property
    def asf_version(self) -> str | None:
        return "1.0" if self.entities & 0x0F == 0x01 else None


@dataclass(frozen=True)
class AuthCapsRequest:
    channel: int = CHANNEL_THIS
    privilege: int = 0x04  # administrator; only informs the answer, grants nothing
    ipmi20: bool = True  # ask for the IPMI v2.0 extended data (bit 7 of the channel byte)
    sequence: int = 0  # rqSeq, 0..63: lets a caller tell its own replies apart


@dataclass(frozen=True)
class AuthCapsResponse:
    """The answer to Get Channel Authentication Capabilities, flattened."""

    completion_code: int = 0
    channel: int = 1
    auth_types: int = 0x80  # bit 7: IPMI v2.0 extended capabilities; bits 5..0: v1.5 auth types
    status: int = 0x04  # Kg / per-message / user-level auth / login kinds (IPMI table 22-15, byte 3)
    extended: int = 0x02  # bit 1: IPMI v2.0 (RMCP+) connections; bit 0: IPMI v1.5 connections
    oem_id: int = 0
    oem_aux: int = 0
    sequence: int = 0

    @property
    def ipmi20_extended(self) -> bool:
        return bool(self.auth_types & 0x80)

    @property
    def supports_ipmi20(self) -> bool:
        return self.ipmi20_extended and bool(self.extended & 0x02)

    @property
    def supports_ipmi15(self) -> bool:
        # Without the extended data a v1.5-only BMC is implied.
        return not self.ipmi20_extended or bool(self.extended & 0x01)

    @property
    def ipmi_version(self) -> str:
        return "2.0" if self.supports_ipmi20 else "1.5"


Message = PresencePing | PresencePong | AuthCapsRequest | AuthCapsResponse


def checksum(data: bytes) -> int:
    """IPMI two's-complement checksum: the byte that makes ``sum(data) + it`` zero modulo 256."""
    return -sum(data) & 0xFF


def _u8(name: str, value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must fit in one byte, got {value}")
    return value


# --- encoding ------------------------------------------------------------------------------------------------


def _asf(sequence: int, msg_type: int, tag: int, data: bytes) -> bytes:
    header = bytes([RMCP_VERSION, 0x00, _u8("sequence", sequence), CLASS_ASF])
    return header + struct.pack(">IBBBB", ASF_IANA, msg_type, _u8("tag", tag), 0, len(data)) + data


def encode_presence_ping(ping: PresencePing | None = None) -> bytes:
    ping = ping or PresencePing()
    return _asf(ping.sequence, ASF_PRESENCE_PING, ping.tag, b"")


def encode_presence_pong(pong: PresencePong) -> bytes:
    data = struct.pack(">IIBB6x", pong.iana, pong.oem, _u8("entities", pong.entities),
                       _u8("interactions", pong.interactions))
    return _asf(pong.sequence, ASF_PRESENCE_PONG, pong.tag, data)


def _ipmi15_sessionless(rs_addr: int, netfn: int, rq_addr: int, seq: int, cmd: int, body: bytes) -> bytes:
    """An IPMI LAN message outside any session (auth type none, session id and sequence 0)."""
    head = bytes([rs_addr, netfn << 2])
    tail = bytes([rq_addr, (seq & 0x3F) << 2, cmd]) + body
    msg = head + bytes([checksum(head)]) + tail + bytes([checksum(tail)])
    session = struct.pack("<BIIB", AUTHTYPE_NONE, 0, 0, len(msg))
    return bytes([RMCP_VERSION, 0x00, RMCP_SEQ_NO_ACK, CLASS_IPMI]) + session + msg


def encode_auth_caps_request(request: AuthCapsRequest | None = None) -> bytes:
    request = request or AuthCapsRequest()
    if not 0 <= request.channel <= 0x0F:
        raise ValueError(f"channel must be 0..15, got {request.channel}")
    channel = request.channel | (0x80 if request.ipmi20 else 0)
    body = bytes([channel, _u8("privilege", request.privilege) & 0x0F])
    return _ipmi15_sessionless(BMC_SLAVE_ADDRESS, NETFN_APP_REQUEST, REMOTE_CONSOLE_SWID, request.sequence,
                               CMD_GET_CHANNEL_AUTH_CAPS, body)


def encode_auth_caps_response(response: AuthCapsResponse) -> bytes:
    oem = response.oem_id.to_bytes(3, "little")
    body = bytes([_u8("completion_code", response.completion_code), _u8("channel", response.channel),
                  _u8("auth_types", response.auth_types), _u8("status", response.status),
                  _u8("extended", response.extended)]) + oem + bytes([_u8("oem_aux", response.oem_aux)])
    return _ipmi15_sessionless(REMOTE_CONSOLE_SWID, NETFN_APP_RESPONSE, BMC_SLAVE_ADDRESS, response.sequence,
                               CMD_GET_CHANNEL_AUTH_CAPS, body)


def encode(message: Message) -> bytes:
    if isinstance(message, PresencePing):
        return encode_presence_ping(message)
    if isinstance(message, PresencePong):
        return encode_presence_pong(message)
    if isinstance(message, AuthCapsRequest):
        return encode_auth_caps_request(message)
    return encode_auth_caps_response(message)


# --- decoding ------------------------------------------------------------------------------------------------


def decode(data: bytes) -> Message:
    """Decode one RMCP datagram into one of the four message kinds, or raise :class:`DecodeError`."""
    data = bytes(data)
    if len(data) < 4:
        raise DecodeError(f"RMCP header needs 4 bytes, got {len(data)}")
    version, _reserved, sequence, klass = data[0], data[1], data[2], data[3]
    if version != RMCP_VERSION:
        raise DecodeError(f"not RMCP version 1.0 (0x06): 0x{version:02x}")
    if klass & 0x80:
        raise DecodeError("RMCP ACK, not a message")
    if klass == CLASS_ASF:
        return _decode_asf(data[4:], sequence)
    if klass == CLASS_IPMI:
        return _decode_ipmi(data[4:])
    raise DecodeError(f"unknown RMCP message class 0x{klass:02x}")


def _decode_asf(data: bytes, sequence: int) -> PresencePing | PresencePong:
    if len(data) < 8:
        raise DecodeError(f"ASF header needs 8 bytes, got {len(data)}")
    iana, msg_type, tag, _reserved, length = struct.unpack_from(">IBBBB", data)
    if iana != ASF_IANA:
        raise DecodeError(f"ASF message with IANA {iana}, expected {ASF_IANA}")
    body = data[8:]
    if len(body) < length:
        raise DecodeError(f"ASF message truncated: {len(body)} of {length} data bytes")
    if msg_type == ASF_PRESENCE_PING:
        return PresencePing(tag=tag, sequence=sequence)
    if msg_type == ASF_PRESENCE_PONG:
        if length < 16:
            raise DecodeError(f"Presence Pong needs 16 data bytes, got {length}")
        pong_iana, oem, entities, interactions = struct.unpack_from(">IIBB", body)
        return PresencePong(tag=tag, iana=pong_iana, oem=oem, entities=entities, interactions=interactions,
                            sequence=sequence)
    raise DecodeError(f"unsupported ASF message type 0x{msg_type:02x}")


def _decode_ipmi(data: bytes) -> AuthCapsRequest | AuthCapsResponse:
    if not data:
        raise DecodeError("IPMI session header missing")
    authtype = data[0]
    if authtype == AUTHTYPE_RMCP_PLUS:
        # RMCP+ header: auth type, payload type, session id (4), sequence (4), payload length (2, LE).
        if len(data) < 12:
            raise DecodeError("RMCP+ session header truncated")
        payload_type = data[1]
        if payload_type & 0xC0:
            raise DecodeError("encrypted or authenticated payload outside a session")
        if payload_type != 0x00:
            raise DecodeError(f"RMCP+ payload type 0x{payload_type:02x} is not IPMI")
        length = int.from_bytes(data[10:12], "little")
        msg = data[12:12 + length]
    else:
        # IPMI v1.5 header: auth type, sequence (4), session id (4), [auth code (16)], length (1).
        offset = 9 if authtype == AUTHTYPE_NONE else 25
        if len(data) < offset + 1:
            raise DecodeError("IPMI v1.5 session header truncated")
        length = data[offset]
        msg = data[offset + 1:offset + 1 + length]
    if len(msg) != length:
        raise DecodeError(f"IPMI message truncated: {len(msg)} of {length} bytes")
    if length < 7:
        raise DecodeError(f"IPMI message too short: {length} bytes")
    if checksum(msg[:2]) != msg[2]:
        raise DecodeError("IPMI header checksum mismatch")
    if checksum(msg[3:-1]) != msg[-1]:
        raise DecodeError("IPMI data checksum mismatch")
    netfn, cmd, seq = msg[1] >> 2, msg[5], msg[4] >> 2
    body = msg[6:-1]
    if cmd != CMD_GET_CHANNEL_AUTH_CAPS:
        raise DecodeError(f"unsupported IPMI command 0x{netfn:02x}/0x{cmd:02x}")
    if netfn == NETFN_APP_REQUEST:
        if len(body) < 2:
            raise DecodeError("Get Channel Authentication Capabilities request needs 2 data bytes")
        return AuthCapsRequest(channel=body[0] & 0x0F, privilege=body[1] & 0x0F, ipmi20=bool(body[0] & 0x80),
                               sequence=seq)
    if netfn == NETFN_APP_RESPONSE:
        if not body:
            raise DecodeError("response without a completion code")
        if body[0] != 0:
            return AuthCapsResponse(completion_code=body[0], channel=0, auth_types=0, status=0, extended=0,
                                    sequence=seq)
        if len(body) < 9:
            raise DecodeError(f"Get Channel Authentication Capabilities response needs 9 bytes, got {len(body)}")
        return AuthCapsResponse(completion_code=0, channel=body[1], auth_types=body[2], status=body[3],
                                extended=body[4], oem_id=int.from_bytes(body[5:8], "little"), oem_aux=body[8],
                                sequence=seq)
    raise DecodeError(f"unexpected network function 0x{netfn:02x} for Get Channel Authentication Capabilities")
