"""The one writer of a server's provision state (``appliance/states.py`` holds the table).

Every change of ``provision_state`` goes through :meth:`ProvisionService.fire`: it locks the
server's row (``SELECT … FOR UPDATE`` on PostgreSQL), asks :func:`~appliance.states.advance` for
the next state, and writes it with a compare-and-set ``UPDATE … WHERE provision_state = <old>``.
The compare-and-set is what makes the lock hold on SQLite too, where ``FOR UPDATE`` does nothing:
two appliances (or a task and the agent's callback) firing at the same node cannot both move it
from the same state; the loser gets a 409 and reads the state again. Nothing else assigns these
columns; a test greps the code for it.

The writer also keeps what goes with a state: the time it was entered (wait-state TTLs count from
it), the state remembered across maintenance, ``last_error`` (set on the way into a failed state,
kept until the next piece of work starts) and the "provisioning failed" alert of the server.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.config import ProvisioningSettings
from appliance.db.session import SessionFactory, unit_of_work
from appliance.errors import Conflict, NotFound
from appliance.models import ServerHardware
from appliance.repositories.server_hardware import ServerHardwareRepository
from appliance.services.alerts import AlertService
from appliance.states import FAILED_STATES, STABLE, TTL_S, WAIT_STATES, Event, ProvisionState, advance

ALERT_PROVISION_FAILED = "Ingot.ServerHardware.ProvisioningFailed"


@dataclass(frozen=True)
class Transition:
    server_id: str
    name: str
    event: Event
    before: ProvisionState
    after: ProvisionState


class ProvisionService:
    def __init__(self, db: Session, clock: Clock = system_clock) -> None:
        self.db = db
        self.clock = clock
        self.servers = ServerHardwareRepository(db)

    def fire(self, server_id: str, event: Event | str, *, error: str | None = None,
             expect: ProvisionState | str | None = None) -> Transition:
        """Apply ``event`` to the server and return what happened.

        :param error: why, for ``fail``, ``abort`` and ``timeout``: becomes ``last_error``.
        :param expect: the state the caller believes the server is in; a different one is a 409
            (a stale caller must not move a node that moved on without it).
        :raises NotFound: no such server.
        :raises InvalidTransition: the table has no edge for ``event`` here (409).
        :raises Conflict: another writer changed the state first, or ``expect`` does not hold.
        """
        event = Event(event)
        row = self.servers.get(server_id, for_update=True)
        if row is None:
            raise NotFound(kind="server hardware", ident=server_id)
        before = ProvisionState(row.provision_state)
        if expect is not None and before != ProvisionState(expect):
            raise Conflict(reason=f"{row.name} is in provision state {before}, not {ProvisionState(expect)}.")
        remembered = ProvisionState(row.provision_previous) if row.provision_previous else None
        after = advance(before, event, previous=remembered)
        now = self.clock()
        values: dict[str, object] = {"provision_state": after.value, "provision_updated": now, "modified": now}
        if event == Event.MAINTAIN:
            values["provision_previous"] = before.value
        elif event == Event.UNMAINTAIN:
            values["provision_previous"] = None
        if after in FAILED_STATES:
            values["last_error"] = error or _default_error(event, before)
        elif after not in STABLE and before in STABLE:
            values["last_error"] = None  # new work starts: the old failure is history
        result = self.db.execute(
            update(ServerHardware)
            .where(ServerHardware.id == server_id, ServerHardware.provision_state == before.value)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if int(result.rowcount) != 1:  # type: ignore[attr-defined]
            raise Conflict(reason=f"{row.name} changed provision state while {event} was applied; read it again.")
        self.db.refresh(row)
        self._alert(row, before, after)
        return Transition(row.id, row.name, event, before, after)

    def _alert(self, row: ServerHardware, before: ProvisionState, after: ProvisionState) -> None:
        alerts = AlertService(self.db, self.clock)
        uri = f"/rest/server-hardware/{row.id}"
        if after in FAILED_STATES:
            alerts.raise_alert(
                ALERT_PROVISION_FAILED, "Critical", f"{row.name}: {after}: {row.last_error}",
                corrective_action="Read the server's last error, fix the cause, then retry or release the server.",
                resource_uri=uri, resource_name=row.name, resource_category="server-hardware",
            )
        elif before in FAILED_STATES:
            alerts.clear_condition(ALERT_PROVISION_FAILED, uri)

    def expired_waits(self, ttl_s: dict[ProvisionState, int] | None = None) -> list[tuple[str, ProvisionState, int]]:
        """(server id, wait state, TTL) of every server whose wait state outlived its time-to-live."""
        ttls = ttl_s or dict(TTL_S)
        now = self.clock()
        rows = self.db.execute(
            select(ServerHardware.id, ServerHardware.provision_state, ServerHardware.provision_updated)
            .where(ServerHardware.provision_state.in_([s.value for s in WAIT_STATES]))
        ).all()
        expired = []
        for server_id, state, entered in rows:
            ttl = ttls[ProvisionState(state)]
            if entered is None or _older(entered, now, ttl):
                expired.append((server_id, ProvisionState(state), ttl))
        return expired


def fire_event(factory: SessionFactory, clock: Clock, server_id: str, event: Event, *,
               expect: ProvisionState | None = None, error: str | None = None) -> ProvisionState:
    """:meth:`ProvisionService.fire` in a transaction of its own (task handlers, in a worker thread)."""
    with unit_of_work(factory) as db:
        return ProvisionService(db, clock).fire(server_id, event, expect=expect, error=error).after


def time_out(factory: SessionFactory, clock: Clock, server_id: str, wait_state: ProvisionState, ttl_s: int,
             why: str = "") -> None:
    """Work waiting on a server saw its wait state outlive ``ttl_s``: fire ``timeout``, unless the
    server moved on meanwhile (then the caller reads the new state)."""
    with contextlib.suppress(Conflict):
        fire_event(factory, clock, server_id, Event.TIMEOUT, expect=wait_state,
                   error=f"Timed out in {wait_state} after {ttl_s} s{why}.")


def wait_ttls(settings: ProvisioningSettings) -> dict[ProvisionState, int]:
    """Each wait state's time-to-live from the settings (the table's TTL_S are their defaults)."""
    return {ProvisionState.INSPECT_WAIT: settings.inspect_wait_s, ProvisionState.DEPLOY_WAIT: settings.deploy_wait_s,
            ProvisionState.CAPTURE_WAIT: settings.capture_wait_s, ProvisionState.CLEAN_WAIT: settings.clean_wait_s}


def _older(entered: datetime, now: datetime, ttl_s: int) -> bool:
    return now - entered > timedelta(seconds=ttl_s)


def _default_error(event: Event, before: ProvisionState) -> str:
    if event == Event.TIMEOUT:
        return f"Timed out in {before}: nothing came back from the server within its time-to-live."
    if event == Event.ABORT:
        return f"Aborted in {before}."
    return f"Failed in {before}."


def expire_waits(db: Session, clock: Clock = system_clock,
                 ttl_s: dict[ProvisionState, int] | None = None) -> list[Transition]:
    """Send ``timeout`` to every server whose wait state expired (the periodic TTL check)."""
    service = ProvisionService(db, clock)
    done = []
    for server_id, state, ttl in service.expired_waits(ttl_s):
        try:
            done.append(service.fire(server_id, Event.TIMEOUT, expect=state,
                                     error=f"Timed out in {state} after {ttl} s without word from the server."))
        except (Conflict, NotFound):
            continue  # it moved on (or went away) since the query: nothing expired
    return done
