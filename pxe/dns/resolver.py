"""What to do with one DNS query: answer it from the zone, forward it, or drop it. Sans-I/O.

Theory of operation
-------------------
:func:`answer` takes the query exactly as it came off the wire and returns one of

==================  ===========================================================================
verdict             what the transport does
==================  ===========================================================================
:class:`Reply`      send ``pack_udp()`` (UDP: truncated to the client's limit) or ``pack()``
                    (TCP) back to the client
:class:`Forward`    ask the upstreams: send ``upstream_query(qid)``, wait for a datagram that
                    ``accepts(data, qid)``, send ``relay(data, udp=...)`` to the client; on
                    timeout send ``fail().pack*()`` (SERVFAIL)
``None``            drop it: it is not even a DNS header, or it is a response (answering
                    responses lets two servers bounce packets between them forever)
==================  ===========================================================================

It never raises: malformed input gets FORMERR when a 12-byte header could be read, and an
unexpected error while answering is logged and answered SERVFAIL. dnslib is used only as the wire
codec; it raises more than ``DNSError`` on hostile input (``RecursionError`` on long compression
pointer chains, for one), which is why parsing is guarded by a bare ``except Exception``.

Queries (RFC 1035 §4.1) are held to what real stub resolvers send before dnslib sees them:
opcode QUERY (others NOTIMP), exactly one question, no answer or authority records, at most
:data:`_MAX_ADDITIONAL` additional records (OPT, maybe TSIG) and :data:`MAX_QUERY_SIZE` bytes.
This also bounds how long parsing can take. More than one OPT record, an OPT not owned by the
root, or a question name too long to be encoded again is FORMERR; so is a label that is not
UTF-8 (legal in DNS, but dnslib refuses to decode it - no host name we serve or forward looks
like that). EDNS versions above 0 get
BADVERS (RFC 6891 §6.1.3). Only class IN is served; other classes and zone transfers (AXFR, IXFR)
are REFUSED.

Names at or below one of the zone's apexes (:meth:`~pxe.dns.zone.ZoneSnapshot.apex_of`) are
answered authoritatively, with AA set:

- the RRset asked for, or every RRset at the name for ANY (RFC 8482 allows less; ours are tiny);
- a CNAME when the name has one, then the chase goes on at its target while the target is
  inside the zone (RFC 1034 §4.3.2); the rcode is that of the last name in the chain (RFC 6604);
- a target outside the zone is forwarded for the rest of the chain (the client's stub resolver
  will not chase it) and the upstream's answer is appended to our CNAMEs; without forwarding
  the reply stops at the CNAME;
- a name with no records and nothing below it is NXDOMAIN, with the apex's SOA in the authority
  section for negative caching (RFC 2308 §3); a name with other types, an apex or an empty
  non-terminal (RFC 8020) is NOERROR/NODATA with the same SOA.

Anything else is forwarded, or REFUSED when there are no upstreams (``forwarding=False``). RA is
set exactly when forwarding is possible. RD and CD are copied from the query (RFC 1035 §4.1.1,
RFC 4035 §3.1.6), and the first owner name echoes the question's spelling, so resolvers that
randomize the case of query names (dns-0x20) see their own bits back.

UDP size (RFC 1035 §4.2.1, RFC 6891 §6.2.5): 512 bytes without EDNS, else the client's payload
size between 512 and our own :data:`MAX_UDP_PAYLOAD`. A longer reply goes out with TC set and
only the question (and OPT) so the client retries over TCP (RFC 2181 §9, RFC 7766).
"""

from __future__ import annotations

import enum
import logging
import struct
from dataclasses import dataclass

from dnslib import (  # type: ignore[import-untyped]
    CNAME,
    EDNS0,
    PTR,
    RR,
    SOA,
    A,
    DNSBuffer,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
)

from pxe.dns.zone import MAX_CNAME_CHAIN, Name, RRset, Zone, ZoneSnapshot

__all__ = [
    "MAX_QUERY_SIZE",
    "MAX_TCP_MESSAGE",
    "MAX_UDP_PAYLOAD",
    "MIN_UDP_PAYLOAD",
    "Answer",
    "Forward",
    "Rcode",
    "Reply",
    "answer",
    "is_truncated",
    "reply_rcode",
    "truncate",
]

logger = logging.getLogger(__name__)

#: UDP reply limit without EDNS (RFC 1035 §4.2.1).
MIN_UDP_PAYLOAD = 512
#: The EDNS payload size we advertise and the most we send over UDP: the DNS Flag Day 2020 value,
#: which fits an IPv6 minimum MTU without fragmentation.
MAX_UDP_PAYLOAD = 1232
#: TCP messages carry a 16-bit length (RFC 1035 §4.2.2).
MAX_TCP_MESSAGE = 65535
#: Longest query accepted; a real one is a header, one name and an OPT record (padded ones
#: reach 468 bytes, RFC 8467).
MAX_QUERY_SIZE = 4096
_MAX_ADDITIONAL = 2
_HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount (RFC 1035 §4.1.1)

# Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.2 for CD).
_QR = 0x8000
_AA = 0x0400
_TC = 0x0200
_RD = 0x0100
_RA = 0x0080
_CD = 0x0010
_OPCODE_QUERY = 0

# RR types (RFC 1035 §3.2.2-3.2.3, RFC 1995 IXFR, RFC 6891 OPT).
_T_A = 1
_T_CNAME = 5
_T_SOA = 6
_T_PTR = 12
_T_OPT = 41
_T_IXFR = 251
_T_AXFR = 252
_T_ANY = 255
_CLASS_IN = 1
_TYPE_CODES: dict[str, int] = {"A": _T_A, "CNAME": _T_CNAME, "PTR": _T_PTR}
_TYPE_NAMES: dict[int, str] = {code: name for name, code in _TYPE_CODES.items()}


class Rcode(enum.IntEnum):
    """Response codes (RFC 1035 §4.1.1; BADVERS is extended, RFC 6891 §9)."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    BADVERS = 16


def truncate(message: DNSRecord, limit: int) -> bytes:
    """Pack ``message``; if that exceeds ``limit`` bytes, pack it with TC set and only its
    question and OPT record instead (the client retries over TCP)."""
    data = bytes(message.pack())
    if len(data) <= limit:
        return data
    header = DNSHeader(id=message.header.id, bitmap=message.header.bitmap | _TC)
    opt = [rr for rr in message.ar if rr.rtype == _T_OPT]
    return bytes(DNSRecord(header, questions=list(message.questions), ar=opt).pack())


def is_truncated(reply: bytes) -> bool:
    """Whether a reply on the wire has TC set."""
    return len(reply) >= _HEADER.size and bool(reply[2] << 8 & _TC)


def reply_rcode(reply: bytes) -> int:
    """The header rcode of a reply on the wire (the low four bits; -1 for a short datagram)."""
    return reply[3] & 0x0F if len(reply) >= _HEADER.size else -1


@dataclass(frozen=True, eq=False)
class Reply:
    """A complete reply to send back to the client.

    :param message: the reply, as a dnslib message.
    :param udp_limit: the most the client accepts over UDP (see the module docstring).
    """

    message: DNSRecord
    udp_limit: int = MIN_UDP_PAYLOAD

    @property
    def rcode(self) -> int:
        """The full rcode, with the extended bits of an OPT record (RFC 6891 §6.1.3)."""
        rcode = int(self.message.header.rcode)
        for rr in self.message.ar:
            if rr.rtype == _T_OPT:
                rcode |= int(rr.edns_rcode) << 4
        return rcode

    def pack(self) -> bytes:
        """The reply for a TCP client."""
        return truncate(self.message, MAX_TCP_MESSAGE)

    def pack_udp(self) -> bytes:
        """The reply for a UDP client: TC and no records when it would exceed ``udp_limit``."""
        return truncate(self.message, self.udp_limit)


@dataclass(frozen=True, eq=False)
class Forward:
    """The query is for someone else: ask the upstreams and relay their reply.

    :param request: the client's query, parsed.
    :param raw: the client's query as received.
    :param udp_limit: the most the client accepts over UDP.
    :param prefix: set when chasing a CNAME out of the zone: our authoritative reply so far
        (question and CNAMEs) to which the upstream's answer for ``question`` is appended.
    :param question: what to ask the upstream (the client's question unless chasing).

    Send each upstream attempt with a fresh random ``qid``; only a datagram that ``accepts`` may
    be relayed (an answer to another question, or spoofed, would otherwise reach the client).
    """

    request: DNSRecord
    raw: bytes
    udp_limit: int
    prefix: DNSRecord | None = None
    question: DNSQuestion | None = None

    @property
    def qname(self) -> str:
        """The name asked upstream, for logs."""
        return str((self.question or self.request.q).qname)

    def upstream_query(self, qid: int) -> bytes:
        """The query to send upstream under message ID ``qid``.

        A plain forward is the client's own bytes with the ID replaced, so its EDNS options and
        flags reach the upstream unchanged. A CNAME chase asks for the target with RD set.
        """
        if self.prefix is None:
            return struct.pack("!H", qid) + self.raw[2:]
        assert self.question is not None
        header = DNSHeader(id=qid, bitmap=_RD | (self.request.header.bitmap & _CD))
        query = DNSRecord(header, q=DNSQuestion(self.question.qname, self.question.qtype, _CLASS_IN))
        query.add_ar(EDNS0(udp_len=MAX_UDP_PAYLOAD, flags="do" if _client_do(self.request) else ""))
        return bytes(query.pack())

    def accepts(self, data: bytes, qid: int) -> bool:
        """Whether ``data`` is the upstream's response to ``upstream_query(qid)``: same ID, QR
        set, and the same single question (name compared case-insensitively)."""
        if len(data) < _HEADER.size:
            return False
        rid, flags, qdcount, *_ = _HEADER.unpack_from(data)
        if rid != qid or not flags & _QR or qdcount != 1:
            return False
        expected = self.question or self.request.q
        try:
            buffer = DNSBuffer(data)
            buffer.offset = _HEADER.size
            question = DNSQuestion.parse(buffer)
        except Exception:  # dnslib raises several types on malformed names
            return False
        return bool(
            question.qtype == expected.qtype and question.qclass == expected.qclass and question.qname == expected.qname
        )

    def relay(self, data: bytes, *, udp: bool) -> bytes:
        """The client's reply made from an accepted upstream response ``data``."""
        limit = self.udp_limit if udp else MAX_TCP_MESSAGE
        if self.prefix is not None:
            return self._splice(data, limit)
        if len(data) <= limit:
            return struct.pack("!H", self.request.header.id) + data[2:]
        # Too big for the client's UDP limit: our own question with the upstream's flags and TC.
        _, flags, *_ = _HEADER.unpack_from(data)
        header = DNSHeader(id=self.request.header.id, bitmap=flags | _TC)
        opt = [_reply_opt(self.request)] if _client_opt(self.request) is not None else []
        return bytes(DNSRecord(header, q=self.request.q, ar=opt).pack())

    def fail(self, rcode: Rcode = Rcode.SERVFAIL) -> Reply:
        """The reply when no upstream answered (SERVFAIL) or forwarding is refused."""
        message = _skeleton(self.request, ra=True)
        message.header.rcode = rcode
        return Reply(message, self.udp_limit)

    def _splice(self, data: bytes, limit: int) -> bytes:
        assert self.prefix is not None
        prefix = self.prefix
        header = DNSHeader(id=prefix.header.id, bitmap=prefix.header.bitmap)
        combined = DNSRecord(header, questions=list(prefix.questions), rr=list(prefix.rr), ar=list(prefix.ar))
        try:
            upstream = DNSRecord.parse(data)
        except Exception:  # an answer dnslib cannot read: the CNAMEs alone are still true
            logger.debug("dns: unreadable upstream answer for CNAME target %s", self.qname)
            return truncate(combined, limit)
        combined.header.rcode = upstream.header.rcode
        combined.header.tc = upstream.header.tc
        combined.rr.extend(rr for rr in upstream.rr if rr.rtype != _T_OPT)
        combined.auth.extend(rr for rr in upstream.auth if rr.rtype != _T_OPT)
        return truncate(combined, limit)


Answer = Reply | Forward | None


def answer(query: bytes, zone: Zone | ZoneSnapshot, *, forwarding: bool = True) -> Answer:
    """Decide what to do with ``query`` (see the module docstring).

    :param query: one DNS message as received (UDP payload, or a TCP message without its
        length prefix).
    :param zone: the authoritative data; a :class:`~pxe.dns.zone.Zone` is read once, so a
        concurrent ``replace`` is seen entirely or not at all.
    :param forwarding: whether upstreams exist: out-of-zone names give :class:`Forward` and
        replies carry RA; without, they are REFUSED.
    :returns: a :class:`Reply`, a :class:`Forward` or ``None`` (drop). Never raises.
    """
    if len(query) < _HEADER.size:
        return None
    query = bytes(query)
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(query)
    if flags & _QR:
        return None
    if (flags >> 11) & 0xF != _OPCODE_QUERY:
        return _bare(qid, flags, Rcode.NOTIMP, forwarding)
    if qdcount != 1 or ancount or nscount or arcount > _MAX_ADDITIONAL or len(query) > MAX_QUERY_SIZE:
        return _bare(qid, flags, Rcode.FORMERR, forwarding)
    try:
        request = DNSRecord.parse(query)
    except Exception:
        return _bare(qid, flags, Rcode.FORMERR, forwarding)
    try:
        snapshot = zone.snapshot() if isinstance(zone, Zone) else zone
        return _answer(request, query, snapshot, forwarding)
    except Exception:
        logger.exception("dns: failed to answer query id %d", qid)
        return _bare(qid, flags, Rcode.SERVFAIL, forwarding)


# -- internals ----------------------------------------------------------------------------------


def _bare(qid: int, flags: int, rcode: Rcode, forwarding: bool) -> Reply:
    """A reply with a header only: for queries whose question cannot be trusted."""
    bitmap = _QR | (flags & (0xF << 11)) | (flags & (_RD | _CD)) | (_RA if forwarding else 0) | rcode
    return Reply(DNSRecord(DNSHeader(id=qid, bitmap=bitmap)))


def _client_opt(request: DNSRecord) -> RR | None:
    for rr in request.ar:
        if rr.rtype == _T_OPT:
            return rr
    return None


def _client_do(request: DNSRecord) -> bool:
    opt = _client_opt(request)
    return opt is not None and bool(opt.edns_do)


def _reply_opt(request: DNSRecord, rcode: int = 0) -> RR:
    # RFC 3225 §3: the DO bit is copied into the response.
    return EDNS0(udp_len=MAX_UDP_PAYLOAD, ext_rcode=rcode >> 4, flags="do" if _client_do(request) else "")


def _skeleton(request: DNSRecord, *, ra: bool, aa: bool = False) -> DNSRecord:
    """An empty reply to ``request``: same ID and question, RD and CD copied, OPT if it had one."""
    bitmap = _QR | (request.header.bitmap & (_RD | _CD)) | (_RA if ra else 0) | (_AA if aa else 0)
    reply = DNSRecord(DNSHeader(id=request.header.id, bitmap=bitmap), q=request.q)
    if _client_opt(request) is not None:
        reply.add_ar(_reply_opt(request))
    return reply


def _with_rcode(reply: DNSRecord, rcode: Rcode) -> DNSRecord:
    reply.header.rcode = rcode & 0xF
    for rr in reply.ar:
        if rr.rtype == _T_OPT:
            rr.ttl = (rr.ttl & 0x00FFFFFF) | (rcode >> 4) << 24
    return reply


def _udp_limit(request: DNSRecord) -> int:
    opt = _client_opt(request)
    if opt is None:
        return MIN_UDP_PAYLOAD
    return max(MIN_UDP_PAYLOAD, min(int(opt.rclass), MAX_UDP_PAYLOAD))  # OPT CLASS = payload size


def _encodable(name: DNSLabel) -> bool:
    # dnslib reads a length octet of 64-191 (the obsolete extended label types 01 and 10,
    # RFC 6891 §5) as a long label, and would then fail to pack the name again.
    return len(name) <= 253 and all(len(label) <= 63 for label in name.label)


def _labels(label: DNSLabel) -> Name:
    # ASCII-only case folding (RFC 4343); latin-1 maps every byte, and our labels are ASCII.
    return tuple(part.lower().decode("latin-1") for part in label.label)


def _dns_name(text: str) -> DNSLabel:
    # From bytes, so dnslib does not run the IDNA codec over names that are already ASCII.
    return DNSLabel(text.encode("ascii"))


def _answer(request: DNSRecord, raw: bytes, zone: ZoneSnapshot, forwarding: bool) -> Answer:
    limit = _udp_limit(request)
    opts = [rr for rr in request.ar if rr.rtype == _T_OPT]
    question = request.q
    if len(opts) > 1 or (opts and opts[0].rname.label) or not _encodable(question.qname):
        # RFC 6891 §6.1.1; and a name we could not encode again cannot be echoed.
        return _bare(request.header.id, request.header.bitmap, Rcode.FORMERR, forwarding)
    if opts and opts[0].edns_ver > 0:
        return Reply(_with_rcode(_skeleton(request, ra=forwarding), Rcode.BADVERS), limit)
    if question.qclass != _CLASS_IN or question.qtype in (_T_AXFR, _T_IXFR):
        return Reply(_with_rcode(_skeleton(request, ra=forwarding), Rcode.REFUSED), limit)
    name = _labels(question.qname)
    apex = zone.apex_of(name)
    if apex is None:
        if not forwarding:
            return Reply(_with_rcode(_skeleton(request, ra=False), Rcode.REFUSED), limit)
        return Forward(request, raw, limit)
    reply = _skeleton(request, ra=forwarding, aa=True)
    target = _fill(reply, question, name, apex, zone)
    if target is not None and forwarding:
        chase = DNSQuestion(_dns_name(target), question.qtype, _CLASS_IN)
        return Forward(request, raw, limit, prefix=reply, question=chase)
    return Reply(reply, limit)


def _fill(reply: DNSRecord, question: DNSQuestion, name: Name, apex: Name, zone: ZoneSnapshot) -> str | None:
    """Add the authoritative answer for ``name`` to ``reply``.

    :returns: the CNAME target outside the zone where the chain left it, else ``None``.
    """
    qtype = question.qtype
    owner = question.qname  # the first owner name echoes the question's spelling
    for _ in range(MAX_CNAME_CHAIN + 1):
        rrsets = zone.lookup(name)
        if rrsets is None:
            reply.header.rcode = Rcode.NXDOMAIN
            reply.add_auth(_soa_rr(apex, zone))
            return None
        if qtype == _T_ANY:
            for rrset in rrsets.values():
                _add_rrset(reply, owner, rrset)
            if name == apex:
                reply.add_answer(_soa_rr(apex, zone))
            if not reply.rr:
                reply.add_auth(_soa_rr(apex, zone))
            return None
        wanted = rrsets.get(_TYPE_NAMES.get(qtype, ""))
        if wanted is not None:
            _add_rrset(reply, owner, wanted)
            return None
        if qtype == _T_SOA and name == apex:
            reply.add_answer(_soa_rr(apex, zone))
            return None
        cname = rrsets.get("CNAME")
        if cname is None:
            reply.add_auth(_soa_rr(apex, zone))  # NODATA (RFC 2308 §2.2)
            return None
        _add_rrset(reply, owner, cname)
        target = cname.values[0]
        name = tuple(target.split("."))
        next_apex = zone.apex_of(name)
        if next_apex is None:
            return target
        apex, owner = next_apex, _dns_name(target)
    return None  # unreachable while zones validate chain length; stop rather than loop


def _add_rrset(reply: DNSRecord, owner: DNSLabel, rrset: RRset) -> None:
    code = _TYPE_CODES[rrset.rtype]
    for value in rrset.values:
        rdata = A(value) if rrset.rtype == "A" else (PTR if rrset.rtype == "PTR" else CNAME)(_dns_name(value))
        reply.add_answer(RR(owner, code, ttl=rrset.ttl, rdata=rdata))


def _soa_rr(apex: Name, zone: ZoneSnapshot) -> RR:
    soa = zone.soa
    times = (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum)
    rdata = SOA(_dns_name(soa.mname), _dns_name(soa.rname), times)
    return RR(_dns_name(".".join(apex)), _T_SOA, ttl=soa.minimum, rdata=rdata)
