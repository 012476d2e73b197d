"""The DHCP backend over the database: memory for answering, the database for durability.

Theory of operation
-------------------
:func:`pxe.dhcp.policy.decide` is synchronous and runs on the event loop, so the backend answers
from memory (it *is* a :class:`~pxe.backend.MemoryBackend`) and never touches the database while
deciding. Every change it makes - a commit before an ACK, a release, a decline - is appended to
a journal. :meth:`DurableBackend.persist` writes the journal in one transaction; the DHCP server
calls it before sending the ACKs that depend on those changes, and ACKs that arrive while one
write is in flight wait for the next (group commit). A crash between the decision and the write
loses only ACKs that were never sent, which the clients simply retry.

At start, :meth:`DurableBackend.load` rebuilds memory from the table: current bindings, addresses
held back after a DECLINE, and each MAC's previous address. Reservations (hosts) are replaced
wholesale by :meth:`set_hosts` whenever the operator's data changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from appliance.models import DhcpLease
from pxe.backend import HostConfig, Lease, MemoryBackend, normalise_mac

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Change:
    ip: IPv4Address
    mac: str
    state: str  # bound | released | declined
    expires: float


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class DurableBackend(MemoryBackend):
    """A :class:`~pxe.backend.MemoryBackend` whose changes are journalled and written by :meth:`persist`."""

    def __init__(
        self,
        engine: Engine,
        pools: Iterable[tuple[IPv4Address | str, IPv4Address | str]] = (),
        hosts: Iterable[HostConfig] = (),
        *,
        decline_hold: float = 600.0,
    ) -> None:
        super().__init__(pools, hosts, decline_hold=decline_hold)
        self.engine = engine
        self._journal: list[_Change] = []
        self._write_lock = asyncio.Lock()
        self.writes = 0  # transactions written, for the stats and the group-commit test
        self.changes_written = 0

    # -- loading and reconfiguring --

    def load(self, now: float) -> int:
        """Rebuild the lease state from the database; returns the number of live bindings."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(DhcpLease).order_by(DhcpLease.updated)).all()
        for ip in list(self.leases):
            self.unbind(ip)
        self.declined.clear()
        self.previous.clear()
        for row in rows:
            ip, mac, expires = IPv4Address(row.ip), row.mac, row.expires.timestamp()
            if row.state == "declined":
                if expires > now:
                    self.declined[ip] = expires
                continue
            self.previous[mac] = ip
            if row.state == "bound" and expires > now:
                self.bind(Lease(mac, ip, expires))  # rows come oldest first: a MAC's newest wins
        return len(self.leases)

    # -- DhcpBackend, journalled --

    def commit(self, mac: str, ip: IPv4Address, expires: float, now: float) -> bool:
        if not super().commit(mac, ip, expires, now):
            return False
        self._journal.append(_Change(ip, self.leases[ip].mac, "bound", expires))
        return True

    def release(self, mac: str, ip: IPv4Address) -> None:
        held = self.leases.get(ip)
        super().release(mac, ip)
        if held is not None and ip not in self.leases:
            self._journal.append(_Change(ip, held.mac, "released", held.expires))

    def decline(self, mac: str, ip: IPv4Address, now: float) -> None:
        super().decline(mac, ip, now)
        self._journal.append(_Change(ip, normalise_mac(mac), "declined", self.declined[ip]))

    @property
    def pending(self) -> int:
        return len(self._journal)

    async def persist(self) -> None:
        """Write every change journalled so far in one transaction (group commit).

        Concurrent callers queue on a lock; whoever gets it writes everything journalled by then,
        so a caller that waited usually finds its change already written and returns at once.
        """
        async with self._write_lock:
            if not self._journal:
                return
            batch, self._journal = self._journal, []
            try:
                await asyncio.to_thread(self._write, batch)
            except BaseException:
                # Not written: put the changes back in front, so the next persist retries them.
                self._journal[:0] = batch
                raise

    def _write(self, batch: list[_Change]) -> None:
        latest: dict[IPv4Address, _Change] = {}
        for change in batch:
            latest[change.ip] = change  # the last change of an address is its state
        now = datetime.now(UTC)
        rows = [
            {"ip": str(c.ip), "mac": c.mac, "state": c.state, "expires": _when(c.expires), "updated": now}
            for c in latest.values()
        ]
        dialect = self.engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(DhcpLease).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=[DhcpLease.ip],
            set_={name: statement.excluded[name] for name in ("mac", "state", "expires", "updated")},
        )
        with self.engine.connect() as conn:
            if dialect == "sqlite":
                # Leases must survive power loss, not only a process crash: this commit fsyncs the
                # WAL (the appliance's other writes keep NORMAL). Set outside the transaction.
                conn.exec_driver_sql("PRAGMA synchronous=FULL")
            try:
                conn.execute(statement)
                conn.commit()
            finally:
                if dialect == "sqlite":
                    conn.rollback()
                    conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
                    conn.commit()
        self.writes += 1
        self.changes_written += len(rows)
