"""Hostile input for pxe.dns.resolver: random bytes and mutated real queries never raise.

Every verdict must also be usable: a Reply packs (for UDP within the limit) into something
dnspython parses, with the query's ID; a Forward builds upstream queries and survives random
upstream replies.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Network

import dns.message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxe.dns.resolver import MAX_UDP_PAYLOAD, MIN_UDP_PAYLOAD, Forward, Reply, answer
from pxe.dns.zone import Record, Zone

FUZZ = settings(database=None, deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])

ZONE = Zone(
    "lab.example",
    [
        Record("node1.lab.example", "A", "10.0.0.5"),
        Record("www.lab.example", "CNAME", "node1.lab.example"),
        Record("mirror.lab.example", "CNAME", "mirror.example.com"),
        *[Record("many.lab.example", "A", f"10.0.1.{i}") for i in range(1, 80)],
    ],
    [IPv4Network("10.0.0.0/16")],
)

SEEDS = [
    dns.message.make_query(name, rtype, use_edns=edns, payload=payload, want_dnssec=dnssec).to_wire()
    for name, rtype in [
        ("node1.lab.example", "A"),
        ("WWW.lab.example", "A"),
        ("mirror.lab.example", "A"),
        ("many.lab.example", "A"),
        ("5.0.0.10.in-addr.arpa", "PTR"),
        ("nosuch.lab.example", "AAAA"),
        ("lab.example", "SOA"),
        ("lab.example", "ANY"),
        ("www.example.com", "A"),
    ]
    for edns, payload, dnssec in [(False, 0, False), (0, 4096, True), (0, 600, False)]
]


def check(data: bytes, verdict: object) -> None:
    if verdict is None:
        return
    if isinstance(verdict, Reply):
        udp = verdict.pack_udp()
        assert len(udp) <= max(MIN_UDP_PAYLOAD, min(verdict.udp_limit, MAX_UDP_PAYLOAD))
        for wire in (udp, verdict.pack()):
            assert wire[:2] == data[:2]
            assert wire[2] & 0x80  # QR
            dns.message.from_wire(wire)  # an independent codec reads it
        return
    assert isinstance(verdict, Forward)
    upstream = verdict.upstream_query(4242)
    assert upstream[:2] == b"\x10\x92"
    assert verdict.fail().pack_udp()[:2] == data[:2]


class _ErrorTrap(logging.Handler):
    """answer() turns bugs into SERVFAIL and logs them; while fuzzing, a logged error is a failure."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def quiet() -> Iterator[None]:
    trap = _ErrorTrap()
    logger = logging.getLogger("pxe.dns")
    logger.addHandler(trap)
    try:
        yield
    finally:
        logger.removeHandler(trap)
    assert not trap.records, trap.records[0].getMessage()


@FUZZ
@given(data=st.binary(max_size=700))
def test_random_bytes(data: bytes) -> None:
    with quiet():
        check(data, answer(data, ZONE))
        check(data, answer(data, ZONE, forwarding=False))


@FUZZ
@given(
    header=st.tuples(*[st.integers(0, 0xFFFF)] * 2, *[st.integers(0, 3)] * 4),
    body=st.binary(max_size=300),
)
def test_random_body_behind_plausible_counts(header: tuple[int, ...], body: bytes) -> None:
    data = struct.pack("!6H", *header) + body
    with quiet():
        check(data, answer(data, ZONE))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    wire = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append", "dup"]))
        pos = draw(st.integers(0, max(len(wire) - 1, 0)))
        if op == "flip" and wire:
            wire[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and wire:
            wire[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            wire[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and wire:
            del wire[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del wire[pos:]
        elif op == "append":
            wire += draw(st.binary(min_size=1, max_size=40))
        elif op == "dup":
            wire += wire[12:]
    return bytes(wire)


@FUZZ
@given(data=mutated())
def test_mutated_queries(data: bytes) -> None:
    with quiet():
        check(data, answer(data, ZONE))
        check(data, answer(data, ZONE, forwarding=False))


@FUZZ
@given(seed=st.sampled_from(SEEDS), qid=st.integers(0, 0xFFFF), upstream=st.binary(max_size=600))
def test_forward_survives_random_upstream_replies(seed: bytes, qid: int, upstream: bytes) -> None:
    verdict = answer(seed, ZONE)
    assert verdict is not None
    if isinstance(verdict, Forward):
        with quiet():
            if verdict.accepts(upstream, qid):
                relay_both_ways(verdict, upstream, seed)


@FUZZ
@given(seed=st.sampled_from(SEEDS), tail=st.binary(max_size=400), flags=st.integers(0, 0xFFFF))
def test_forward_relays_anything_that_matches(seed: bytes, tail: bytes, flags: int) -> None:
    """An upstream reply with the right ID and question but random flags, counts and records."""
    verdict = answer(seed, ZONE)
    assert verdict is not None
    if not isinstance(verdict, Forward):
        return
    sent = verdict.upstream_query(77)
    question_end = sent.index(b"\x00", 12) + 5
    counts = tail[:6].ljust(6, b"\x00")
    reply = struct.pack("!HHH", 77, flags | 0x8000, 1) + counts + sent[12:question_end] + tail[6:]
    with quiet():
        assert verdict.accepts(reply, 77)
        relay_both_ways(verdict, reply, seed)


def relay_both_ways(verdict: Forward, upstream: bytes, seed: bytes) -> None:
    for udp in (True, False):
        relayed = verdict.relay(upstream, udp=udp)
        assert relayed[:2] == seed[:2]
        if udp:
            assert len(relayed) <= verdict.udp_limit
