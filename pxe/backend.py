"""What the network boot services ask about a machine, as narrow :class:`typing.Protocol` classes.

Theory of operation
-------------------
The DHCP policy (:mod:`pxe.dhcp.policy`) is pure: it never reads the database, a clock or a
socket. Everything it needs to know about a client comes through :class:`DhcpBackend`:

* :meth:`~DhcpBackend.lookup` - is this MAC a known host, with a static address, a hostname and
  a boot policy (``netboot``, ``local`` or ``none``)?
* :meth:`~DhcpBackend.lease` - which address should this MAC get right now? It does not bind
  anything; an OFFER is only a proposal (RFC 2131 §4.3.1) and a client may never come back
  for it. It does hold the proposed address back from other clients for a short while (RFC
  2131 §4.3.1: the server "SHOULD" reserve it), or two machines booting at the same moment are
  offered the same address and the loser is NAKed - and some PXE ROMs never start over.
* :meth:`~DhcpBackend.commit` - record the binding. The policy calls it before it builds an ACK,
  so an address is never acknowledged without being stored. It returns ``False`` when the
  address was taken by another MAC in the meantime; the policy then NAKs.
* :meth:`~DhcpBackend.release` / :meth:`~DhcpBackend.decline` - the client gave the address back,
  or found it in use (RFC 2131 §4.3.3: the address must not be handed out again for a while).

Times are seconds on one clock chosen by the caller (the server passes ``time.time()``), as
plain floats so tests can use small integers. ``now`` is an argument of every method that has
to compare expiries, rather than read inside the backend, so a backend stays testable and the
clock lives in the transport.

MAC addresses are lowercase ``aa:bb:cc:dd:ee:ff`` (what :attr:`DhcpPacket.mac` returns).

:class:`MemoryBackend` is the dict-backed implementation used by unit tests and by small
deployments; the appliance implements the same protocol over its database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal, Protocol

__all__ = [
    "BootPolicy",
    "DhcpBackend",
    "HostConfig",
    "Lease",
    "MemoryBackend",
    "is_mac",
    "normalise_mac",
]

#: What a known host gets: ``netboot`` = address and boot options, ``local`` = address only (the
#: firmware then falls through to its next boot device), ``none`` = no answer from us at all.
BootPolicy = Literal["netboot", "local", "none"]


_MAC = re.compile(r"[0-9a-f]{2}([:-][0-9a-f]{2}){5}")


def is_mac(text: str) -> bool:
    """``text`` is an Ethernet MAC written ``aa:bb:cc:dd:ee:ff`` or ``aa-bb-...`` (any case)."""
    return _MAC.fullmatch(text.strip().lower()) is not None


def normalise_mac(mac: str) -> str:
    """``AA-BB-...`` or ``aa:bb:...`` to the lowercase colon form used as a key everywhere."""
    return mac.strip().lower().replace("-", ":")


@dataclass(frozen=True, slots=True)
class HostConfig:
    """A known machine (a static reservation).

    :param mac: the MAC address, any case, ``:`` or ``-`` separated.
    :param ip: the reserved address, or ``None`` to allocate from the pools.
    :param hostname: option 12 in replies, or ``None``.
    :param boot: see :data:`BootPolicy`.
    """

    mac: str
    ip: IPv4Address | None = None
    hostname: str | None = None
    boot: BootPolicy = "netboot"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", normalise_mac(self.mac))


@dataclass(frozen=True, slots=True)
class Lease:
    """One binding: ``ip`` belongs to ``mac`` until ``expires`` (seconds, caller's clock)."""

    mac: str
    ip: IPv4Address
    expires: float


class DhcpBackend(Protocol):
    """The questions :func:`pxe.dhcp.policy.decide` asks. Implementations must not raise for
    well-formed arguments; the policy does not catch backend errors (they are bugs or outages
    the transport logs)."""

    def lookup(self, mac: str) -> HostConfig | None:
        """The static configuration for ``mac``, or ``None`` for an unknown machine."""
        ...

    def lease(self, mac: str, requested_ip: IPv4Address | None, now: float) -> IPv4Address | None:
        """The address ``mac`` should get now, or ``None`` if none is free. Nothing is bound, but
        the address is held back from other MACs for a short offer hold.

        Preference order follows RFC 2131 §4.3.1: the client's current binding, its previous
        binding, ``requested_ip`` if it is valid and free, then any free address.
        """
        ...

    def commit(self, mac: str, ip: IPv4Address, expires: float, now: float) -> bool:
        """Bind ``ip`` to ``mac`` until ``expires``. ``False`` if another MAC holds it at ``now``."""
        ...

    def release(self, mac: str, ip: IPv4Address) -> None:
        """The client gave ``ip`` back (DHCPRELEASE). Ignored unless ``mac`` holds it."""
        ...

    def decline(self, mac: str, ip: IPv4Address, now: float) -> None:
        """The client found ``ip`` in use (DHCPDECLINE): do not hand it to anyone for a while."""
        ...


def _range(first: IPv4Address, last: IPv4Address) -> Iterator[IPv4Address]:
    for value in range(int(first), int(last) + 1):
        yield IPv4Address(value)


class MemoryBackend:
    """A :class:`DhcpBackend` in dictionaries. Not thread safe; the asyncio server is one thread.

    :param pools: ``(first, last)`` address ranges, inclusive, to allocate from.
    :param hosts: static reservations.
    :param decline_hold: seconds a declined address stays out of circulation. RFC 2131 §4.3.3
        only says "mark it as not available"; a bounded hold lets a conflict that was fixed (a
        misconfigured static IP removed) heal on its own.
    :param offer_hold: seconds an offered address is kept from other clients while its client
        comes back with a REQUEST (in memory only: after a restart a client simply asks again).
    """

    def __init__(
        self,
        pools: Iterable[tuple[IPv4Address | str, IPv4Address | str]] = (),
        hosts: Iterable[HostConfig] = (),
        *,
        decline_hold: float = 600.0,
        offer_hold: float = 30.0,
    ) -> None:
        self.pools: list[tuple[IPv4Address, IPv4Address]] = []
        self._cursors: list[int] = []  # per pool: where the next free-address search starts
        self.set_pools(pools)
        self.hosts: dict[str, HostConfig] = {}
        self._reserved: dict[IPv4Address, str] = {}  # reserved address -> its MAC
        self.set_hosts(hosts)
        self.decline_hold = decline_hold
        self.offer_hold = offer_hold
        #: Offered address -> (MAC, hold expiry): proposals not yet requested.
        self.offers: dict[IPv4Address, tuple[str, float]] = {}
        self._offered_to: dict[str, IPv4Address] = {}  # MAC -> its latest offer
        self.leases: dict[IPv4Address, Lease] = {}
        self._bound: dict[str, IPv4Address] = {}  # MAC -> its entry in leases (one per MAC)
        #: Declined address -> time until which it is held back.
        self.declined: dict[IPv4Address, float] = {}
        #: MAC -> the last address it held, kept after expiry/release so a returning client gets
        #: the same address when it is still free (RFC 2131 §4.3.1 "previous binding").
        self.previous: dict[str, IPv4Address] = {}

    def set_pools(self, pools: Iterable[tuple[IPv4Address | str, IPv4Address | str]]) -> None:
        """Replace the address pools."""
        checked = []
        for first, last in pools:
            lo, hi = IPv4Address(first), IPv4Address(last)
            if lo > hi:
                raise ValueError(f"pool {lo}-{hi}: first address is after the last")
            checked.append((lo, hi))
        self.pools, self._cursors = checked, [0] * len(checked)

    def add_host(self, host: HostConfig) -> None:
        """Add or replace a reservation."""
        old = self.hosts.get(host.mac)
        if old is not None and old.ip is not None:
            self._reserved.pop(old.ip, None)
        self.hosts[host.mac] = host
        if host.ip is not None:
            self._reserved[host.ip] = host.mac

    def set_hosts(self, hosts: Iterable[HostConfig]) -> None:
        """Replace every reservation."""
        self.hosts, self._reserved = {}, {}
        for host in hosts:
            self.add_host(host)

    def bind(self, lease: Lease) -> None:
        """Record ``lease`` as the binding of its MAC (and of its address), replacing older ones.
        Every write to :attr:`leases` goes through here or :meth:`unbind`, to keep the MAC index."""
        old = self._bound.get(lease.mac)
        if old is not None and old != lease.ip:
            self.leases.pop(old, None)
        displaced = self.leases.get(lease.ip)
        if displaced is not None and displaced.mac != lease.mac:
            self._bound.pop(displaced.mac, None)
        self.leases[lease.ip] = lease
        self._bound[lease.mac] = lease.ip

    def unbind(self, ip: IPv4Address) -> None:
        lease = self.leases.pop(ip, None)
        if lease is not None and self._bound.get(lease.mac) == ip:
            del self._bound[lease.mac]

    # -- DhcpBackend --

    def lookup(self, mac: str) -> HostConfig | None:
        return self.hosts.get(normalise_mac(mac))

    def lease(self, mac: str, requested_ip: IPv4Address | None, now: float) -> IPv4Address | None:
        mac = normalise_mac(mac)
        ip = self._choose(mac, requested_ip, now)
        if ip is not None:
            self.offers[ip] = (mac, now + self.offer_hold)
            self._offered_to[mac] = ip
            if len(self.offers) > 4 * len(self.leases) + 1024:  # a DISCOVER flood: forget stale holds
                self.offers = {a: h for a, h in self.offers.items() if h[1] > now}
                self._offered_to = {m: a for m, a in self._offered_to.items() if a in self.offers}
        return ip

    def _choose(self, mac: str, requested_ip: IPv4Address | None, now: float) -> IPv4Address | None:
        host = self.hosts.get(mac)
        if host is not None and host.ip is not None:
            # A reservation wins even over a decline: the operator said this machine has this address.
            return host.ip
        current = self._current(mac, now)
        if current is not None:
            return current
        offered = self._offered_to.get(mac)
        if offered is not None:
            holder, until = self.offers.get(offered, ("", 0.0))
            if holder == mac and until > now and self._available(offered, mac, now):
                return offered
        previous = self.previous.get(mac)
        if previous is not None and self._available(previous, mac, now):
            return previous
        if requested_ip is not None and self._available(requested_ip, mac, now):
            return requested_ip
        return self._next_free(mac, now)

    def _next_free(self, mac: str, now: float) -> IPv4Address | None:
        """Next-fit: each pool's search resumes after the address it handed out last and wraps
        around, so a busy pool is not rescanned from its first address for every new client."""
        for index, (first, last) in enumerate(self.pools):
            size = int(last) - int(first) + 1
            start = self._cursors[index]
            for step in range(size):
                offset = (start + step) % size
                ip = IPv4Address(int(first) + offset)
                if self._available(ip, mac, now):
                    self._cursors[index] = (offset + 1) % size
                    return ip
        return None

    def commit(self, mac: str, ip: IPv4Address, expires: float, now: float) -> bool:
        mac = normalise_mac(mac)
        held = self.leases.get(ip)
        if held is not None and held.mac != mac and held.expires > now:
            return False
        self.bind(Lease(mac, ip, expires))  # one address per MAC: a client moving drops its old one
        self.previous[mac] = ip
        self.offers.pop(ip, None)
        return True

    def release(self, mac: str, ip: IPv4Address) -> None:
        held = self.leases.get(ip)
        if held is not None and held.mac == normalise_mac(mac):
            self.unbind(ip)

    def decline(self, mac: str, ip: IPv4Address, now: float) -> None:
        mac = normalise_mac(mac)
        self.declined[ip] = now + self.decline_hold
        held = self.leases.get(ip)
        if held is not None and held.mac == mac:
            self.unbind(ip)
        if self.previous.get(mac) == ip:
            del self.previous[mac]

    # -- helpers --

    def _current(self, mac: str, now: float) -> IPv4Address | None:
        ip = self._bound.get(mac)
        if ip is not None and self.leases[ip].expires > now:
            return ip
        return None

    def in_pool(self, ip: IPv4Address) -> bool:
        """``ip`` lies in one of the pools."""
        return any(first <= ip <= last for first, last in self.pools)

    def _available(self, ip: IPv4Address, mac: str, now: float) -> bool:
        if not self.in_pool(ip):
            return False
        if self.declined.get(ip, float("-inf")) > now:
            return False
        held = self.leases.get(ip)
        if held is not None and held.mac != mac and held.expires > now:
            return False
        offer = self.offers.get(ip)
        if offer is not None and offer[0] != mac and offer[1] > now:
            return False
        # Never hand out an address reserved for another machine, even while that machine is off.
        return self._reserved.get(ip, mac) == mac
