"""The agent's LLDP parser (agent/lldp.py) against frames built by scapy's own LLDP layers, and
against broken ones."""

from __future__ import annotations

import struct

import pytest
from scapy.contrib.lldp import (
    LLDPDUChassisID,
    LLDPDUEndOfLLDPDU,
    LLDPDUGenericOrganisationSpecific,
    LLDPDUManagementAddress,
    LLDPDUPortDescription,
    LLDPDUPortID,
    LLDPDUSystemDescription,
    LLDPDUSystemName,
    LLDPDUTimeToLive,
)
from scapy.layers.l2 import Dot1Q, Ether

from agent.bootparams import BootParams, lldp_seconds
from agent.lldp import LldpError, parse_frame, parse_lldpdu

SWITCH_MAC = "0c:42:a1:00:10:07"
GROUP = "01:80:c2:00:00:0e"


def switch_frame(*extra: object, tagged: bool = False) -> bytes:
    """What a top-of-rack switch sends from port Ethernet1/7: MAC chassis ID, interface-name port ID."""
    tlvs = (LLDPDUChassisID(subtype=4, id=bytes.fromhex(SWITCH_MAC.replace(":", "")))
            / LLDPDUPortID(subtype=5, id=b"Ethernet1/7") / LLDPDUTimeToLive(ttl=120))
    for tlv in extra:
        tlvs = tlvs / tlv
    tlvs = tlvs / LLDPDUEndOfLLDPDU()
    head = Ether(dst=GROUP, src=SWITCH_MAC)
    frame = head / Dot1Q(vlan=110, type=0x88CC) / tlvs if tagged else head / tlvs
    return bytes(frame)


def test_a_switch_port_with_every_field() -> None:
    frame = switch_frame(
        LLDPDUPortDescription(description=b"server rack3-u7 eth0"), LLDPDUSystemName(system_name=b"tor-a.rack3"),
        LLDPDUSystemDescription(description=b"Arista Networks EOS version 4.30"),
        LLDPDUManagementAddress(management_address_subtype=1, management_address=bytes([10, 0, 3, 1]),
                                interface_numbering_subtype=2, interface_number=7),
        LLDPDUGenericOrganisationSpecific(org_code=0x0080C2, subtype=1, data=struct.pack("!H", 110)))
    assert parse_frame(frame) == {
        "chassis_id": SWITCH_MAC, "port_id": "Ethernet1/7", "ttl_s": 120,
        "port_description": "server rack3-u7 eth0", "system_name": "tor-a.rack3",
        "system_description": "Arista Networks EOS version 4.30", "management_address": "10.0.3.1", "vlan_id": 110}


def test_a_minimal_lldpdu_and_a_vlan_tagged_frame() -> None:
    minimal = parse_frame(switch_frame(tagged=True))
    assert (minimal["chassis_id"], minimal["port_id"], minimal["system_name"], minimal["vlan_id"]) == (
        SWITCH_MAC, "Ethernet1/7", None, None)
    # Locally assigned IDs are text; an IPv6 management address; control characters never get through.
    frame = bytes(Ether(dst=GROUP, src=SWITCH_MAC) / LLDPDUChassisID(subtype=7, id=b"rack3-tor\x1b[2J")
                  / LLDPDUPortID(subtype=7, id=b"42") / LLDPDUTimeToLive(ttl=0)
                  / LLDPDUSystemName(system_name=b"sw\nitch")
                  / LLDPDUManagementAddress(management_address_subtype=2, management_address=bytes(15) + b"\x01",
                                            interface_numbering_subtype=2, interface_number=1)
                  / LLDPDUEndOfLLDPDU())
    neighbour = parse_frame(frame)
    assert (neighbour["chassis_id"], neighbour["port_id"], neighbour["ttl_s"]) == ("rack3-tor[2J", "42", 0)
    assert neighbour["system_name"] == "switch" and neighbour["management_address"] == "::1"
    assert parse_lldpdu(frame[14:]) == neighbour


def tlv(kind: int, value: bytes, length: int | None = None) -> bytes:
    """A TLV by hand (scapy's LLDP layers refuse to build broken ones)."""
    return struct.pack("!H", (kind << 9) | (len(value) if length is None else length)) + value


LLDP_HEAD = bytes(Ether(dst=GROUP, src=SWITCH_MAC, type=0x88CC))
CHASSIS, PORT, TTL = tlv(1, b"\x07c"), tlv(2, b"\x05x"), tlv(3, b"\x00\x78")


@pytest.mark.parametrize(("frame", "words"), [
    (b"\x01\x80", "shorter than an Ethernet header"),
    (bytes(Ether(dst=GROUP, type=0x0800) / (b"\x00" * 40)), "is not LLDP"),
    (bytes(Ether(dst=GROUP, type=0x8100)) + b"\x00", "802.1Q tag is cut short"),
    (LLDP_HEAD + b"\x02", "header is cut short"),
    (LLDP_HEAD + tlv(1, b"\x04abc", length=300), "says 300 bytes"),
    (LLDP_HEAD + PORT + TTL, "starts with the Chassis ID"),
    (LLDP_HEAD + CHASSIS + TTL + PORT, "starts with the Chassis ID"),
    (LLDP_HEAD + tlv(1, b"\x04") + PORT + TTL, "shorter than its subtype"),
    (LLDP_HEAD + CHASSIS + PORT + tlv(3, b"\x01"), "TTL TLV is not two bytes"),
    (LLDP_HEAD, "starts with the Chassis ID"),
    (LLDP_HEAD + tlv(0, b""), "starts with the Chassis ID"),
])
def test_a_broken_frame_is_refused_with_the_reason(frame: bytes, words: str) -> None:
    with pytest.raises(LldpError, match=words):
        parse_frame(frame)


def test_odd_optional_tlvs_are_ignored_not_fatal() -> None:
    neighbour = parse_frame(switch_frame(
        LLDPDUGenericOrganisationSpecific(org_code=0x0080C2, subtype=1, data=struct.pack("!H", 4095)),  # reserved
        LLDPDUGenericOrganisationSpecific(org_code=0x00120F, subtype=1, data=b"\x03\x6c\x00\x00\x10"),  # 802.3 MAC/PHY
        LLDPDUManagementAddress(management_address_subtype=1, management_address=b"\x0a\x00",  # an address too short
                                interface_numbering_subtype=2, interface_number=1)))
    assert neighbour["vlan_id"] is None and neighbour["management_address"] is None


@pytest.mark.parametrize(("text", "seconds"), [
    (None, 0.0), ("", 0.0), ("35", 35.0), ("2.5", 2.5), ("-3", 0.0), ("nan", 0.0), ("soon", 0.0), ("9999", 300.0)])
def test_the_kernel_argument_that_turns_listening_on(text: str | None, seconds: float) -> None:
    assert lldp_seconds(text) == seconds
    cmdline = "ingot.url=http://10.0.0.1:8080" + (f" ingot.lldp={text}" if text is not None else "")
    assert BootParams.from_cmdline(cmdline).lldp_s == seconds
