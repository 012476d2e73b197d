"""pxe.dns.resolver: every verdict and rcode path, checked with dnspython (an independent codec)."""

from __future__ import annotations

import logging
import struct
from ipaddress import IPv4Network

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from dnslib import EDNS0, RR, A, DNSRecord  # type: ignore[import-untyped]

from pxe.dns.resolver import (
    MAX_UDP_PAYLOAD,
    MIN_UDP_PAYLOAD,
    Forward,
    Rcode,
    Reply,
    answer,
    is_truncated,
    reply_rcode,
    truncate,
)
from pxe.dns.zone import Record, Zone

RECORDS = [
    Record("node1.lab.example", "A", "10.0.0.5"),
    Record("node2.lab.example", "A", "10.0.0.6", ttl=60),
    Record("ingot.lab.example", "A", "10.0.0.1"),
    Record("www.lab.example", "CNAME", "node1.lab.example"),
    Record("hop1.lab.example", "CNAME", "hop2.lab.example"),
    Record("hop2.lab.example", "CNAME", "www.lab.example"),
    Record("dangling.lab.example", "CNAME", "missing.lab.example"),
    Record("mirror.lab.example", "CNAME", "mirror.example.com"),
    Record("deep.rack1.lab.example", "A", "10.0.0.7"),
    Record("outside.lab.example", "A", "192.168.50.1"),
]


@pytest.fixture
def zone() -> Zone:
    return Zone("lab.example", RECORDS, [IPv4Network("10.0.0.0/24")], negative_ttl=30)


def query(
    name: str,
    rtype: str = "A",
    *,
    rdclass: str = "IN",
    edns: int | None = None,
    payload: int = 1232,
    dnssec: bool = False,
    flags: int | None = None,
) -> bytes:
    q = dns.message.make_query(
        name,
        dns.rdatatype.from_text(rtype),
        dns.rdataclass.from_text(rdclass),
        use_edns=edns if edns is not None else (0 if dnssec else False),
        payload=payload,
        want_dnssec=dnssec,
    )
    if flags is not None:
        q.flags = flags
    return q.to_wire()  # type: ignore[no-any-return]


def reply_to(wire: bytes, zone: Zone, *, forwarding: bool = True, udp: bool = True) -> dns.message.Message:
    verdict = answer(wire, zone, forwarding=forwarding)
    assert isinstance(verdict, Reply), verdict
    data = verdict.pack_udp() if udp else verdict.pack()
    response = dns.message.from_wire(data)
    assert response.id == struct.unpack("!H", wire[:2])[0]
    assert response.flags & dns.flags.QR
    return response


def texts(section: list[dns.rrset.RRset]) -> list[str]:
    return [line for rrset in section for line in rrset.to_text().splitlines()]


def ask(zone: Zone, name: str, rtype: str = "A", **kw: object) -> dns.message.Message:
    return reply_to(query(name, rtype), zone, **kw)  # type: ignore[arg-type]


# -- authoritative answers ------------------------------------------------------------------------


def test_a_record(zone: Zone) -> None:
    response = ask(zone, "node1.lab.example")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert response.flags & dns.flags.RD  # copied from the query
    assert response.flags & dns.flags.RA  # forwarding is available
    assert texts(response.answer) == ["node1.lab.example. 300 IN A 10.0.0.5"]
    assert response.authority == [] and response.additional == []


def test_names_are_case_insensitive_and_the_question_is_echoed(zone: Zone) -> None:
    response = ask(zone, "NoDe2.LAB.Example.")
    assert str(response.question[0].name) == "NoDe2.LAB.Example."
    assert texts(response.answer) == ["NoDe2.LAB.Example. 60 IN A 10.0.0.6"]
    # and on the wire too (dnspython compares names case-insensitively, so check the bytes)
    wire = query("NoDe2.LAB.Example.")
    verdict = answer(wire, zone)
    assert isinstance(verdict, Reply)
    assert b"\x05NoDe2\x03LAB\x07Example\x00" in verdict.pack_udp()


def test_cname_is_chased_inside_the_zone(zone: Zone) -> None:
    response = ask(zone, "hop1.lab.example")
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
    assert texts(response.answer) == [
        "hop1.lab.example. 300 IN CNAME hop2.lab.example.",
        "hop2.lab.example. 300 IN CNAME www.lab.example.",
        "www.lab.example. 300 IN CNAME node1.lab.example.",
        "node1.lab.example. 300 IN A 10.0.0.5",
    ]


def test_cname_query_is_not_chased(zone: Zone) -> None:
    response = ask(zone, "www.lab.example", "CNAME")
    assert texts(response.answer) == ["www.lab.example. 300 IN CNAME node1.lab.example."]


def test_cname_then_nodata(zone: Zone) -> None:
    response = ask(zone, "www.lab.example", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert texts(response.answer) == ["www.lab.example. 300 IN CNAME node1.lab.example."]
    assert [rr.rdtype for rr in response.authority] == [dns.rdatatype.SOA]


def test_dangling_cname_is_nxdomain_for_the_target(zone: Zone) -> None:
    response = ask(zone, "dangling.lab.example")
    assert response.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: the rcode of the last name
    assert texts(response.answer) == ["dangling.lab.example. 300 IN CNAME missing.lab.example."]
    assert [str(rr.name) for rr in response.authority] == ["lab.example."]


def test_cname_out_of_the_zone_is_forwarded_for_the_rest_of_the_chain(zone: Zone) -> None:
    verdict = answer(query("Mirror.lab.example", "A", edns=0), zone)
    assert isinstance(verdict, Forward)
    assert verdict.qname == "mirror.example.com."
    upstream_query = dns.message.from_wire(verdict.upstream_query(0x1234))
    assert upstream_query.id == 0x1234
    assert upstream_query.flags & dns.flags.RD
    assert str(upstream_query.question[0].name) == "mirror.example.com."
    assert upstream_query.question[0].rdtype == dns.rdatatype.A

    upstream_reply = dns.message.make_response(upstream_query)
    upstream_reply.answer.append(dns.rrset.from_text("mirror.example.com.", 120, "IN", "A", "203.0.113.9"))
    data = upstream_reply.to_wire()
    assert verdict.accepts(data, 0x1234)
    client = dns.message.from_wire(verdict.relay(data, udp=True))
    assert client.id == struct.unpack("!H", verdict.raw[:2])[0]
    assert str(client.question[0].name) == "Mirror.lab.example."
    assert client.flags & dns.flags.AA  # RFC 6604 §3: set by the first owner name
    assert texts(client.answer) == [
        "Mirror.lab.example. 300 IN CNAME mirror.example.com.",
        "mirror.example.com. 120 IN A 203.0.113.9",
    ]
    assert client.edns == 0  # the client's OPT is answered

    nx = dns.message.make_response(upstream_query)
    nx.set_rcode(dns.rcode.NXDOMAIN)
    assert dns.message.from_wire(verdict.relay(nx.to_wire(), udp=True)).rcode() == dns.rcode.NXDOMAIN

    # An upstream answer dnslib cannot read still leaves the (true) CNAME for the client.
    garbled = data[:40]
    client = dns.message.from_wire(verdict.relay(garbled, udp=True))
    assert texts(client.answer) == ["Mirror.lab.example. 300 IN CNAME mirror.example.com."]


def test_cname_out_of_the_zone_without_forwarding_stops_at_the_cname(zone: Zone) -> None:
    response = ask(zone, "mirror.lab.example", forwarding=False)
    assert response.rcode() == dns.rcode.NOERROR
    assert texts(response.answer) == ["mirror.lab.example. 300 IN CNAME mirror.example.com."]
    assert not response.flags & dns.flags.RA


def test_nxdomain_carries_the_soa(zone: Zone) -> None:
    response = ask(zone, "nosuch.lab.example")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert texts(response.authority) == [
        f"lab.example. 30 IN SOA lab.example. hostmaster.lab.example. {zone.serial} 3600 600 86400 30"
    ]


def test_nxdomain_below_an_existing_name(zone: Zone) -> None:
    assert ask(zone, "x.node1.lab.example").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    ("name", "rtype"),
    [
        ("node1.lab.example", "MX"),
        ("node1.lab.example", "AAAA"),
        ("node1.lab.example", "PTR"),
        ("rack1.lab.example", "A"),  # an empty non-terminal (RFC 8020)
        ("lab.example", "A"),
        ("lab.example", "NS"),
    ],
)
def test_nodata(zone: Zone, name: str, rtype: str) -> None:
    response = ask(zone, name, rtype)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert [rr.rdtype for rr in response.authority] == [dns.rdatatype.SOA]


def test_soa_and_any(zone: Zone) -> None:
    soa = ask(zone, "LAB.example", "SOA")
    assert [rr.rdtype for rr in soa.answer] == [dns.rdatatype.SOA]
    assert soa.answer[0][0].serial == zone.serial
    assert texts(ask(zone, "node1.lab.example", "ANY").answer) == ["node1.lab.example. 300 IN A 10.0.0.5"]
    assert [rr.rdtype for rr in ask(zone, "lab.example", "ANY").answer] == [dns.rdatatype.SOA]
    assert [rr.rdtype for rr in ask(zone, "rack1.lab.example", "ANY").authority] == [dns.rdatatype.SOA]


def test_ptr_synthesized_from_a_records(zone: Zone) -> None:
    response = ask(zone, "5.0.0.10.in-addr.arpa", "PTR")
    assert response.flags & dns.flags.AA
    assert texts(response.answer) == ["5.0.0.10.in-addr.arpa. 300 IN PTR node1.lab.example."]
    unknown = ask(zone, "200.0.0.10.in-addr.arpa", "PTR")
    assert unknown.rcode() == dns.rcode.NXDOMAIN
    assert [str(rr.name) for rr in unknown.authority] == ["0.0.10.in-addr.arpa."]
    # 192.168.50.1 is not in a reverse network: someone else's name.
    assert isinstance(answer(query("1.50.168.192.in-addr.arpa", "PTR"), zone), Forward)


def test_replace_is_seen_by_the_next_query(zone: Zone) -> None:
    assert ask(zone, "node9.lab.example").rcode() == dns.rcode.NXDOMAIN
    zone.replace([*RECORDS, Record("node9.lab.example", "A", "10.0.0.9")])
    assert texts(ask(zone, "node9.lab.example").answer) == ["node9.lab.example. 300 IN A 10.0.0.9"]
    assert texts(ask(zone, "9.0.0.10.in-addr.arpa", "PTR").answer) == [
        "9.0.0.10.in-addr.arpa. 300 IN PTR node9.lab.example."
    ]


def test_flags_rd_and_cd_are_copied(zone: Zone) -> None:
    response = reply_to(query("node1.lab.example", flags=dns.flags.CD), zone)
    assert not response.flags & dns.flags.RD
    assert response.flags & dns.flags.CD
    assert response.flags & dns.flags.AA


# -- out-of-zone names ----------------------------------------------------------------------------


def test_other_names_are_forwarded(zone: Zone) -> None:
    wire = query("www.example.com", edns=0, payload=4096)
    verdict = answer(wire, zone)
    assert isinstance(verdict, Forward)
    assert verdict.prefix is None
    assert verdict.udp_limit == MAX_UDP_PAYLOAD
    sent = verdict.upstream_query(0xBEEF)
    assert sent[:2] == b"\xbe\xef" and sent[2:] == wire[2:]  # the client's own bytes, new ID


def test_other_names_without_upstreams_are_refused(zone: Zone) -> None:
    response = ask(zone, "www.example.com", forwarding=False)
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & (dns.flags.AA | dns.flags.RA)
    assert len(response.question) == 1


def test_forward_accepts_only_the_matching_reply(zone: Zone) -> None:
    verdict = answer(query("www.example.com"), zone)
    assert isinstance(verdict, Forward)
    upstream = dns.message.from_wire(verdict.upstream_query(7))
    good = dns.message.make_response(upstream)
    assert verdict.accepts(good.to_wire(), 7)
    assert not verdict.accepts(good.to_wire(), 8)  # another ID
    assert not verdict.accepts(upstream.to_wire(), 7)  # a query, not a response
    assert not verdict.accepts(good.to_wire()[:11], 7)
    assert not verdict.accepts(good.to_wire()[:20], 7)  # the question is cut short
    other = dns.message.make_response(dns.message.make_query("www.example.org", "A", id=7))
    assert not verdict.accepts(other.to_wire(), 7)
    other_type = dns.message.make_response(dns.message.make_query("www.example.com", "AAAA", id=7))
    assert not verdict.accepts(other_type.to_wire(), 7)
    shouty = dns.message.make_response(dns.message.make_query("WWW.EXAMPLE.COM", "A", id=7))
    assert verdict.accepts(shouty.to_wire(), 7)  # names compare case-insensitively


def test_forward_relay_restores_the_id_and_truncates_for_udp(zone: Zone) -> None:
    wire = query("big.example.com")
    verdict = answer(wire, zone)
    assert isinstance(verdict, Forward)
    upstream = dns.message.from_wire(verdict.upstream_query(99))
    response = dns.message.make_response(upstream)
    response.answer.append(
        dns.rrset.from_text("big.example.com.", 60, "IN", "A", *[f"198.51.100.{i}" for i in range(60)])
    )
    data = response.to_wire()
    assert len(data) > MIN_UDP_PAYLOAD
    over_tcp = verdict.relay(data, udp=False)
    assert over_tcp[:2] == wire[:2] and over_tcp[2:] == data[2:]
    over_udp = verdict.relay(data, udp=True)
    assert len(over_udp) <= MIN_UDP_PAYLOAD and is_truncated(over_udp)
    parsed = dns.message.from_wire(over_udp)
    assert parsed.id == struct.unpack("!H", wire[:2])[0]
    assert parsed.answer == [] and len(parsed.question) == 1


def test_forward_fail_is_servfail(zone: Zone) -> None:
    verdict = answer(query("www.example.com"), zone)
    assert isinstance(verdict, Forward)
    failure = verdict.fail()
    assert failure.rcode == Rcode.SERVFAIL
    response = dns.message.from_wire(failure.pack_udp())
    assert response.rcode() == dns.rcode.SERVFAIL
    assert str(response.question[0].name) == "www.example.com."
    assert verdict.fail(Rcode.REFUSED).rcode == Rcode.REFUSED


# -- refusals and errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"", "empty"),
        (b"\x12\x34\x01\x00\x00\x01", "shorter than a header"),
        (b"\x12\x34\x81\x80" + bytes(8), "a response"),
    ],
)
def test_dropped(zone: Zone, wire: bytes, why: str) -> None:
    assert answer(wire, zone) is None, why


def test_responses_are_never_answered(zone: Zone) -> None:
    wire = bytearray(query("node1.lab.example"))
    wire[2] |= 0x80
    assert answer(bytes(wire), zone) is None


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE, 15])
def test_other_opcodes_are_notimp(zone: Zone, opcode: int) -> None:
    wire = bytearray(query("node1.lab.example"))
    wire[2] = (wire[2] & 0x87) | opcode << 3
    verdict = answer(bytes(wire), zone)
    assert isinstance(verdict, Reply)
    data = verdict.pack_udp()
    assert data[:2] == wire[:2]
    assert reply_rcode(data) == Rcode.NOTIMP
    assert (data[2] >> 3) & 0xF == opcode
    assert data[2] & 0x80


def _with_counts(wire: bytes, qd: int, an: int, ns: int, ar: int) -> bytes:
    return wire[:4] + struct.pack("!HHHH", qd, an, ns, ar) + wire[12:]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda w: _with_counts(w, 0, 0, 0, 0),
        lambda w: _with_counts(w, 2, 0, 0, 0),
        lambda w: _with_counts(w, 1, 1, 0, 0),
        lambda w: _with_counts(w, 1, 0, 1, 0),
        lambda w: _with_counts(w, 1, 0, 0, 3),
        lambda w: w[:-3],  # the question is cut short
        lambda w: w[:12] + b"\xc0\x0c" + w[-4:],  # a compression pointer to itself
        lambda w: w[:12] + b"\xc0\xff" + w[-4:],  # a pointer forwards
        lambda w: w[:12] + b"\x40" + w[13:],  # reserved label type
        lambda w: w[:12] + b"\x03\xff\xfe\xfd\x00" + w[-4:],  # a label that is not UTF-8
        lambda w: _with_counts(w, 1, 0, 0, 1),  # an OPT that is not there
        lambda w: w + bytes(5000),  # longer than any real query
    ],
)
def test_malformed_is_formerr(zone: Zone, mangle: object) -> None:
    wire = query("node1.lab.example")
    bad = mangle(wire)  # type: ignore[operator]
    verdict = answer(bad, zone)
    assert isinstance(verdict, Reply)
    data = verdict.pack_udp()
    assert data[:2] == wire[:2]
    assert reply_rcode(data) == Rcode.FORMERR
    assert dns.message.from_wire(data).rcode() == dns.rcode.FORMERR


def test_two_opt_records_are_formerr(zone: Zone) -> None:
    q = DNSRecord.question("node1.lab.example")
    q.add_ar(EDNS0(udp_len=1232))
    q.add_ar(EDNS0(udp_len=1232))
    verdict = answer(bytes(q.pack()), zone)
    assert isinstance(verdict, Reply) and verdict.rcode == Rcode.FORMERR


def test_opt_not_owned_by_the_root_is_formerr(zone: Zone) -> None:
    q = DNSRecord.question("node1.lab.example")
    q.add_ar(EDNS0(rname="lab.example", udp_len=1232))
    verdict = answer(bytes(q.pack()), zone)
    assert isinstance(verdict, Reply) and verdict.rcode == Rcode.FORMERR


def test_overlong_question_name_is_formerr(zone: Zone) -> None:
    # 4 labels of 63 octets plus the rest of the name: a 260-octet name, too long to echo.
    labels = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x03lab\x07example\x00"
    wire = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x01\x00\x01"
    verdict = answer(wire, zone)
    assert isinstance(verdict, Reply) and verdict.rcode == Rcode.FORMERR


@pytest.mark.parametrize(
    ("name", "rtype", "rdclass"),
    [
        ("node1.lab.example", "A", "CH"),
        ("version.bind", "TXT", "CH"),
        ("lab.example", "AXFR", "IN"),
        ("lab.example", "IXFR", "IN"),
        ("example.com", "AXFR", "IN"),
    ],
)
def test_refused(zone: Zone, name: str, rtype: str, rdclass: str) -> None:
    response = reply_to(query(name, rtype, rdclass=rdclass), zone)
    assert response.rcode() == dns.rcode.REFUSED


def test_edns_version_above_zero_is_badvers(zone: Zone) -> None:
    response = reply_to(query("node1.lab.example", edns=1), zone)
    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0
    assert response.answer == []


def test_edns_is_answered_with_our_payload_and_the_do_bit(zone: Zone) -> None:
    response = reply_to(query("node1.lab.example", dnssec=True, payload=4096), zone)
    assert response.edns == 0
    assert response.payload == MAX_UDP_PAYLOAD
    assert response.ednsflags & dns.flags.DO
    plain = reply_to(query("node1.lab.example", edns=0), zone)
    assert plain.edns == 0 and not plain.ednsflags & dns.flags.DO
    assert reply_to(query("node1.lab.example"), zone).edns == -1  # no OPT without one in the query


def test_an_unexpected_error_is_servfail_not_an_exception(
    zone: Zone, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(zone, "snapshot", broken)
    with caplog.at_level(logging.ERROR, logger="pxe.dns.resolver"):
        verdict = answer(query("node1.lab.example"), zone)
    assert isinstance(verdict, Reply) and verdict.rcode == Rcode.SERVFAIL
    assert "failed to answer" in caplog.text


# -- truncation -----------------------------------------------------------------------------------


@pytest.fixture
def crowded() -> Zone:
    many = [Record("many.lab.example", "A", f"10.0.1.{i}") for i in range(1, 101)]
    some = [Record("some.lab.example", "A", f"10.0.2.{i}") for i in range(1, 41)]
    return Zone("lab.example", [*many, *some])


def test_udp_without_edns_truncates_at_512(crowded: Zone) -> None:
    verdict = answer(query("some.lab.example"), crowded)
    assert isinstance(verdict, Reply)
    udp = verdict.pack_udp()
    assert len(udp) <= MIN_UDP_PAYLOAD and is_truncated(udp)
    parsed = dns.message.from_wire(udp)
    assert parsed.flags & dns.flags.TC and parsed.answer == [] and len(parsed.question) == 1
    tcp = dns.message.from_wire(verdict.pack())
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 40


def test_udp_with_edns_uses_the_clients_size_up_to_ours(crowded: Zone) -> None:
    fits = answer(query("some.lab.example", edns=0, payload=4096), crowded)
    assert isinstance(fits, Reply)
    assert fits.udp_limit == MAX_UDP_PAYLOAD
    assert not is_truncated(fits.pack_udp())
    assert len(dns.message.from_wire(fits.pack_udp()).answer[0]) == 40

    small = answer(query("some.lab.example", edns=0, payload=100), crowded)
    assert isinstance(small, Reply) and small.udp_limit == MIN_UDP_PAYLOAD  # never below 512

    too_big = answer(query("many.lab.example", edns=0, payload=4096), crowded)
    assert isinstance(too_big, Reply)
    udp = too_big.pack_udp()
    assert len(udp) <= MAX_UDP_PAYLOAD and is_truncated(udp)
    assert dns.message.from_wire(udp).edns == 0  # the OPT record survives truncation
    assert len(dns.message.from_wire(too_big.pack()).answer[0]) == 100


def test_truncate_helper() -> None:
    message = DNSRecord.question("x.example").reply()
    for i in range(50):
        message.add_answer(RR("x.example", 1, ttl=60, rdata=A(f"192.0.2.{i}")))
    full = truncate(message, 65535)
    assert not is_truncated(full) and len(DNSRecord.parse(full).rr) == 50
    cut = truncate(message, 512)
    assert is_truncated(cut) and len(cut) <= 512
    parsed = DNSRecord.parse(cut)
    assert parsed.rr == [] and len(parsed.questions) == 1 and parsed.header.id == message.header.id


def test_wire_helpers() -> None:
    assert reply_rcode(b"\x00") == -1
    assert not is_truncated(b"\x00\x00\x02")
    assert reply_rcode(b"\x00\x00\x81\x83" + bytes(8)) == Rcode.NXDOMAIN
    assert is_truncated(b"\x00\x00\x83\x80" + bytes(8))


def test_extended_label_types_are_formerr(zone: Zone) -> None:
    # Found by fuzzing: a length octet of 0x40-0xBF is no plain label (RFC 6891 §5); dnslib reads
    # it as a label longer than 63 octets that it cannot pack again.
    wire = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x41" + b"a" * 65 + b"\x00\x00\x01\x00\x01"
    verdict = answer(wire, zone)
    assert isinstance(verdict, Reply) and verdict.rcode == Rcode.FORMERR
    assert reply_rcode(verdict.pack_udp()) == Rcode.FORMERR
