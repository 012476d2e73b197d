"""Fixtures for driver unit tests: a hand-moved monotonic clock whose sleep advances it."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from appliance.drivers.base import make_bmc_executor
from appliance.drivers.power import fake


class ManualClock:
    """``monotonic`` and ``sleep`` for a driver: sleeping moves time forward instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = make_bmc_executor(8)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(autouse=True)
def _fresh_fake_machines() -> Iterator[None]:
    fake.reset_machines()
    yield
    fake.reset_machines()
