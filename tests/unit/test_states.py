"""Provision state machine: invariants of the table, advance/maintenance behaviour, the dot renderer,
and a fuzz test that random event sequences never leave the state set."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import states
from appliance.errors import Conflict, InvalidTransition
from appliance.states import (
    FAILED_STATES,
    STABLE,
    TARGET,
    TRANSITIONS,
    TTL_S,
    WAIT_STATES,
    Event,
    ProvisionState,
    advance,
    allowed_events,
    edges,
    is_stable,
    leave_maintenance,
)

PS = ProvisionState
Ev = Event
SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "states_to_dot.py"
# Events a working state sends on the way to its target, as opposed to failing.
PROGRESS_EVENTS = frozenset({Ev.WAIT, Ev.RESUME, Ev.DONE})
RETRY_EVENTS = frozenset({Ev.INSPECT, Ev.DEPLOY, Ev.CAPTURE, Ev.CLEAN})
WAY_OUT_EVENTS = frozenset({Ev.RELEASE, Ev.RETIRE})


def _reachable(
    start: ProvisionState,
    allowed: Iterable[Event] | None = None,
    avoiding: Iterable[ProvisionState] = (),
) -> set[ProvisionState]:
    """States reachable from ``start`` over ``edges()``, only by ``allowed`` events, never through ``avoiding``."""
    events = None if allowed is None else frozenset(allowed)
    avoided = frozenset(avoiding)
    graph: dict[ProvisionState, list[ProvisionState]] = {}
    for state, event, target in edges():
        if (events is None or event in events) and target not in avoided:
            graph.setdefault(state, []).append(target)
    seen, queue = {start}, deque([start])
    while queue:
        for target in graph.get(queue.popleft(), []):
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return seen


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("states_to_dot", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the table -----------------------------------------------------------------------------------
def test_table_has_a_row_for_every_state_and_only_members() -> None:
    assert set(TRANSITIONS) == set(PS)
    for row in TRANSITIONS.values():
        assert all(isinstance(event, Event) and isinstance(target, ProvisionState) for event, target in row.items())


def test_values_are_short_kebab_case_fitting_a_string16_column() -> None:
    # The node model's column comes with the wiring change; state columns in Ingot are String(16).
    for value in [*PS, *Ev]:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", value) and len(value) <= 16, value


def test_every_state_is_reachable_from_enroll() -> None:
    assert _reachable(PS.ENROLL) == set(PS)


@pytest.mark.parametrize("state", sorted(set(PS) - {PS.RETIRED}))
def test_every_non_terminal_state_can_reach_available_and_retirement(state: ProvisionState) -> None:
    reachable = _reachable(state)
    assert PS.AVAILABLE in reachable
    assert PS.RETIRED in reachable


def test_retired_is_the_only_state_without_a_way_out() -> None:
    assert {state for state in PS if not allowed_events(state)} == {PS.RETIRED}


def test_categories_partition_the_states() -> None:
    transient = set(TARGET)
    assert FAILED_STATES <= STABLE
    assert transient >= WAIT_STATES
    assert not STABLE & transient
    assert STABLE | transient | {PS.MAINTENANCE, PS.RETIRED} == set(PS)
    assert PS.MAINTENANCE not in STABLE | transient and PS.RETIRED not in STABLE | transient


@pytest.mark.parametrize("state", sorted(TARGET))
def test_target_is_a_healthy_stable_state_reached_by_progress_events(state: ProvisionState) -> None:
    target = TARGET[state]
    assert target in STABLE and target not in FAILED_STATES
    assert target in _reachable(state, PROGRESS_EVENTS)


@pytest.mark.parametrize("state", sorted(TARGET))
def test_every_transient_state_fails_to_one_failed_state(state: ProvisionState) -> None:
    row = TRANSITIONS[state]
    failed = {row[event] for event in (Ev.FAIL, Ev.ABORT, Ev.TIMEOUT) if event in row}
    assert Ev.FAIL in row
    assert len(failed) == 1 and failed <= FAILED_STATES


@pytest.mark.parametrize("state", sorted(WAIT_STATES))
def test_every_wait_state_has_fail_abort_and_timeout_to_a_failed_state(state: ProvisionState) -> None:
    row = TRANSITIONS[state]
    for event in (Ev.FAIL, Ev.ABORT, Ev.TIMEOUT):
        assert row[event] in FAILED_STATES, event
    assert row[Ev.RESUME] not in WAIT_STATES and row[Ev.RESUME] in TARGET


def test_only_wait_states_can_be_aborted_or_time_out() -> None:
    for state, event, _ in edges():
        if event in (Ev.ABORT, Ev.TIMEOUT, Ev.RESUME):
            assert state in WAIT_STATES, (state, event)


@pytest.mark.parametrize("state", sorted(FAILED_STATES))
def test_every_failed_state_has_a_retry_and_a_way_out(state: ProvisionState) -> None:
    row = TRANSITIONS[state]
    assert any(row.get(event) in TARGET for event in RETRY_EVENTS)
    assert any(event in row for event in WAY_OUT_EVENTS)


def test_only_stable_states_enter_maintenance() -> None:
    entering = {state for state, event, target in edges() if event == Ev.MAINTAIN}
    assert entering == STABLE
    assert {target for _, event, target in edges() if event == Ev.MAINTAIN} == {PS.MAINTENANCE}
    assert all(state == PS.MAINTENANCE for state, event, _ in edges() if event == Ev.UNMAINTAIN)


@pytest.mark.parametrize("state", [PS.DEPLOYED, PS.DEPLOY_FAILED, PS.CAPTURE_FAILED, PS.CLEAN_FAILED])
def test_a_used_disk_is_erased_before_reuse_or_retirement(state: ProvisionState) -> None:
    # From a state whose disks may hold a tenant's data, available (and retired, except from clean-failed,
    # where erasing is what failed) is only reachable through a successful pass of cleaning.
    # UNMAINTAIN is left out: it returns to the state maintenance was entered from, not to any stable state.
    seen = _reachable(state, allowed=set(Ev) - {Ev.UNMAINTAIN}, avoiding=(PS.RELEASING, PS.CLEANING, PS.CLEAN_WAIT))
    assert PS.AVAILABLE not in seen
    assert PS.RETIRED not in seen or state == PS.CLEAN_FAILED
    assert PS.AVAILABLE in _reachable(state)


def test_ttl_for_exactly_the_wait_states() -> None:
    assert set(TTL_S) == WAIT_STATES
    assert TTL_S == {PS.INSPECT_WAIT: 1800, PS.DEPLOY_WAIT: 3600, PS.CAPTURE_WAIT: 7200, PS.CLEAN_WAIT: 3600}


def test_is_stable() -> None:
    assert is_stable(PS.AVAILABLE) and is_stable(PS.DEPLOY_FAILED)
    assert not is_stable(PS.DEPLOY_WAIT) and not is_stable(PS.MAINTENANCE) and not is_stable(PS.RETIRED)


# --- advance -------------------------------------------------------------------------------------
def test_happy_path_through_the_lifecycle() -> None:
    state = PS.ENROLL
    for event in (Ev.MANAGE, Ev.INSPECT, Ev.WAIT, Ev.RESUME, Ev.DONE, Ev.DEPLOY, Ev.WAIT, Ev.RESUME, Ev.DONE,
                  Ev.CAPTURE, Ev.WAIT, Ev.RESUME, Ev.DONE, Ev.RELEASE, Ev.DONE, Ev.WAIT, Ev.RESUME, Ev.DONE):
        state = advance(state, event)
    assert state == PS.AVAILABLE


def test_forbidden_pair_raises_invalid_transition() -> None:
    with pytest.raises(InvalidTransition) as caught:
        advance(PS.DEPLOYED, Ev.INSPECT)
    error = caught.value
    assert isinstance(error, Conflict)
    assert error.http_status == 409
    assert error.error_code == "INVALID_PROVISION_STATE"
    assert "deployed" in error.message and "inspect" in error.message
    assert error.details == "Allowed in deployed: redeploy, capture, release, maintain."


def test_terminal_state_refuses_everything() -> None:
    with pytest.raises(InvalidTransition) as caught:
        advance(PS.RETIRED, Ev.MANAGE)
    assert caught.value.details == "retired allows no events."


def test_maintenance_round_trip() -> None:
    for before in STABLE:
        inside = advance(before, Ev.MAINTAIN)
        assert inside == PS.MAINTENANCE
        assert allowed_events(inside) == (Ev.UNMAINTAIN,)
        assert advance(inside, Ev.UNMAINTAIN, previous=before) == before
        assert leave_maintenance(before) == before


@pytest.mark.parametrize("previous", [None, PS.DEPLOY_WAIT, PS.CLEANING, PS.MAINTENANCE, PS.RETIRED])
def test_leaving_maintenance_needs_a_stable_previous_state(previous: ProvisionState | None) -> None:
    with pytest.raises(InvalidTransition) as caught:
        advance(PS.MAINTENANCE, Ev.UNMAINTAIN, previous=previous)
    assert caught.value.error_code == "INVALID_PROVISION_STATE"
    assert "maintenance" in caught.value.message and "unmaintain" in caught.value.message


def test_maintenance_accepts_nothing_but_unmaintain() -> None:
    with pytest.raises(InvalidTransition):
        advance(PS.MAINTENANCE, Ev.DEPLOY)
    with pytest.raises(InvalidTransition):
        advance(PS.DEPLOY_WAIT, Ev.MAINTAIN)


@given(st.lists(st.sampled_from(list(Event)), max_size=60))
def test_random_event_sequences_stay_inside_the_machine(events: list[Event]) -> None:
    state, previous = PS.ENROLL, None
    for event in events:
        try:
            following = advance(state, event, previous=previous)
        except InvalidTransition as error:
            assert error.http_status == 409
            assert event not in TRANSITIONS[state] or state == PS.MAINTENANCE
            continue
        assert following in set(PS)
        assert (state, event, following) in set(edges())
        if event == Ev.MAINTAIN:
            previous = state
        state = following


@given(st.sampled_from(list(PS)), st.sampled_from(list(Event)))
def test_advance_is_the_table(state: ProvisionState, event: Event) -> None:
    if state != PS.MAINTENANCE and event in TRANSITIONS[state]:
        assert advance(state, event) == TRANSITIONS[state][event]
    else:
        with pytest.raises(InvalidTransition):
            advance(state, event)


# --- the diagram ---------------------------------------------------------------------------------
def test_dot_mentions_every_state_and_edge() -> None:
    dot = _load_script().render()
    assert dot.startswith("digraph provision_states {") and dot.rstrip().endswith("}")
    for state in PS:
        assert re.search(rf'^  "{state}" \[', dot, re.MULTILINE), state
    labels: dict[tuple[str, str], list[str]] = {}
    for source, target, label in re.findall(r'^  "([a-z-]+)" -> "([a-z-]+)" \[label="([a-z, ]+)"', dot, re.MULTILINE):
        labels[source, target] = label.split(", ")
    for state, event, target in edges():
        assert event in labels[state, target], (state, event, target)
    assert sum(len(events) for events in labels.values()) == len(list(edges()))


def test_dot_script_runs_as_a_plain_script() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout == _load_script().render()


def test_module_docstring_names_every_state() -> None:
    assert states.__doc__ is not None
    for state in PS:
        assert f"``{state}``" in states.__doc__, state
