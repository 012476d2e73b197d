"""pxe.dns.zone: record validation, authority, reverse apexes, synthesized PTRs, atomic replace."""

from __future__ import annotations

import itertools
import threading
from ipaddress import IPv4Network

import pytest

from pxe.dns.zone import MAX_CNAME_CHAIN, Record, Zone, parse_name

NET = IPv4Network("10.0.0.0/24")


def zone(*records: Record, networks: tuple[IPv4Network, ...] = (NET,)) -> Zone:
    return Zone("lab.example", records, networks)


# -- names and records ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("Node1.Lab.Example.", ("node1", "lab", "example")),
        ("node-1.lab.example", ("node-1", "lab", "example")),
        ("_ldap._tcp.lab.example", ("_ldap", "_tcp", "lab", "example")),
        ("5.0.0.10.in-addr.arpa", ("5", "0", "0", "10", "in-addr", "arpa")),
        ("a" * 63 + ".x", ("a" * 63, "x")),
    ],
)
def test_parse_name_normalizes(text: str, labels: tuple[str, ...]) -> None:
    assert parse_name(text) == labels


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (".", "empty"),
        ("a..b", "invalid label ''"),
        ("-a.b", "invalid label '-a'"),
        ("a-.b", "invalid label 'a-'"),
        ("a b.c", "invalid label 'a b'"),
        ("a*.b", "invalid label"),
        ("a" * 64 + ".b", "invalid label"),
        (".".join(["abcdefghi"] * 26), "longer than 253"),
        ("bücher.example", "not ASCII"),
    ],
)
def test_parse_name_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_name(text)


def test_record_is_normalized() -> None:
    record = Record("Node1.LAB.example.", "CNAME", "Target.Example.COM.", ttl=60)
    assert (record.name, record.value, record.ttl) == ("node1.lab.example", "target.example.com", 60)
    assert Record("x.lab.example", "A", " 10.0.0.1 ").value == "10.0.0.1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("x.lab.example", "A", "10.0.0"), "not an IPv4 address"),
        (("x.lab.example", "A", "10.0.0.256"), "not an IPv4 address"),
        (("x.lab.example", "A", "::1"), "not an IPv4 address"),
        (("x.lab.example", "A", "010.0.0.1"), "not an IPv4 address"),
        (("x.lab.example", "MX", "mail.lab.example"), "unsupported type 'MX'"),
        (("x.lab.example", "CNAME", "bad..name"), "CNAME target of 'x.lab.example'"),
        (("x.lab.example", "PTR", "-bad"), "PTR target"),
        (("x_lab..example", "A", "10.0.0.1"), "record name"),
    ],
)
def test_record_rejects(args: tuple[str, str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Record(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [-1, 2**31, True, 1.5])
def test_record_rejects_ttl(ttl: object) -> None:
    with pytest.raises(ValueError, match="TTL"):
        Record("x.lab.example", "A", "10.0.0.1", ttl=ttl)  # type: ignore[arg-type]


# -- the zone ----------------------------------------------------------------------------------


def test_zone_validates_its_own_settings() -> None:
    with pytest.raises(ValueError, match="zone domain"):
        Zone("bad..domain")
    with pytest.raises(ValueError, match="reverse name"):
        Zone("0.10.in-addr.arpa")
    with pytest.raises(ValueError, match="larger than a /8"):
        Zone("lab.example", (), [IPv4Network("10.0.0.0/7")])
    with pytest.raises(ValueError, match="not an IPv4Network"):
        Zone("lab.example", (), ["10.0.0.0/24"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="negative_ttl"):
        Zone("lab.example", negative_ttl=-5)


@pytest.mark.parametrize(
    ("network", "apexes"),
    [
        ("10.0.0.0/8", ["10.in-addr.arpa"]),
        ("10.1.0.0/16", ["1.10.in-addr.arpa"]),
        ("10.1.0.0/22", [f"{i}.1.10.in-addr.arpa" for i in range(4)]),
        ("10.1.2.0/24", ["2.1.10.in-addr.arpa"]),
        ("10.1.2.252/30", [f"{i}.2.1.10.in-addr.arpa" for i in range(252, 256)]),
    ],
)
def test_reverse_apexes_fall_on_octet_boundaries(network: str, apexes: list[str]) -> None:
    z = Zone("lab.example", (), [IPv4Network(network)])
    assert sorted(z.reverse_zones) == sorted(apexes)
    for apex in apexes:
        assert z.is_authoritative(apex)
        assert z.is_authoritative("99." + apex)
    assert not z.is_authoritative("11.in-addr.arpa")


def test_is_authoritative() -> None:
    z = Zone("Lab.Example", (), [IPv4Network("10.0.0.0/23")])
    assert z.domain == "lab.example"
    for name in ["lab.example", "LAB.EXAMPLE.", "node1.lab.example", "a.b.c.lab.example.", "5.1.0.10.in-addr.arpa"]:
        assert z.is_authoritative(name), name
    for name in ["example", "xlab.example", "lab.example.com", "0.10.in-addr.arpa", "5.2.0.10.in-addr.arpa", "", "."]:
        assert not z.is_authoritative(name), name
    assert not z.is_authoritative("in-addr.arpa")
    assert z.is_authoritative("weird label!.lab.example")  # judged by its labels, never raises


def test_records_must_be_inside_the_zone() -> None:
    with pytest.raises(ValueError, match=r"outside zone lab\.example"):
        zone(Record("node1.other.example", "A", "10.0.0.1"))
    with pytest.raises(ValueError, match="outside zone"):
        zone(Record("5.0.0.11.in-addr.arpa", "PTR", "node1.lab.example"))
    with pytest.raises(ValueError, match="is not a Record"):
        Zone("lab.example", [("a", "A", "10.0.0.1")])  # type: ignore[list-item]


def test_lookup_and_dedup() -> None:
    z = zone(
        Record("node1.lab.example", "A", "10.0.0.5", ttl=600),
        Record("NODE1.lab.example.", "A", "10.0.0.5", ttl=100),
        Record("node1.lab.example", "A", "10.0.0.6"),
    )
    assert z.lookup("Node1.Lab.Example.", "A") == ("10.0.0.5", "10.0.0.6")
    assert len(z.records) == 2
    rrsets = z.snapshot().lookup(("node1", "lab", "example"))
    assert rrsets is not None
    assert rrsets["A"].ttl == 100  # the smallest TTL given for the RRset
    assert z.lookup("node2.lab.example", "A") == ()
    assert z.lookup("bad..name", "A") == ()


def test_empty_non_terminals_exist() -> None:
    snapshot = zone(Record("a.b.c.lab.example", "A", "10.0.0.1")).snapshot()
    assert snapshot.lookup(("b", "c", "lab", "example")) == {}
    assert snapshot.lookup(("c", "lab", "example")) == {}
    assert snapshot.lookup(("lab", "example")) == {}
    assert snapshot.lookup(("x", "lab", "example")) is None
    assert snapshot.lookup(("0", "0", "10", "in-addr", "arpa")) == {}  # a reverse apex


def test_ptr_synthesized_for_addresses_in_reverse_networks() -> None:
    z = zone(
        Record("node1.lab.example", "A", "10.0.0.5", ttl=120),
        Record("alias.lab.example", "A", "10.0.0.5"),
        Record("outside.lab.example", "A", "192.168.1.1"),
    )
    assert z.lookup("5.0.0.10.in-addr.arpa", "PTR") == ("node1.lab.example", "alias.lab.example")
    assert z.lookup("1.1.168.192.in-addr.arpa", "PTR") == ()
    rrsets = z.snapshot().lookup(("5", "0", "0", "10", "in-addr", "arpa"))
    assert rrsets is not None and rrsets["PTR"].ttl == 120
    assert all(r.rtype == "A" for r in z.records)  # synthesized PTRs are not part of the given set


def test_explicit_ptr_wins_over_synthesized() -> None:
    z = zone(
        Record("node1.lab.example", "A", "10.0.0.5"),
        Record("5.0.0.10.in-addr.arpa.", "PTR", "canonical.lab.example"),
    )
    assert z.lookup("5.0.0.10.in-addr.arpa", "PTR") == ("canonical.lab.example",)


def test_no_ptrs_without_reverse_networks() -> None:
    z = zone(Record("node1.lab.example", "A", "10.0.0.5"), networks=())
    assert z.reverse_zones == ()
    assert not z.is_authoritative("5.0.0.10.in-addr.arpa")


def test_cname_rules() -> None:
    with pytest.raises(ValueError, match="CNAME and A records"):
        zone(Record("x.lab.example", "CNAME", "y.lab.example"), Record("x.lab.example", "A", "10.0.0.1"))
    with pytest.raises(ValueError, match="2 CNAME records"):
        zone(Record("x.lab.example", "CNAME", "y.lab.example"), Record("x.lab.example", "CNAME", "z.lab.example"))
    with pytest.raises(ValueError, match="apex cannot have a CNAME"):
        zone(Record("lab.example", "CNAME", "y.lab.example"))
    with pytest.raises(ValueError, match=r"CNAME loop: x.lab.example -> x.lab.example"):
        zone(Record("x.lab.example", "CNAME", "x.lab.example"))
    with pytest.raises(ValueError, match=r"CNAME loop: a.lab.example -> b.lab.example -> c.lab.example -> a.lab"):
        zone(
            Record("a.lab.example", "CNAME", "b.lab.example"),
            Record("b.lab.example", "CNAME", "c.lab.example"),
            Record("c.lab.example", "CNAME", "a.lab.example"),
        )
    # Identical CNAMEs merge; a CNAME out of the zone or to a missing name is fine.
    z = zone(
        Record("x.lab.example", "CNAME", "y.lab.example"),
        Record("X.lab.example", "CNAME", "y.lab.example."),
        Record("out.lab.example", "CNAME", "mirror.example.com"),
    )
    assert z.lookup("x.lab.example", "CNAME") == ("y.lab.example",)


def test_cname_chain_length_is_bounded() -> None:
    def chain(links: int) -> list[Record]:
        names = [f"n{i}.lab.example" for i in range(links + 1)]
        return [Record(a, "CNAME", b) for a, b in itertools.pairwise(names)]

    zone(*chain(MAX_CNAME_CHAIN))
    with pytest.raises(ValueError, match="longer than"):
        zone(*chain(MAX_CNAME_CHAIN + 1))


def test_replace_is_atomic_and_bumps_the_serial() -> None:
    z = zone(Record("node1.lab.example", "A", "10.0.0.5"))
    before = z.snapshot()
    assert z.serial == 1
    z.replace([Record("node2.lab.example", "A", "10.0.0.6")])
    assert z.serial == 2
    assert z.lookup("node1.lab.example", "A") == ()
    assert z.lookup("node2.lab.example", "A") == ("10.0.0.6",)
    assert z.lookup("6.0.0.10.in-addr.arpa", "PTR") == ("node2.lab.example",)
    # A snapshot taken earlier is untouched.
    assert before.lookup(("node1", "lab", "example")) is not None
    # A rejected set leaves the old one serving, and the serial where it was.
    with pytest.raises(ValueError, match="CNAME loop"):
        z.replace([Record("a.lab.example", "CNAME", "a.lab.example"), Record("node3.lab.example", "A", "10.0.0.7")])
    assert z.serial == 2
    assert z.lookup("node2.lab.example", "A") == ("10.0.0.6",)
    assert z.lookup("node3.lab.example", "A") == ()


def test_replace_from_threads_never_shows_a_mix() -> None:
    z = zone()
    sets = [[Record(f"n{i}.lab.example", "A", f"10.0.0.{i}") for i in range(20)], []]
    stop = threading.Event()

    def writer() -> None:
        for i in range(200):
            z.replace(sets[i % 2])
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not stop.is_set():
        snapshot = z.snapshot()
        count = sum(snapshot.lookup((f"n{i}", "lab", "example")) is not None for i in range(20))
        assert count in (0, 20)
    thread.join()
    assert z.serial == 201
