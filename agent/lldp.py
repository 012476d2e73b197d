"""LLDP (IEEE 802.1AB): which switch port each of the server's NICs is cabled to.

A switch sends an LLDPDU from each port every 30 s or so (``tx-interval``), to the multicast
address 01:80:c2:00:00:0e, which bridges never forward: what a NIC hears is its own neighbour.
:func:`parse_frame` is sans-I/O (an Ethernet frame in, a :class:`Neighbour` out, or
:class:`LldpError` naming what is wrong); :func:`listen` opens one ``AF_PACKET`` socket per NIC,
joins the LLDP multicast group on it, and waits until each NIC has heard its neighbour or the time
is up. Listening is opt-in (``ingot.lldp=SECONDS`` on the kernel command line): waiting up to a
tx-interval on every inspection is too long to do by default.

Runs on the target (``python3-minimal`` plus ``libpython3-stdlib``): standard library only.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import TypedDict

ETH_P_LLDP = 0x88CC
ETH_P_8021Q = 0x8100
LLDP_MULTICAST = bytes.fromhex("0180c200000e")
MAX_TEXT = 255  # a TLV's value is at most 511 bytes; nothing here needs more than a line
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_MULTICAST = 0
PACKET_OUTGOING = 4

# TLV types (802.1AB-2016 table 8-1)
END, CHASSIS_ID, PORT_ID, TTL, PORT_DESCRIPTION, SYSTEM_NAME, SYSTEM_DESCRIPTION = 0, 1, 2, 3, 4, 5, 6
MANAGEMENT_ADDRESS, ORGANIZATIONAL = 8, 127
IEEE_8021_OUI, PORT_VLAN_ID = b"\x00\x80\xc2", 1
# Chassis and port ID subtypes whose value is a MAC address or a network address, not text.
_CHASSIS_MAC, _CHASSIS_NETWORK = 4, 5
_PORT_MAC, _PORT_NETWORK = 3, 4
_ADDRESS_FAMILIES = {1: 4, 2: 6}  # IANA address family -> IP version


class LldpError(ValueError):
    """A frame that is not a well-formed LLDPDU."""


class Neighbour(TypedDict):
    chassis_id: str
    port_id: str
    port_description: str | None
    system_name: str | None
    system_description: str | None
    management_address: str | None
    vlan_id: int | None
    ttl_s: int


def _text(value: bytes) -> str:
    """Printable text of a TLV value: control characters dropped, cut to :data:`MAX_TEXT`."""
    text = value.decode("utf-8", "replace")
    return "".join(ch for ch in text if ch.isprintable())[:MAX_TEXT].strip()


def _mac(value: bytes) -> str:
    return ":".join(f"{b:02x}" for b in value)


def _address(value: bytes) -> str | None:
    """An IANA-family-prefixed address (chassis/port ID subtype network address, management address)."""
    if not value:
        return None
    version = _ADDRESS_FAMILIES.get(value[0])
    raw = value[1:]
    if (version, len(raw)) in ((4, 4), (6, 16)):
        return str(ipaddress.ip_address(raw))
    return None


def _identifier(value: bytes, what: str, mac_subtype: int, network_subtype: int) -> str:
    if len(value) < 2:
        raise LldpError(f"the {what} TLV is shorter than its subtype and one byte")
    subtype, body = value[0], value[1:]
    if subtype == mac_subtype and len(body) == 6:
        return _mac(body)
    if subtype == network_subtype:
        return _address(body) or body.hex()
    text = _text(body)
    return text or body.hex()


def tlvs(payload: bytes) -> list[tuple[int, bytes]]:
    """The TLVs of an LLDPDU, up to the End TLV (or the payload's end).

    :raises LldpError: a TLV header or value that runs past the payload.
    """
    found: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(payload):
        if offset + 2 > len(payload):
            raise LldpError(f"a TLV header is cut short at byte {offset}")
        (header,) = struct.unpack_from("!H", payload, offset)
        kind, length = header >> 9, header & 0x1FF
        offset += 2
        if offset + length > len(payload):
            raise LldpError(f"TLV type {kind} says {length} bytes, {len(payload) - offset} are left")
        if kind == END:
            break
        found.append((kind, payload[offset:offset + length]))
        offset += length
    return found


def parse_lldpdu(payload: bytes) -> Neighbour:
    """A neighbour from an LLDPDU (the Ethernet payload).

    :raises LldpError: a malformed TLV, or the mandatory Chassis ID, Port ID and TTL not first and in
        that order.
    """
    found = tlvs(payload)
    if [kind for kind, _ in found[:3]] != [CHASSIS_ID, PORT_ID, TTL]:
        raise LldpError("an LLDPDU starts with the Chassis ID, Port ID and TTL TLVs")
    if len(found[2][1]) != 2:
        raise LldpError("the TTL TLV is not two bytes")
    neighbour: Neighbour = {
        "chassis_id": _identifier(found[0][1], "chassis ID", _CHASSIS_MAC, _CHASSIS_NETWORK),
        "port_id": _identifier(found[1][1], "port ID", _PORT_MAC, _PORT_NETWORK),
        "ttl_s": struct.unpack("!H", found[2][1])[0],
        "port_description": None, "system_name": None, "system_description": None,
        "management_address": None, "vlan_id": None,
    }
    for kind, value in found[3:]:
        if kind == PORT_DESCRIPTION:
            neighbour["port_description"] = _text(value) or None
        elif kind == SYSTEM_NAME:
            neighbour["system_name"] = _text(value) or None
        elif kind == SYSTEM_DESCRIPTION:
            neighbour["system_description"] = _text(value) or None
        elif kind == MANAGEMENT_ADDRESS and neighbour["management_address"] is None and value:
            neighbour["management_address"] = _address(value[1:1 + value[0]])
        elif kind == ORGANIZATIONAL and value[:3] == IEEE_8021_OUI and value[3:4] == bytes([PORT_VLAN_ID]) \
                and len(value) == 6:
            vlan = struct.unpack("!H", value[4:6])[0]
            neighbour["vlan_id"] = vlan if 1 <= vlan <= 4094 else None
    return neighbour


def parse_frame(frame: bytes) -> Neighbour:
    """A neighbour from a whole Ethernet frame (an 802.1Q tag is allowed).

    :raises LldpError: not an LLDP frame, or a malformed LLDPDU.
    """
    if len(frame) < 14:
        raise LldpError("shorter than an Ethernet header")
    offset = 12
    (ethertype,) = struct.unpack_from("!H", frame, offset)
    if ethertype == ETH_P_8021Q:
        offset += 4
        if len(frame) < offset + 2:
            raise LldpError("an 802.1Q tag is cut short")
        (ethertype,) = struct.unpack_from("!H", frame, offset)
    if ethertype != ETH_P_LLDP:
        raise LldpError(f"ethertype {ethertype:#06x} is not LLDP")
    return parse_lldpdu(frame[offset + 2:])


def _open(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_LLDP))
    try:
        sock.bind((interface, ETH_P_LLDP))
        index = socket.if_nametoindex(interface)
        # struct packet_mreq: the NIC's filter must let the LLDP group address in.
        request = struct.pack("iHH8s", index, PACKET_MR_MULTICAST, 6, LLDP_MULTICAST)
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, request)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def listen(interfaces: Sequence[str], wait_s: float, *,
           clock: Callable[[], float] = time.monotonic) -> tuple[dict[str, Neighbour], dict[str, str]]:
    """Listen on ``interfaces`` until each has heard a neighbour or ``wait_s`` has passed.

    :returns: the neighbour heard on each interface that heard one (the first well-formed frame), and
        why the others could not listen (an interface that cannot be opened is left out, not fatal).
    """
    sockets: dict[socket.socket, str] = {}
    problems: dict[str, str] = {}
    for name in interfaces:
        try:
            sockets[_open(name)] = name
        except OSError as exc:
            problems[name] = exc.strerror or str(exc)
    heard: dict[str, Neighbour] = {}
    deadline = clock() + wait_s
    try:
        while sockets and (left := deadline - clock()) > 0:
            readable, _, _ = select.select(list(sockets), [], [], left)
            for sock in readable:
                try:
                    frame, address = sock.recvfrom(2048)
                except OSError:
                    continue
                if address[2] == PACKET_OUTGOING:
                    continue  # our own frame, if anything here ever sends one
                try:
                    neighbour = parse_frame(frame)
                except LldpError:
                    continue  # a malformed frame is no neighbour; keep listening
                heard[sockets.pop(sock)] = neighbour
                sock.close()
    finally:
        for sock in sockets:
            sock.close()
    return heard, problems
