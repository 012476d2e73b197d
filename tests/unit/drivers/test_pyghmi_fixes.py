"""The two pyghmi threading fixes, checked without a BMC: importing the IPMI driver installs them,
and a waiter whose reply is already filed returns instead of sleeping until the retransmit.

The fleet test (tests/integration/test_ipmi_fleet_faults.py) shows the outcome with real sessions;
on a small machine its signal is a handful of timeouts, so these pin the mechanism itself.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
from pyghmi.ipmi.private import session as pyghmi_session

import appliance.drivers.power.ipmi  # noqa: F401  (installs the fixes)
from appliance.drivers.power import pyghmi_fixes

ADDR = ("127.0.0.1", 623)


class _NeverWaits:
    """Stands in for threading.Event: a wait here is the lost wake-up the fix prevents."""

    def set(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool:
        raise AssertionError("waited although the reply had already arrived")


class _Silent:
    def wait(self, timeout: float | None = None) -> bool:
        return False  # nobody sets it: the waiter must still leave at its deadline


class _FakeSession:
    def __init__(self, packets: list[bytes]) -> None:
        self.pktqueue = collections.deque(packets)


@pytest.fixture
def io_state(monkeypatch: pytest.MonkeyPatch) -> dict[Any, Any]:
    handlers: dict[Any, Any] = {}
    monkeypatch.setattr(pyghmi_session.Session, "bmc_handlers", handlers)
    monkeypatch.setattr(pyghmi_session, "ioqueue", collections.deque())
    monkeypatch.setattr(pyghmi_session, "selectdeadline", 0)  # never poke the I/O thread's socket
    return handlers


def test_importing_the_driver_installs_both_fixes() -> None:
    assert pyghmi_session.WAITING_SESSIONS is pyghmi_session.KEEPALIVE_SESSIONS  # one lock order
    assert pyghmi_session._io_wait is pyghmi_fixes._io_wait
    pyghmi_fixes.install()  # idempotent
    assert pyghmi_session._io_wait is pyghmi_fixes._io_wait


def test_reply_filed_before_the_wait_is_not_slept_on(io_state: dict[Any, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    io_state[ADDR] = {1: _FakeSession([b"reply"])}
    monkeypatch.setattr(pyghmi_fixes.threading, "Event", _NeverWaits)
    events: list[Any] = []
    pyghmi_fixes._io_wait(30, ADDR, events)
    assert len(events) == 1 and len(pyghmi_session.ioqueue) == 1  # registered exactly as pyghmi does


def test_waiter_without_a_reply_leaves_at_its_deadline(io_state: dict[Any, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    io_state[ADDR] = {1: _FakeSession([])}
    clock = iter(range(0, 1000))
    monkeypatch.setattr(pyghmi_session, "_monotonic_time", lambda: next(clock))
    monkeypatch.setattr(pyghmi_fixes.threading, "Event", _Silent)
    pyghmi_fixes._io_wait(5, ADDR)
    assert next(clock) <= 8  # one tick per recheck: it stopped once the fake clock passed 5
