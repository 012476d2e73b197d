"""The records Ingot's DNS server is authoritative for: one forward domain plus reverse zones.

Theory of operation
-------------------
A :class:`Zone` is a forward domain (``lab.example``) and, optionally, IPv4 networks whose
``in-addr.arpa`` names it also answers for. Everything at or below those apexes is *ours*
(:meth:`Zone.is_authoritative`): a name with no records there is NXDOMAIN, never forwarded.

Reverse apexes sit on octet boundaries (RFC 1035 §3.5), so a network is split into the blocks
named by its first ``ceil(prefix / 8)`` octets: ``10.1.0.0/16`` is ``1.10.in-addr.arpa``,
``10.1.0.0/22`` is the four apexes ``0.1.10``..``3.1.10.in-addr.arpa``, and ``10.1.0.128/25``
is 128 single-address apexes. The zone never claims addresses outside its networks (no RFC 2317
delegation tricks), so at most 128 apexes come from one network.

The record set is replaced as a whole (:meth:`Zone.replace`) whenever the appliance's leases or
servers change. The new set is validated and indexed into an immutable :class:`ZoneSnapshot`
first; only then is the snapshot swapped in with a single attribute assignment. A query reads
one snapshot from start to finish, so it never sees half of an update, and a rejected update
(``ValueError``) leaves the previous records serving. ``replace`` may be called from any thread.

Synthesized PTRs: every A record whose address lies in a reverse network gets a PTR at the
address's ``in-addr.arpa`` name pointing back to the A record's name, unless explicit PTR or
CNAME records already exist at that reverse name (explicit data wins).

Rules enforced on every record set (each a ``ValueError`` naming the record):

- names are LDH host names (letters, digits, ``-`` inside a label, and ``_`` for service
  labels), 1-63 octets per label and at most 253 characters in all (RFC 1035 §2.3.4,
  RFC 1123 §2.1); matching is ASCII case-insensitive and a trailing dot is optional;
- every record name lies inside the zone, and A values are dotted-quad IPv4 addresses;
- a name with a CNAME has no other data and only one CNAME (RFC 1034 §3.6.2, RFC 2181 §10.1),
  and the apex has none (it holds the SOA);
- CNAME chains inside the zone end, and within :data:`MAX_CNAME_CHAIN` links;
- TTLs are 0..2**31-1 (RFC 2181 §8). Records of one RRset answer with the smallest TTL given
  (RFC 2181 §5.2); identical records are merged.

Names are kept internally as tuples of lowercase labels, never as dotted strings, so a query
label that itself contains a ``.`` octet can never match two labels of a record.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv4Address, IPv4Network
from typing import Literal, get_args

__all__ = [
    "MAX_CNAME_CHAIN",
    "Name",
    "RRset",
    "Record",
    "RecordType",
    "Soa",
    "Zone",
    "ZoneSnapshot",
    "parse_name",
]

RecordType = Literal["A", "PTR", "CNAME"]
Name = tuple[str, ...]
"""A domain name as lowercase labels, most specific first: ``("node1", "lab", "example")``."""

#: Longest CNAME chain accepted inside the zone (and followed when answering).
MAX_CNAME_CHAIN = 8
_MAX_TTL = 2**31 - 1  # RFC 2181 §8
_MAX_NAME_TEXT = 253  # 255 octets on the wire (RFC 1035 §2.3.4) minus the length octets
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_REVERSE_SUFFIX: Name = ("in-addr", "arpa")
_RECORD_TYPES: frozenset[str] = frozenset(get_args(RecordType))


def parse_name(name: str, *, what: str = "name") -> Name:
    """Validate a host name and return it as lowercase labels.

    :param name: dotted name, absolute or not: ``"Node1.Lab.Example."`` is ``("node1", "lab",
        "example")``.
    :param what: how to call the name in error messages.
    :raises ValueError: empty name, empty label, non-ASCII or non-LDH characters, a label longer
        than 63 octets or a name longer than 253 characters.
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, not {type(name).__name__}")
    text = name[:-1] if name.endswith(".") else name
    if not text:
        raise ValueError(f"{what} {name!r} is empty")
    if not text.isascii():
        raise ValueError(f"{what} {name!r} is not ASCII; give internationalized names in IDNA form (xn--...)")
    if len(text) > _MAX_NAME_TEXT:
        raise ValueError(f"{what} {name!r} is longer than {_MAX_NAME_TEXT} characters")
    labels = tuple(text.lower().split("."))
    for label in labels:
        if not _LABEL.match(label):
            raise ValueError(
                f"{what} {name!r} has an invalid label {label!r}: labels are 1-63 letters, digits, '_' or '-'"
                " and do not start or end with '-'"
            )
    return labels


def _text(name: Name) -> str:
    return ".".join(name)


def _is_within(name: Name, apex: Name) -> bool:
    return len(name) >= len(apex) and name[len(name) - len(apex) :] == apex


def _reverse_name(address: IPv4Address) -> Name:
    return (*reversed(str(address).split(".")), *_REVERSE_SUFFIX)


def _reverse_apexes(network: IPv4Network) -> list[Name]:
    if network.prefixlen < 8:
        raise ValueError(f"reverse network {network} is larger than a /8; split it into /8 or smaller networks")
    octets = math.ceil(network.prefixlen / 8)
    apexes = []
    for block in network.subnets(new_prefix=octets * 8):
        first = str(block.network_address).split(".")[:octets]
        apexes.append((*reversed(first), *_REVERSE_SUFFIX))
    return apexes


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record, normalized on construction.

    :param name: owner name, inside the zone's domain or one of its reverse zones.
    :param rtype: ``"A"`` (``value`` is an IPv4 address), ``"PTR"`` or ``"CNAME"`` (``value`` is
        a host name, anywhere).
    :param ttl: seconds, 0..2**31-1.
    :raises ValueError: on an invalid name, value, type or TTL (the message names the record).

    After construction ``name`` and (for PTR and CNAME) ``value`` are lowercase without a
    trailing dot, and an A ``value`` is in canonical dotted-quad form.
    """

    name: str
    rtype: RecordType
    value: str
    ttl: int = 300

    def __post_init__(self) -> None:
        labels = parse_name(self.name, what="record name")
        if self.rtype not in _RECORD_TYPES:
            raise ValueError(f"record {self.name!r}: unsupported type {self.rtype!r}; expected A, PTR or CNAME")
        if not isinstance(self.value, str):
            raise TypeError(f"record {self.name!r}: value must be a string, not {type(self.value).__name__}")
        if self.rtype == "A":
            try:
                value = str(IPv4Address(self.value.strip()))
            except AddressValueError:
                raise ValueError(f"record {self.name!r}: {self.value!r} is not an IPv4 address") from None
        else:
            value = _text(parse_name(self.value, what=f"{self.rtype} target of {self.name!r}"))
        if isinstance(self.ttl, bool) or not isinstance(self.ttl, int) or not 0 <= self.ttl <= _MAX_TTL:
            raise ValueError(f"record {self.name!r}: TTL {self.ttl!r} is not an integer in 0..{_MAX_TTL}")
        object.__setattr__(self, "name", _text(labels))
        object.__setattr__(self, "value", value)


@dataclass(frozen=True, slots=True)
class RRset:
    """All records of one type at one name: what an answer section carries for it."""

    rtype: RecordType
    ttl: int
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Soa:
    """The SOA every apex of the zone answers with (RFC 1035 §3.3.13).

    ``mname`` is the forward domain and ``rname`` ``hostmaster.<domain>``. ``minimum`` (and the
    SOA's own TTL) is the negative-caching TTL of RFC 2308 §4, kept short because the next
    provisioned server may appear any moment.
    """

    mname: str
    rname: str
    serial: int
    refresh: int = 3600
    retry: int = 600
    expire: int = 86400
    minimum: int = 60


@dataclass(frozen=True, eq=False)
class ZoneSnapshot:
    """One immutable version of a zone's data; every lookup of one query uses the same snapshot."""

    domain: Name
    apexes: frozenset[Name]
    soa: Soa
    records: tuple[Record, ...]
    _rrsets: Mapping[Name, Mapping[str, RRset]] = field(repr=False)
    _nodes: frozenset[Name] = field(repr=False)

    @property
    def serial(self) -> int:
        return self.soa.serial

    def apex_of(self, name: Name) -> Name | None:
        """The zone apex ``name`` falls under, or ``None`` when the name is not ours."""
        for start in range(len(name) + 1):
            if name[start:] in self.apexes:
                return name[start:]
        return None

    def lookup(self, name: Name) -> Mapping[str, RRset] | None:
        """RRsets at ``name`` by type; empty for a name that exists without data (an apex or an
        empty non-terminal, RFC 8020), ``None`` when the name does not exist."""
        if name not in self._nodes:
            return None
        return self._rrsets.get(name, {})


class Zone:
    """The authoritative data: a forward domain, its reverse networks and the current records.

    :param domain: the forward domain, e.g. ``"lab.example"``.
    :param records: the initial record set (see :meth:`replace`).
    :param reverse_networks: IPv4 networks whose ``in-addr.arpa`` names this zone answers for.
    :param negative_ttl: SOA minimum and TTL, i.e. how long NXDOMAIN/NODATA may be cached.
    :raises ValueError: on an invalid domain, network or record set.
    """

    def __init__(
        self,
        domain: str,
        records: Iterable[Record] = (),
        reverse_networks: Iterable[IPv4Network] = (),
        *,
        negative_ttl: int = 60,
    ) -> None:
        self._domain = parse_name(domain, what="zone domain")
        if _is_within(self._domain, _REVERSE_SUFFIX):
            raise ValueError(f"zone domain {domain!r} is a reverse name; give reverse_networks instead")
        if isinstance(negative_ttl, bool) or not isinstance(negative_ttl, int) or not 0 <= negative_ttl <= _MAX_TTL:
            raise ValueError(f"negative_ttl {negative_ttl!r} is not an integer in 0..{_MAX_TTL}")
        networks: list[IPv4Network] = []
        for network in reverse_networks:
            if not isinstance(network, IPv4Network):
                raise ValueError(f"reverse network {network!r} is not an IPv4Network")
            if network not in networks:
                networks.append(network)
        self._networks = tuple(networks)
        apexes = {self._domain}
        for network in self._networks:
            apexes.update(_reverse_apexes(network))
        self._apexes = frozenset(apexes)
        self._negative_ttl = negative_ttl
        self._lock = threading.Lock()
        self._snapshot = self._build(records, serial=1)
        self._serial = 1

    @property
    def domain(self) -> str:
        """The forward domain, lowercase, without a trailing dot."""
        return _text(self._domain)

    @property
    def reverse_networks(self) -> tuple[IPv4Network, ...]:
        return self._networks

    @property
    def reverse_zones(self) -> tuple[str, ...]:
        """The ``in-addr.arpa`` apexes derived from the reverse networks, sorted."""
        return tuple(sorted(_text(a) for a in self._apexes if a != self._domain))

    @property
    def serial(self) -> int:
        """SOA serial; starts at 1 and grows by one with every successful :meth:`replace`."""
        return self._snapshot.serial

    @property
    def records(self) -> tuple[Record, ...]:
        """The current record set as given (normalized and deduplicated; no synthesized PTRs)."""
        return self._snapshot.records

    def snapshot(self) -> ZoneSnapshot:
        """The current data; keep using the returned object for the whole of one query."""
        return self._snapshot

    def replace(self, records: Iterable[Record]) -> None:
        """Validate ``records`` and make them the zone's whole record set in one step.

        :raises ValueError: if the set breaks a rule of the module docstring; the records
            served before the call stay in place.
        """
        with self._lock:
            serial = self._serial % 0xFFFFFFFF + 1  # RFC 1982 serial arithmetic wraps at 2**32
            self._snapshot = self._build(records, serial=serial)
            self._serial = serial

    def is_authoritative(self, qname: str) -> bool:
        """Whether ``qname`` is at or below the domain or one of the reverse apexes.

        Never raises: a string that is no valid host name is judged by its labels as given.
        """
        text = qname[:-1] if qname.endswith(".") else qname
        labels = tuple(text.lower().split(".")) if text else ()
        return self._snapshot.apex_of(labels) is not None

    def lookup(self, qname: str, rtype: RecordType) -> tuple[str, ...]:
        """The values of one RRset, synthesized PTRs included (``()`` when there is none)."""
        try:
            name = parse_name(qname)
        except ValueError:
            return ()
        rrsets = self._snapshot.lookup(name) or {}
        rrset = rrsets.get(rtype)
        return rrset.values if rrset is not None else ()

    # -- building a snapshot ------------------------------------------------------------------

    def _build(self, records: Iterable[Record], *, serial: int) -> ZoneSnapshot:
        given: list[Record] = []
        seen: set[tuple[str, str, str]] = set()
        # (name, type) -> values in first-seen order, and the smallest TTL of the RRset.
        values: dict[tuple[Name, RecordType], list[str]] = {}
        ttls: dict[tuple[Name, RecordType], int] = {}
        for record in records:
            if not isinstance(record, Record):
                raise ValueError(f"{record!r} is not a Record")
            name = tuple(record.name.split("."))
            apex = self._apex_of(name)
            if apex is None:
                raise ValueError(f"record {record.name} {record.rtype} is outside zone {self.domain}")
            if record.rtype == "CNAME" and name == apex:
                raise ValueError(f"record {record.name} CNAME: a zone apex cannot have a CNAME (it holds the SOA)")
            key: tuple[Name, RecordType] = (name, record.rtype)
            ttls[key] = min(ttls.get(key, record.ttl), record.ttl)
            if (record.name, record.rtype, record.value) in seen:
                continue
            seen.add((record.name, record.rtype, record.value))
            given.append(record)
            values.setdefault(key, []).append(record.value)

        by_name: dict[Name, dict[str, RRset]] = {}
        for (name, rtype), vals in values.items():
            rrset = RRset(rtype, ttls[(name, rtype)], tuple(vals))
            by_name.setdefault(name, {})[rtype] = rrset

        for name, rrsets in by_name.items():
            cname = rrsets.get("CNAME")
            if cname is None:
                continue
            if len(cname.values) > 1:
                raise ValueError(f"{_text(name)} has {len(cname.values)} CNAME records; a name has at most one")
            others = sorted(t for t in rrsets if t != "CNAME")
            if others:
                kinds = ", ".join(others)
                raise ValueError(f"{_text(name)} has a CNAME and {kinds} records; a CNAME name has no other data")
        self._check_cname_chains(by_name)
        self._synthesize_ptrs(by_name)

        nodes: set[Name] = set(self._apexes)
        for name in by_name:
            apex = self._apex_of(name)
            assert apex is not None  # checked above for given records; synthesized PTRs are in a reverse apex
            for start in range(len(name) - len(apex) + 1):
                nodes.add(name[start:])
        domain = self.domain
        soa = Soa(mname=domain, rname=f"hostmaster.{domain}", serial=serial, minimum=self._negative_ttl)
        return ZoneSnapshot(
            domain=self._domain,
            apexes=self._apexes,
            soa=soa,
            records=tuple(given),
            _rrsets=by_name,
            _nodes=frozenset(nodes),
        )

    def _apex_of(self, name: Name) -> Name | None:
        for start in range(len(name) + 1):
            if name[start:] in self._apexes:
                return name[start:]
        return None

    def _check_cname_chains(self, by_name: Mapping[Name, Mapping[str, RRset]]) -> None:
        for start, rrsets in by_name.items():
            if "CNAME" not in rrsets:
                continue
            chain = [start]
            name = start
            while (cname := by_name.get(name, {}).get("CNAME")) is not None:
                name = tuple(cname.values[0].split("."))
                if name in chain:
                    loop = " -> ".join(_text(n) for n in [*chain[chain.index(name) :], name])
                    raise ValueError(f"CNAME loop: {loop}")
                chain.append(name)
                if len(chain) - 1 > MAX_CNAME_CHAIN:
                    raise ValueError(
                        f"CNAME chain from {_text(start)} is longer than {MAX_CNAME_CHAIN} links: "
                        + " -> ".join(_text(n) for n in chain)
                    )

    def _synthesize_ptrs(self, by_name: dict[Name, dict[str, RRset]]) -> None:
        if not self._networks:
            return
        synthesized: dict[Name, list[str]] = {}
        ttls: dict[Name, int] = {}
        for name, rrsets in by_name.items():
            a = rrsets.get("A")
            if a is None:
                continue
            for value in a.values:
                address = IPv4Address(value)
                if not any(address in network for network in self._networks):
                    continue
                reverse = _reverse_name(address)
                existing = by_name.get(reverse, {})
                if "PTR" in existing or "CNAME" in existing:
                    continue  # explicit data at the reverse name wins
                targets = synthesized.setdefault(reverse, [])
                if _text(name) not in targets:
                    targets.append(_text(name))
                ttls[reverse] = min(ttls.get(reverse, a.ttl), a.ttl)
        for reverse, targets in synthesized.items():
            by_name.setdefault(reverse, {})["PTR"] = RRset("PTR", ttls[reverse], tuple(targets))
