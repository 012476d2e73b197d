"""The router advertisement the lab sends on its provisioning bridge (lab/ra.py), field by field,
read back with scapy's independent ICMPv6 decoder and with struct offsets from RFC 4861."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPrefixInfo, ICMPv6NDOptSrcLLAddr

from lab.ra import main, router_advertisement

MAC = bytes.fromhex("5254000a0b0c")
PREFIX = ipaddress.IPv6Network("fd00:100:7::/64")


def test_packet_layout_follows_rfc_4861() -> None:
    packet = router_advertisement(MAC, PREFIX)
    assert len(packet) == 16 + 8 + 32  # RA header, source link-layer option, prefix information option
    kind, code, checksum, hop_limit, flags, lifetime, reachable, retrans = struct.unpack_from("!BBHBBHII", packet)
    assert (kind, code, checksum) == (134, 0, 0)  # checksum left to the kernel
    assert (hop_limit, flags, lifetime, reachable, retrans) == (64, 0, 0, 0, 0)  # not a default router
    assert packet[16:24] == bytes([1, 1]) + MAC
    option, length, prefix_len, prefix_flags, valid, preferred, reserved = struct.unpack_from("!BBBBIII", packet, 24)
    assert (option, length, prefix_len, prefix_flags) == (3, 4, 64, 0xC0)
    assert (valid, preferred, reserved) == (3600, 1800, 0)
    assert packet[40:56] == PREFIX.network_address.packed


def test_scapy_reads_the_same_fields() -> None:
    ra = ICMPv6ND_RA(router_advertisement(MAC, PREFIX))
    assert (ra.type, ra.code, ra.chlim, ra.M, ra.O, ra.routerlifetime) == (134, 0, 64, 0, 0, 0)
    lla = ra[ICMPv6NDOptSrcLLAddr]
    assert lla.lladdr == "52:54:00:0a:0b:0c"
    info = ra[ICMPv6NDOptPrefixInfo]
    assert (info.prefixlen, info.L, info.A, info.validlifetime, info.preferredlifetime) == (64, 1, 1, 3600, 1800)
    assert ipaddress.IPv6Address(info.prefix) == PREFIX.network_address


def test_other_prefix_lengths_and_bad_macs() -> None:
    packet = router_advertisement(MAC, ipaddress.IPv6Network("fd12:3456:789a::/48"))
    assert packet[26] == 48
    assert packet[40:56] == ipaddress.IPv6Address("fd12:3456:789a::").packed
    with pytest.raises(ValueError, match="6 bytes"):
        router_advertisement(MAC[:5], PREFIX)


def test_command_line_rejects_a_bad_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["br0", "not-a-prefix"])
    assert exit_info.value.code == 2
    assert "prefix" in capsys.readouterr().err
