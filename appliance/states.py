"""The provision state machine of server hardware: one declarative table and a pure ``advance``.

Theory of operation
-------------------
A server's provision state says what Ingot is doing with it, or may do with it next. The state
changes only when an :class:`Event` arrives, and only along an edge of :data:`TRANSITIONS`:
``advance(state, event)`` looks the pair up and returns the next state, or raises
:class:`~appliance.errors.InvalidTransition` (409, ``INVALID_PROVISION_STATE``). This module
holds data and pure functions only; it never touches the database. The code that stores
``provision_state`` (one writer, added with the models) takes the node's lock, calls
``advance``, saves, and starts the work the new state stands for.

The lifecycle, in prose:

- A server starts in ``enroll``: Ingot knows its BMC but has not yet checked it. ``manage``
  (the BMC answered with the credentials given) makes it ``manageable``.
- ``inspect`` reads its hardware: ``inspecting``, then ``inspect-wait`` while an agent ramdisk
  booted on the server reports the inventory, and on success ``available`` — in the pool, ready
  to be deployed. ``manage`` takes an available server out of the pool again.
- ``deploy`` writes an operating system: ``deploying``, with ``deploy-wait`` while the agent
  writes the image or the installer runs, then ``deployed``. ``redeploy`` deploys a deployed
  server again, over its current operating system; it is its own event so that a stray
  ``deploy`` cannot wipe a server in use.
- ``capture`` copies a deployed server's disk into a golden image (``capturing``,
  ``capture-wait``) and comes back to ``deployed``.
- ``release`` gives a server back: ``releasing`` (power off, boot and network configuration
  undone), then ``cleaning`` and ``clean-wait`` while its disks are erased, then ``available``.
- ``retire`` ends the server's life in Ingot (``retired`` has no way out). It is allowed only
  where no tenant's data can be on the disks — or where erasing them is what failed, so a dead
  disk cannot pin a server forever; a server that was deployed is released (cleaned) first.

Steps that wait for something outside the appliance (the agent, an installer callback) park the
node in a ``*-wait`` state; ``resume`` (the callback) brings it back to its working state. Every
wait state has a time-to-live (:data:`TTL_S`); when it expires the periodic check sends
``timeout``. Every working and wait state sends ``fail`` when its work fails, and an operator may
``abort`` a wait state; all three land in the matching failed state (``inspect-failed``,
``deploy-failed``, ``capture-failed``, ``clean-failed``), which keeps the node's ``last_error``.
A failed state is left by trying again (``inspect``, ``deploy``, ``capture``, ``clean``) or by a
way out (``release``, ``manage`` or ``retire``, whichever is safe there).

``maintenance`` takes a server out of Ingot's hands (a technician is at it). It is entered with
``maintain`` from any :data:`STABLE` state and left with ``unmaintain`` back to the state it was
entered from. That state is history the table cannot hold, so the caller remembers it
(alongside ``provision_state``) and passes it as ``advance(..., previous=...)``, which checks it
with :func:`leave_maintenance`.

State categories: :data:`STABLE` states rest until an operator acts (no work runs, no TTL
ticks; the failed states are stable); :data:`TARGET` maps each working (transient) and wait state
to the stable state it is heading for; ``maintenance`` and ``retired`` are neither.

Render the diagram with ``.venv/bin/python tools/states_to_dot.py | dot -Tsvg > states.svg``.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Final

from appliance.errors import InvalidTransition


class ProvisionState(StrEnum):
    ENROLL = "enroll"
    MANAGEABLE = "manageable"
    INSPECTING = "inspecting"
    INSPECT_WAIT = "inspect-wait"
    INSPECT_FAILED = "inspect-failed"
    AVAILABLE = "available"
    DEPLOYING = "deploying"
    DEPLOY_WAIT = "deploy-wait"
    DEPLOY_FAILED = "deploy-failed"
    DEPLOYED = "deployed"
    CAPTURING = "capturing"
    CAPTURE_WAIT = "capture-wait"
    CAPTURE_FAILED = "capture-failed"
    RELEASING = "releasing"
    CLEANING = "cleaning"
    CLEAN_WAIT = "clean-wait"
    CLEAN_FAILED = "clean-failed"
    MAINTENANCE = "maintenance"
    RETIRED = "retired"


class Event(StrEnum):
    # Operator (API) events.
    MANAGE = "manage"
    INSPECT = "inspect"
    DEPLOY = "deploy"
    REDEPLOY = "redeploy"
    CAPTURE = "capture"
    RELEASE = "release"
    CLEAN = "clean"
    RETIRE = "retire"
    MAINTAIN = "maintain"
    UNMAINTAIN = "unmaintain"
    ABORT = "abort"
    # Conductor events: sent by the work itself, the agent's callback, or the TTL check.
    WAIT = "wait"  # a step started work outside the appliance and returned Wait
    RESUME = "resume"  # the agent or installer called back
    DONE = "done"  # the last step finished
    FAIL = "fail"  # a step failed
    TIMEOUT = "timeout"  # a wait state outlived its TTL_S


PS = ProvisionState
Ev = Event

TRANSITIONS: Final[dict[ProvisionState, dict[Event, ProvisionState]]] = {
    PS.ENROLL: {
        Ev.MANAGE: PS.MANAGEABLE,  # the BMC answered with the credentials given
        Ev.RETIRE: PS.RETIRED,  # enrolled by mistake; Ingot never wrote to it
        Ev.MAINTAIN: PS.MAINTENANCE,
    },
    PS.MANAGEABLE: {
        Ev.INSPECT: PS.INSPECTING,
        Ev.RETIRE: PS.RETIRED,
        Ev.MAINTAIN: PS.MAINTENANCE,
    },
    PS.INSPECTING: {
        Ev.WAIT: PS.INSPECT_WAIT,  # booted the agent ramdisk to read the inventory
        Ev.DONE: PS.AVAILABLE,  # also straight from here when the BMC alone (Redfish) had it all
        Ev.FAIL: PS.INSPECT_FAILED,
    },
    PS.INSPECT_WAIT: {
        Ev.RESUME: PS.INSPECTING,  # the agent posted the inventory
        Ev.FAIL: PS.INSPECT_FAILED,
        Ev.ABORT: PS.INSPECT_FAILED,
        Ev.TIMEOUT: PS.INSPECT_FAILED,
    },
    PS.INSPECT_FAILED: {
        Ev.INSPECT: PS.INSPECTING,  # retry
        Ev.MANAGE: PS.MANAGEABLE,  # give up inspecting for now; nothing was written to the disks
        Ev.RETIRE: PS.RETIRED,
        Ev.MAINTAIN: PS.MAINTENANCE,
    },
    PS.AVAILABLE: {
        Ev.DEPLOY: PS.DEPLOYING,
        Ev.MANAGE: PS.MANAGEABLE,  # out of the pool, e.g. to inspect again
        Ev.RETIRE: PS.RETIRED,
        Ev.MAINTAIN: PS.MAINTENANCE,
    },
    PS.DEPLOYING: {
        Ev.WAIT: PS.DEPLOY_WAIT,  # the agent writes the image, or the installer runs
        Ev.DONE: PS.DEPLOYED,
        Ev.FAIL: PS.DEPLOY_FAILED,
    },
    PS.DEPLOY_WAIT: {
        Ev.RESUME: PS.DEPLOYING,  # image written / installer %post called back
        Ev.FAIL: PS.DEPLOY_FAILED,  # e.g. the installer's %onerror called back
        Ev.ABORT: PS.DEPLOY_FAILED,
        Ev.TIMEOUT: PS.DEPLOY_FAILED,
    },
    PS.DEPLOY_FAILED: {
        Ev.DEPLOY: PS.DEPLOYING,  # retry
        Ev.RELEASE: PS.RELEASING,  # a half-written disk is cleaned before the server goes anywhere
        Ev.MAINTAIN: PS.MAINTENANCE,
    },
    PS.DEPLOYED: {
        Ev.REDEPLOY: PS.DEPLOYING,  # deploy again over the running OS
        Ev.CAPTURE: PS.CAPTURING,
        Ev.RELEASE: PS.RELEASING,
        Ev.MAINTAIN: PS.MAINTENANCE,
    },
    PS.CAPTURING: {
        Ev.WAIT: PS.CAPTURE_WAIT,  # the agent streams the disk to the image store
        Ev.DONE: PS.DEPLOYED,  # the server boots its own OS again
        Ev.FAIL: PS.CAPTURE_FAILED,
    },
    PS.CAPTURE_WAIT: {
        Ev.RESUME: PS.CAPTURING,
        Ev.FAIL: PS.CAPTURE_FAILED,
        Ev.ABORT: PS.CAPTURE_FAILED,
        Ev.TIMEOUT: PS.CAPTURE_FAILED,
    },
    PS.CAPTURE_FAILED: {
        Ev.CAPTURE: PS.CAPTURING,  # retry
        Ev.RELEASE: PS.RELEASING,  # the disk still holds the tenant's OS: clean it on the way out
        Ev.MAINTAIN: PS.MAINTENANCE,
    },
    PS.RELEASING: {
        Ev.DONE: PS.CLEANING,  # powered off, boot and network undone; now erase
        Ev.FAIL: PS.CLEAN_FAILED,  # releasing is the first half of cleaning
    },
    PS.CLEANING: {
        Ev.WAIT: PS.CLEAN_WAIT,  # the agent erases the disks
        Ev.DONE: PS.AVAILABLE,
        Ev.FAIL: PS.CLEAN_FAILED,
    },
    PS.CLEAN_WAIT: {
        Ev.RESUME: PS.CLEANING,
        Ev.FAIL: PS.CLEAN_FAILED,
        Ev.ABORT: PS.CLEAN_FAILED,
        Ev.TIMEOUT: PS.CLEAN_FAILED,
    },
    PS.CLEAN_FAILED: {
        Ev.CLEAN: PS.CLEANING,  # retry the erase
        Ev.RELEASE: PS.RELEASING,  # redo the whole teardown, when releasing was what failed
        Ev.RETIRE: PS.RETIRED,  # a disk that cannot be erased must not pin the server forever
        Ev.MAINTAIN: PS.MAINTENANCE,
        # No MANAGE: manageable -> inspect -> available would hand out an unerased disk.
    },
    # Left only by UNMAINTAIN to the remembered state: see leave_maintenance().
    PS.MAINTENANCE: {},
    PS.RETIRED: {},
}

FAILED_STATES: Final = frozenset({PS.INSPECT_FAILED, PS.DEPLOY_FAILED, PS.CAPTURE_FAILED, PS.CLEAN_FAILED})
"""Where failed work lands; the node's ``last_error`` says why."""

STABLE: Final = frozenset({PS.ENROLL, PS.MANAGEABLE, PS.AVAILABLE, PS.DEPLOYED}) | FAILED_STATES
"""States that rest until an operator acts: no work runs, no TTL ticks; ``maintain`` works from here."""

WAIT_STATES: Final = frozenset({PS.INSPECT_WAIT, PS.DEPLOY_WAIT, PS.CAPTURE_WAIT, PS.CLEAN_WAIT})
"""States waiting for something outside the appliance; each has a TTL and fail/abort/timeout edges."""

TARGET: Final[dict[ProvisionState, ProvisionState]] = {
    PS.INSPECTING: PS.AVAILABLE,
    PS.INSPECT_WAIT: PS.AVAILABLE,
    PS.DEPLOYING: PS.DEPLOYED,
    PS.DEPLOY_WAIT: PS.DEPLOYED,
    PS.CAPTURING: PS.DEPLOYED,
    PS.CAPTURE_WAIT: PS.DEPLOYED,
    PS.RELEASING: PS.AVAILABLE,
    PS.CLEANING: PS.AVAILABLE,
    PS.CLEAN_WAIT: PS.AVAILABLE,
}
"""Each transient (working or wait) state → the stable state it is heading for (the node's target_state)."""

TTL_S: Final[dict[ProvisionState, int]] = {
    PS.INSPECT_WAIT: 1800,
    PS.DEPLOY_WAIT: 3600,  # an installer on slow disks
    PS.CAPTURE_WAIT: 7200,  # streams a whole disk
    PS.CLEAN_WAIT: 3600,
}
"""Default time-to-live of each wait state in seconds; ``timeout`` is sent when it expires. Settings may
override these: build a new mapping from them, never assign into this one."""


def is_stable(state: ProvisionState) -> bool:
    """Whether ``state`` rests until an operator acts (see :data:`STABLE`)."""
    return state in STABLE


def leave_maintenance(previous: ProvisionState | None) -> ProvisionState:
    """The state ``unmaintain`` returns to, which is the state maintenance was entered from.

    :param previous: the state the caller remembered when it applied ``maintain``.
    :raises InvalidTransition: ``previous`` is missing or not a :data:`STABLE` state (a corrupt record:
        ``maintain`` is only allowed from stable states).
    :returns: ``previous``.
    """
    if previous is None or previous not in STABLE:
        raise InvalidTransition(
            state=PS.MAINTENANCE,
            event=Ev.UNMAINTAIN,
            details=f"The state remembered from before maintenance ({previous}) is not a stable state.",
        )
    return ProvisionState(previous)


def allowed_events(state: ProvisionState) -> tuple[Event, ...]:
    """The events ``state`` accepts, in declaration order (``unmaintain`` for maintenance)."""
    if state == PS.MAINTENANCE:
        return (Ev.UNMAINTAIN,)
    return tuple(event for event in Event if event in TRANSITIONS[state])


def advance(state: ProvisionState, event: Event, *, previous: ProvisionState | None = None) -> ProvisionState:
    """The state ``event`` moves a node in ``state`` to. Pure: the caller stores the result.

    :param previous: for ``unmaintain`` only, the state remembered when maintenance was entered;
        ignored for every other event.
    :raises InvalidTransition: the table has no such edge (409, ``INVALID_PROVISION_STATE``); its
        ``details`` list the events ``state`` does allow.
    :returns: the next state.
    """
    if state == PS.MAINTENANCE and event == Ev.UNMAINTAIN:
        return leave_maintenance(previous)
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        allowed = ", ".join(allowed_events(state)) if state in TRANSITIONS else ""
        raise InvalidTransition(
            state=state,
            event=event,
            details=f"Allowed in {state}: {allowed}." if allowed else f"{state} allows no events.",
        ) from None


def edges() -> Iterator[tuple[ProvisionState, Event, ProvisionState]]:
    """Every edge of the machine as ``(state, event, next_state)``: the table's, then one ``unmaintain``
    edge back to each :data:`STABLE` state. For the diagram and the table tests."""
    for state, row in TRANSITIONS.items():
        for event, target in row.items():
            yield state, event, target
    for state in ProvisionState:
        if state in STABLE:
            yield PS.MAINTENANCE, Ev.UNMAINTAIN, state
