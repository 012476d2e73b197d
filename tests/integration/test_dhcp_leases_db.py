"""The database-backed DHCP backend: durable before persist() returns, group-committed, reloaded
after a restart, and never losing a change when a write fails. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.models import DhcpLease
from appliance.netboot.leases import DurableBackend
from pxe.backend import HostConfig

POOL = [(IPv4Address("10.9.0.10"), IPv4Address("10.9.0.20"))]
NOW = 1_800_000_000.0


def macs(n: int) -> list[str]:
    return [f"52:54:00:00:01:{i:02x}" for i in range(n)]


def rows(engine: Engine) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        return {r.ip: (r.mac, r.state) for r in conn.execute(select(DhcpLease))}


def test_commit_is_durable_after_persist_and_survives_restart(ctx: AppContext) -> None:
    backend = DurableBackend(ctx.engine, POOL)
    ip = backend.lease("52:54:00:00:01:01", None, NOW)
    assert ip == IPv4Address("10.9.0.10")
    assert backend.commit("52:54:00:00:01:01", ip, NOW + 600, NOW)
    assert rows(ctx.engine) == {}, "nothing is written before persist"
    asyncio.run(backend.persist())
    assert rows(ctx.engine) == {"10.9.0.10": ("52:54:00:00:01:01", "bound")}

    restarted = DurableBackend(ctx.engine, POOL)
    assert restarted.load(NOW + 1) == 1
    # The same client gets the same address back; another client gets the next one.
    assert restarted.lease("52:54:00:00:01:01", None, NOW + 1) == IPv4Address("10.9.0.10")
    assert restarted.lease("52:54:00:00:01:02", None, NOW + 1) == IPv4Address("10.9.0.11")


def test_many_commits_share_one_write(ctx: AppContext) -> None:
    backend = DurableBackend(ctx.engine, POOL)
    for mac in macs(8):
        ip = backend.lease(mac, None, NOW)
        assert ip is not None and backend.commit(mac, ip, NOW + 600, NOW)

    async def flush_concurrently() -> None:
        await asyncio.gather(*(backend.persist() for _ in range(8)))

    asyncio.run(flush_concurrently())
    assert backend.writes == 1 and backend.changes_written == 8
    assert len(rows(ctx.engine)) == 8


def test_release_decline_and_expiry_are_reloaded(ctx: AppContext) -> None:
    a, b, c = macs(3)
    backend = DurableBackend(ctx.engine, POOL)
    for mac in (a, b, c):
        ip = backend.lease(mac, None, NOW)
        assert ip is not None and backend.commit(mac, ip, NOW + 60, NOW)
    backend.release(a, IPv4Address("10.9.0.10"))
    backend.decline(b, IPv4Address("10.9.0.11"), NOW)
    asyncio.run(backend.persist())
    assert rows(ctx.engine) == {"10.9.0.10": (a, "released"), "10.9.0.11": (b, "declined"),
                                "10.9.0.12": (c, "bound")}

    later = DurableBackend(ctx.engine, POOL)
    assert later.load(NOW + 120) == 0, "c's lease expired"
    assert IPv4Address("10.9.0.11") in later.declined, "a declined address stays held back"
    # a and c come back to their previous addresses; a newcomer never gets the declined one.
    assert later.lease(a, None, NOW + 120) == IPv4Address("10.9.0.10")
    assert later.lease(c, None, NOW + 120) == IPv4Address("10.9.0.12")
    assert later.lease("52:54:00:00:02:00", IPv4Address("10.9.0.11"), NOW + 120) != IPv4Address("10.9.0.11")


def test_failed_write_keeps_the_changes_for_the_next_persist(ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = DurableBackend(ctx.engine, POOL)
    mac = macs(1)[0]
    ip = backend.lease(mac, None, NOW)
    assert ip is not None and backend.commit(mac, ip, NOW + 600, NOW)

    real_write = backend._write

    def broken(batch: object) -> None:
        raise OperationalError("INSERT", {}, Exception("disk full"))

    monkeypatch.setattr(backend, "_write", broken)
    with pytest.raises(OperationalError):
        asyncio.run(backend.persist())
    assert backend.pending == 1 and rows(ctx.engine) == {}
    monkeypatch.setattr(backend, "_write", real_write)
    asyncio.run(backend.persist())
    assert backend.pending == 0 and rows(ctx.engine) == {str(ip): (mac, "bound")}


def test_reservations_are_honoured_and_replaced(ctx: AppContext) -> None:
    mac = macs(1)[0]
    backend = DurableBackend(ctx.engine, POOL, [HostConfig(mac, IPv4Address("10.9.0.15"))])
    assert backend.lease(mac, None, NOW) == IPv4Address("10.9.0.15")
    # Nobody else may take a reserved address.
    assert backend.lease("52:54:00:00:09:09", IPv4Address("10.9.0.15"), NOW) == IPv4Address("10.9.0.10")
    backend.set_hosts([])
    # Now a pool client like any other, still offered the address it was offered before.
    assert backend.lease(mac, None, NOW) == IPv4Address("10.9.0.15")
    assert backend.lease(mac, None, NOW + 60) == IPv4Address("10.9.0.11"), "every hold has lapsed: next fit"
    with unit_of_work(ctx.session_factory) as db:
        assert db.scalars(select(DhcpLease)).first() is None


def test_settings_win_only_where_given(ctx: AppContext) -> None:
    from ipaddress import IPv4Network

    from appliance.services.netboot import NetbootService

    network = IPv4Network("10.9.0.0/24")
    defaults = {"mode": "server", "leaseTime": 3600, "unknownMacPolicy": "discovery"}
    with unit_of_work(ctx.session_factory) as db:
        subnet = NetbootService(db).apply_settings(network, {"range": "10.9.0.10-10.9.0.20"}, defaults)
        subnet_id = subnet.id
        assert (subnet.range_first, subnet.lease_time) == ("10.9.0.10", 3600)
    with unit_of_work(ctx.session_factory) as db:  # the operator changes the lease time through the API
        NetbootService(db).update_subnet(subnet_id, {"leaseTime": 900, "unknownMacPolicy": "ignore"})
    with unit_of_work(ctx.session_factory) as db:  # restart: the range is given again, the rest is not
        subnet = NetbootService(db).apply_settings(network, {"range": "10.9.0.30-10.9.0.40"}, defaults)
        assert subnet.id == subnet_id
        assert (subnet.range_first, subnet.range_last) == ("10.9.0.30", "10.9.0.40")
        assert (subnet.lease_time, subnet.unknown_mac) == (900, "ignore")
