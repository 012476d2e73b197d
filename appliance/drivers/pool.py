"""One driver per BMC for the whole appliance process.

Reusing the driver is what makes the policy work: its circuit breaker, pacing and concurrency
limit only mean something if every caller (tasks, the sync loop, consoles) goes through the same
instance, and a reused IPMI session saves the four-message RMCP+ handshake on every command.
A credential change replaces the driver (and its session).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading

from appliance.config import BmcSettings
from appliance.drivers.base import BmcDriver, DriverPolicy, make_bmc_executor
from appliance.drivers.loader import make_driver
from appliance.drivers.threads import DaemonThreadPool
from appliance.drivers.types import BmcTarget

CLOSE_TIMEOUT_S = 5.0


def _fingerprint(target: BmcTarget) -> str:
    # Compared, never stored or logged: tells whether cached credentials are still the current ones.
    return hashlib.sha256(f"{target.username}\0{target.password}\0{target.verify_tls}".encode()).hexdigest()


class BmcPool:
    def __init__(self, settings: BmcSettings) -> None:
        self.policy = DriverPolicy.from_settings(settings)
        self.executor: DaemonThreadPool = make_bmc_executor(settings.worker_threads)
        self._drivers: dict[str, tuple[str, BmcDriver]] = {}
        self._lock = threading.Lock()  # API threads and the event loop both ask for drivers
        self._closing: set[asyncio.Task[None]] = set()

    def driver(self, target: BmcTarget) -> BmcDriver:
        """The shared driver for ``target``'s BMC, built on first use."""
        fingerprint = _fingerprint(target)
        with self._lock:
            cached = self._drivers.get(target.key)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            driver = make_driver(target, self.policy, self.executor)
            self._drivers[target.key] = (fingerprint, driver)
        if cached is not None:
            self._close_later(cached[1])
        return driver

    def peek(self, key: str) -> BmcDriver | None:
        """The driver for a BMC if one exists (for showing its circuit state), without creating one."""
        with self._lock:
            cached = self._drivers.get(key)
        return cached[1] if cached else None

    async def forget(self, key: str) -> None:
        with self._lock:
            cached = self._drivers.pop(key, None)
        if cached is not None:
            await cached[1].close()

    async def close(self) -> None:
        with self._lock:
            drivers = [d for _, d in self._drivers.values()]
            self._drivers.clear()
        # Log out where BMCs answer; a dead one must not hold the appliance's shutdown.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(d.close() for d in drivers), return_exceptions=True),
                                   CLOSE_TIMEOUT_S)
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _close_later(self, driver: BmcDriver) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop in this thread: the replaced session simply times out on the BMC
        task = loop.create_task(driver.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
