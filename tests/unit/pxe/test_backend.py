"""MemoryBackend: pools, reservations, lease expiry, previous-address reuse, release and decline."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pxe.backend import DhcpBackend, HostConfig, MemoryBackend, normalise_mac

A = "52:54:00:00:00:0a"
B = "52:54:00:00:00:0b"
C = "52:54:00:00:00:0c"


def ip(text: str) -> IPv4Address:
    return IPv4Address(text)


def small_pool(decline_hold: float = 600.0, offer_hold: float = 30.0) -> MemoryBackend:
    return MemoryBackend([("10.0.0.10", "10.0.0.12")], decline_hold=decline_hold, offer_hold=offer_hold)


def test_satisfies_the_protocol() -> None:
    backend: DhcpBackend = MemoryBackend()
    assert backend.lookup(A) is None


def test_mac_normalised() -> None:
    assert normalise_mac(" 52-54-00-AA-BB-CC ") == "52:54:00:aa:bb:cc"
    backend = MemoryBackend(hosts=[HostConfig("52-54-00-00-00-0A", ip("10.0.0.50"), "node1")])
    host = backend.lookup(A.upper())
    assert host is not None and host.hostname == "node1" and host.mac == A


def test_bad_pool_rejected() -> None:
    with pytest.raises(ValueError, match="after the last"):
        MemoryBackend([("10.0.0.12", "10.0.0.10")])


def test_allocates_first_free_then_next() -> None:
    backend = small_pool()
    assert backend.lease(A, None, 0) == ip("10.0.0.10")
    assert backend.commit(A, ip("10.0.0.10"), 100, 0)
    assert backend.lease(B, None, 0) == ip("10.0.0.11")


def test_an_offer_holds_the_address_without_binding_it() -> None:
    backend = small_pool(offer_hold=30)
    # Two machines booting at the same moment are offered different addresses.
    assert backend.lease(A, None, 0) == ip("10.0.0.10")
    assert backend.lease(B, None, 0) == ip("10.0.0.11")
    assert backend.leases == {}, "an offer is only a proposal"
    assert backend.lease(A, None, 5) == ip("10.0.0.10"), "the same client is offered the same address"
    # Next-fit: a new client gets the next address; after wrapping round, a lapsed hold is free again.
    assert backend.lease(C, None, 40) == ip("10.0.0.12")
    assert backend.lease("52:54:00:00:00:0d", None, 40) == ip("10.0.0.10")


def test_requested_address_honoured_when_free_and_in_pool() -> None:
    backend = small_pool()
    assert backend.lease(A, ip("10.0.0.12"), 0) == ip("10.0.0.12")
    assert backend.lease(A, ip("10.0.0.99"), 0) == ip("10.0.0.12")  # outside the pool: its held offer


def test_current_binding_wins_over_requested() -> None:
    backend = small_pool()
    backend.commit(A, ip("10.0.0.11"), 100, 0)
    assert backend.lease(A, ip("10.0.0.12"), 10) == ip("10.0.0.11")


def test_never_hands_out_an_address_leased_to_another_mac() -> None:
    backend = small_pool()
    backend.commit(A, ip("10.0.0.10"), 100, 0)
    assert backend.lease(B, ip("10.0.0.10"), 50) == ip("10.0.0.11")
    assert not backend.commit(B, ip("10.0.0.10"), 150, 50)
    assert backend.leases[ip("10.0.0.10")].mac == A


def test_expired_lease_can_be_reused_by_another_mac() -> None:
    backend = small_pool()
    backend.commit(A, ip("10.0.0.10"), 100, 0)
    assert backend.lease(B, ip("10.0.0.10"), 100) == ip("10.0.0.10")
    assert backend.commit(B, ip("10.0.0.10"), 200, 100)


def test_reuses_previous_address_after_expiry_and_release() -> None:
    backend = small_pool()
    backend.commit(A, ip("10.0.0.12"), 100, 0)
    assert backend.lease(A, None, 500) == ip("10.0.0.12")  # expired but still free
    backend.release(A, ip("10.0.0.12"))
    assert ip("10.0.0.12") not in backend.leases
    assert backend.lease(A, None, 500) == ip("10.0.0.12")


def test_previous_address_not_reused_when_taken() -> None:
    backend = small_pool()
    backend.commit(A, ip("10.0.0.10"), 100, 0)
    backend.commit(B, ip("10.0.0.10"), 300, 200)
    assert backend.lease(A, None, 250) == ip("10.0.0.11")


def test_commit_moves_a_mac_to_one_address() -> None:
    backend = small_pool()
    backend.commit(A, ip("10.0.0.10"), 100, 0)
    backend.commit(A, ip("10.0.0.11"), 100, 0)
    assert set(backend.leases) == {ip("10.0.0.11")}


def test_release_by_another_mac_ignored() -> None:
    backend = small_pool()
    backend.commit(A, ip("10.0.0.10"), 100, 0)
    backend.release(B, ip("10.0.0.10"))
    assert ip("10.0.0.10") in backend.leases


def test_pool_exhaustion() -> None:
    backend = small_pool()
    for mac, last_octet in ((A, 10), (B, 11), (C, 12)):
        assert backend.commit(mac, ip(f"10.0.0.{last_octet}"), 100, 0)
    assert backend.lease("52:54:00:00:00:0d", None, 50) is None


def test_declined_address_held_back_then_returns() -> None:
    backend = small_pool(decline_hold=60)
    backend.commit(A, ip("10.0.0.10"), 100, 0)
    backend.decline(A, ip("10.0.0.10"), 10)
    assert ip("10.0.0.10") not in backend.leases
    assert backend.lease(A, None, 20) == ip("10.0.0.11")  # not even to the decliner
    assert backend.lease(B, ip("10.0.0.10"), 20) == ip("10.0.0.12")  # .11 is offered to A
    assert backend.lease(B, ip("10.0.0.10"), 71) == ip("10.0.0.10")


def test_reservation_wins_and_is_never_pooled_for_others() -> None:
    backend = MemoryBackend([("10.0.0.10", "10.0.0.11")], [HostConfig(A, ip("10.0.0.10"))])
    assert backend.lease(A, ip("10.0.0.11"), 0) == ip("10.0.0.10")
    assert backend.lease(B, ip("10.0.0.10"), 0) == ip("10.0.0.11")
    backend.commit(B, ip("10.0.0.11"), 100, 0)
    assert backend.lease(C, None, 0) is None


def test_host_without_address_allocates_from_pool() -> None:
    backend = small_pool()
    backend.add_host(HostConfig(A, None, "node", "local"))
    assert backend.lease(A, None, 0) == ip("10.0.0.10")
    host = backend.lookup(A)
    assert host is not None and host.boot == "local"
