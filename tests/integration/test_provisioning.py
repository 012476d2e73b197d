"""The provision state writer (appliance/services/provisioning.py) on both database backends: it
follows the table, keeps last_error and the maintenance memory, raises and clears the failure
alert, expires wait states, and lets exactly one of several concurrent writers move a node."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.errors import Conflict, InvalidTransition
from appliance.models import Alert, ServerHardware
from appliance.services.provisioning import ALERT_PROVISION_FAILED, ProvisionService, expire_waits
from appliance.states import TTL_S, Event, ProvisionState
from tests.conftest import FakeClock

PS = ProvisionState
REPO = Path(__file__).resolve().parents[2]


def add_server(ctx: AppContext, name: str = "rack1-u01", state: PS = PS.MANAGEABLE) -> str:
    with unit_of_work(ctx.session_factory) as db:
        row = ServerHardware(name=name, driver="fake", address=f"{name}.example", port=623, username="admin",
                             password_sealed="x", state="NoProfileApplied", provision_state=state.value)
        db.add(row)
        db.flush()
        return row.id


def fire(ctx: AppContext, clock: FakeClock, server_id: str, event: Event, **kwargs: object) -> PS:
    with unit_of_work(ctx.session_factory) as db:
        return ProvisionService(db, clock).fire(server_id, event, **kwargs).after  # type: ignore[arg-type]


def read(ctx: AppContext, server_id: str) -> ServerHardware:
    with unit_of_work(ctx.session_factory) as db:
        row = db.get(ServerHardware, server_id)
        assert row is not None
        return row


def active_alerts(ctx: AppContext) -> list[Alert]:
    with unit_of_work(ctx.session_factory) as db:
        return [a for a in db.query(Alert).all() if a.alert_type == ALERT_PROVISION_FAILED and a.state == "Active"]


def test_a_node_walks_the_table_and_keeps_when_it_entered(ctx: AppContext, clock: FakeClock) -> None:
    server = add_server(ctx)
    for event, expected in [(Event.INSPECT, PS.INSPECTING), (Event.WAIT, PS.INSPECT_WAIT),
                            (Event.RESUME, PS.INSPECTING), (Event.DONE, PS.AVAILABLE)]:
        clock.advance(seconds=1)
        assert fire(ctx, clock, server, event) == expected
        row = read(ctx, server)
        assert row.provision_state == expected.value
        assert row.provision_updated == clock.now


def test_an_event_the_state_does_not_allow_is_refused_and_changes_nothing(ctx: AppContext, clock: FakeClock) -> None:
    server = add_server(ctx)
    before = read(ctx, server)
    with pytest.raises(InvalidTransition) as raised:
        fire(ctx, clock, server, Event.DEPLOY)
    assert raised.value.http_status == 409 and "inspect" in raised.value.details
    after = read(ctx, server)
    assert (after.provision_state, after.version) == (before.provision_state, before.version)


def test_failure_keeps_last_error_and_alerts_until_work_starts_again(ctx: AppContext, clock: FakeClock) -> None:
    server = add_server(ctx)
    fire(ctx, clock, server, Event.INSPECT)
    fire(ctx, clock, server, Event.WAIT)
    assert fire(ctx, clock, server, Event.FAIL, error="the agent found no disk") == PS.INSPECT_FAILED
    assert read(ctx, server).last_error == "the agent found no disk"
    [alert] = active_alerts(ctx)
    assert "the agent found no disk" in alert.description and alert.resource_uri.endswith(server)
    assert fire(ctx, clock, server, Event.INSPECT) == PS.INSPECTING  # retry
    assert read(ctx, server).last_error is None
    assert active_alerts(ctx) == []


def test_maintenance_returns_to_the_state_it_was_entered_from(ctx: AppContext, clock: FakeClock) -> None:
    server = add_server(ctx, state=PS.AVAILABLE)
    assert fire(ctx, clock, server, Event.MAINTAIN) == PS.MAINTENANCE
    assert read(ctx, server).provision_previous == "available"
    assert fire(ctx, clock, server, Event.UNMAINTAIN) == PS.AVAILABLE
    assert read(ctx, server).provision_previous is None


def test_a_stale_caller_is_refused(ctx: AppContext, clock: FakeClock) -> None:
    server = add_server(ctx)
    with pytest.raises(Conflict, match="not inspect-wait"):
        fire(ctx, clock, server, Event.INSPECT, expect=PS.INSPECT_WAIT)
    assert read(ctx, server).provision_state == "manageable"


def test_wait_states_expire_after_their_time_to_live(ctx: AppContext, clock: FakeClock) -> None:
    waiting, fresh = add_server(ctx, "rack1-u02"), add_server(ctx, "rack1-u03")
    for server in (waiting, fresh):
        fire(ctx, clock, server, Event.INSPECT)
    fire(ctx, clock, waiting, Event.WAIT)
    clock.advance(seconds=TTL_S[PS.INSPECT_WAIT] - 10)
    fire(ctx, clock, fresh, Event.WAIT)
    clock.advance(seconds=20)
    with unit_of_work(ctx.session_factory) as db:
        expired = expire_waits(db, clock)
    assert [(t.server_id, t.after) for t in expired] == [(waiting, PS.INSPECT_FAILED)]
    assert "Timed out in inspect-wait after 1800 s" in (read(ctx, waiting).last_error or "")
    assert read(ctx, fresh).provision_state == "inspect-wait"


def test_of_concurrent_writers_exactly_one_moves_the_node(ctx: AppContext, clock: FakeClock) -> None:
    server = add_server(ctx)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait(timeout=10)
        try:
            fire(ctx, clock, server, Event.INSPECT)
            outcomes.append("moved")
        except Conflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["moved", "refused", "refused", "refused"]
    assert read(ctx, server).provision_state == "inspecting"


def test_only_the_writer_assigns_the_provision_state() -> None:
    """One module writes the state (the issue's rule): no other code assigns the columns."""
    pattern = re.compile(r"\.(provision_state|provision_previous|provision_updated)\s*=[^=]|"
                         r"\b(provision_state|provision_previous)\s*=\s*[^=]")
    offenders = []
    for package in ("appliance", "web", "plans", "golden_images", "pxe", "ha"):
        for path in (REPO / package).rglob("*.py"):
            if path.name == "provisioning.py" or "migrations" in path.parts or path.parts[-2:] == ("models",
                                                                                                 "server_hardware.py"):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and "==" not in line and "Field(" not in line:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
