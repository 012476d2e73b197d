"""The BMC driver interface and the policy every driver obeys.

Theory of operation
-------------------
A driver talks to one BMC. Vendor libraries (pyghmi, sushy) are blocking and keep their own
I/O state, so a driver subclass implements only small *blocking hooks* (``_get_power``,
``_set_power``, ``_get_boot``, ``_set_boot``, ``_inventory``, ``_open_console``, ``_close``)
and declares, as data, which library exceptions mean what (``error_rules``).

Services never call the hooks. They call the public ``async`` template methods of
:class:`BmcDriver`, which own all policy (MAAS ``perform_power``, Ironic's base interfaces):

* every hook runs in the injected executor, never on the event loop, and is abandoned after
  ``timeout_s`` (the thread may linger: Python cannot kill it, see ``make_bmc_executor``);
* failures are mapped to the ``BmcError`` family; retryable ones are retried ``retries`` times
  with exponential backoff and jitter, fatal ones (auth, unsupported, verify) at once;
* commands to one BMC are limited to ``per_bmc_concurrency`` at a time and spaced by at least
  ``min_interval_s`` (slow firmware falls over when hammered);
* a circuit breaker stops calling a BMC after ``circuit_failures`` connection or credential
  failures in a row, for ``circuit_reset_s``, then lets one trial call through (half-open);
* power and boot changes are verified by reading the state back.

One driver instance per BMC: the semaphore, pacing and breaker live on the instance, and the
vendor sessions are cached there. Keep instances in a pool keyed by ``BmcTarget.key``.

The BMC password is never formatted into a message, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

from appliance.drivers.threads import DaemonThreadPool
from appliance.drivers.types import BmcTarget, BootSetting, Inventory, PowerAction, PowerState
from appliance.errors import (
    BmcAuthError,
    BmcCircuitOpen,
    BmcConnectionError,
    BmcError,
    BmcUnsupported,
    BmcVerifyFailed,
)

if TYPE_CHECKING:
    from appliance.config import BmcSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: One row of a driver's error table: a library exception type, or a regex searched in the
#: exception's message, and the error class it becomes. The first matching row wins.
ErrorRule = tuple[type[BaseException] | re.Pattern[str], type[BmcError]]


@dataclass(frozen=True)
class DriverPolicy:
    """How patient a driver is with one BMC. See ``appliance.config.BmcSettings`` for meanings."""

    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.5
    min_interval_s: float = 0.0
    per_bmc_concurrency: int = 1
    circuit_failures: int = 3
    circuit_reset_s: float = 60.0
    verify_timeout_s: float = 120.0
    verify_poll_s: float = 1.0

    @classmethod
    def from_settings(cls, settings: BmcSettings) -> DriverPolicy:
        return cls(
            timeout_s=settings.timeout_s,
            retries=settings.retries,
            backoff_s=settings.backoff_s,
            min_interval_s=settings.min_interval_s,
            per_bmc_concurrency=settings.per_bmc_concurrency,
            circuit_failures=settings.circuit_failures,
            circuit_reset_s=settings.circuit_reset_s,
            verify_timeout_s=settings.verify_timeout_s,
            verify_poll_s=settings.verify_poll_s,
        )


def make_bmc_executor(threads: int) -> DaemonThreadPool:
    """The pool that runs blocking BMC library calls, threads named ``bmc-N``.

    asyncio's default pool has ``min(32, cpus + 4)`` threads (6 here): far too few for a sweep
    over hundreds of BMCs, each call of which mostly waits on the network. A call abandoned
    after its timeout keeps its thread until the library gives up, so size generously; the
    threads are daemons so such a call never delays the appliance's exit.
    """
    return DaemonThreadPool(threads, name="bmc")


# --- circuit breaker ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CircuitStatus:
    """A read-only view of a breaker. ``retry_in_s`` is 0 unless the breaker is open."""

    state: str  # "closed", "open" or "half-open"
    failures: int  # consecutive counted failures
    retry_in_s: float


class CircuitBreaker:
    """Counts consecutive failures of one BMC and decides whether the next call may go out.

    Not thread-safe: used only from the event loop.
    """

    def __init__(self, threshold: int, reset_s: float, monotonic: Callable[[], float]) -> None:
        self._threshold = threshold
        self._reset_s = reset_s
        self._now = monotonic
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def status(self) -> CircuitStatus:
        if self._opened_at is None:
            return CircuitStatus("closed", self._failures, 0.0)
        remaining = self._opened_at + self._reset_s - self._now()
        if remaining > 0:
            return CircuitStatus("open", self._failures, remaining)
        return CircuitStatus("half-open", self._failures, 0.0)

    def acquire(self) -> bool:
        """May a call go out now? Claims the single half-open trial if that is what's due."""
        state = self.status().state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_running or self._failures >= self._threshold:
            self._opened_at = self._now()  # (re)open: a failed trial starts a new pause
        self._trial_running = False

    def abandon_trial(self) -> None:
        """The trial was cancelled before it ended: let the next call be the trial."""
        self._trial_running = False

    def release_trial(self) -> None:
        """The trial ended with neither success nor a counted failure (the BMC answered "no")."""
        self.record_success()


# --- consoles ----------------------------------------------------------------------------------
class Console(ABC):
    """A Serial-over-LAN session to the server's serial port."""

    @abstractmethod
    async def read(self) -> bytes:
        """The next chunk of output; ``b""`` once the console is closed (and forever after)."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Send keystrokes to the server."""

    @abstractmethod
    async def close(self) -> None:
        """End the session; idempotent."""


class ConsoleIO(Protocol):
    """What a driver's ``_open_console`` returns: blocking send and close, run in the executor."""

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class ConsoleFeed:
    """Thread-safe inlet for console output: library callbacks on any thread push bytes in,
    the event loop reads them from an ``asyncio.Queue``.

    The queue is bounded; when a reader stops reading, further output is dropped (and counted)
    rather than growing without limit.
    """

    _EOF = b""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_chunks: int = 4096) -> None:
        self._loop = loop
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(max_chunks)
        self.dropped = 0
        self._closed = False

    def feed(self, data: bytes) -> None:
        """Called from any thread with a chunk of output."""
        if data and not self._closed:
            self._put_threadsafe(bytes(data))

    def feed_eof(self) -> None:
        """Called from any thread when the session ended; readers then get ``b""``."""
        if not self._closed:
            self._closed = True
            self._put_threadsafe(self._EOF)

    def _put_threadsafe(self, item: bytes) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is reading any more
            self._loop.call_soon_threadsafe(self._put, item)

    def _put(self, item: bytes) -> None:
        if item == self._EOF and self.queue.full():
            self.queue.get_nowait()  # make room: end-of-stream must always arrive
            self.dropped += 1
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1


class BridgedConsole(Console):
    """A :class:`Console` over a :class:`ConsoleFeed` (output) and a :class:`ConsoleIO` (input)."""

    def __init__(self, feed: ConsoleFeed, io: ConsoleIO, executor: concurrent.futures.Executor,
                 timeout_s: float) -> None:
        self._feed = feed
        self._io = io
        self._executor = executor
        self._timeout_s = timeout_s
        self._eof = False
        self._closed = False

    async def read(self) -> bytes:
        if self._eof:
            return b""
        chunk = await self._feed.queue.get()
        if not chunk:
            self._eof = True
        return chunk

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise BrokenPipeError("console is closed")
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.run_in_executor(self._executor, self._io.send, bytes(data)), self._timeout_s)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._io.close), self._timeout_s)
        except Exception as exc:  # closing is best effort: the session may already be gone
            log.debug("console close failed: %s", type(exc).__name__)
        finally:
            self._feed.feed_eof()


# --- the driver --------------------------------------------------------------------------------
class BmcDriver(ABC):
    """Power, boot device, inventory and console of one server through its BMC.

    Override the blocking ``_hooks``, never the public coroutines. Hooks raise library
    exceptions freely: ``error_rules`` (a class-level table, first match wins) maps them to the
    ``BmcError`` family; anything unmatched becomes a retryable :class:`BmcError`. Hooks may
    also raise ``BmcError`` subclasses directly.

    :param target: the BMC's address and credentials.
    :param policy: timeouts, retries, pacing and breaker settings.
    :param executor: where blocking hooks run (see :func:`make_bmc_executor`).
    :param monotonic: clock for pacing, verification deadlines and the breaker.
    :param sleep: how to wait (injected by tests together with ``monotonic``).
    """

    name: ClassVar[str]
    default_port: ClassVar[int]
    error_rules: ClassVar[tuple[ErrorRule, ...]] = ()

    def __init__(
        self,
        target: BmcTarget,
        policy: DriverPolicy,
        executor: concurrent.futures.Executor,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.target = target
        self.policy = policy
        self._executor = executor
        self._monotonic = monotonic
        self._sleep = sleep
        self._breaker = CircuitBreaker(policy.circuit_failures, policy.circuit_reset_s, monotonic)
        self._semaphore: asyncio.Semaphore | None = None
        self._last_command: float | None = None
        self._pace_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target.key} user={self.target.username!r}>"

    @property
    def port(self) -> int:
        return self.target.port or self.default_port

    @property
    def circuit(self) -> CircuitStatus:
        return self._breaker.status()

    # --- public template methods ---------------------------------------------------------------
    async def power_state(self) -> PowerState:
        """:returns: the server's power state as the BMC reports it."""
        return await self._call("read the power state", self._get_power)

    async def set_power(self, action: PowerAction, *, verify: bool = True) -> PowerState:
        """Ask for a power change and, with ``verify``, wait until the BMC reports it.

        :raises BmcVerifyFailed: the state did not reach ``action.expected`` within
            ``verify_timeout_s`` (for CYCLE and RESET: did not come back ON).
        :returns: the last state read (``action.expected`` when verified).
        """
        await self._call(f"power {action.value}", lambda: self._set_power(action))
        if not verify:
            return action.expected
        return await self._verify(action.expected.value, self.power_state, lambda s: s is action.expected,
                                  lambda s: s.value)

    async def boot_device(self) -> BootSetting:
        """:returns: the boot override the BMC holds (device NONE: no override)."""
        return await self._call("read the boot device", self._get_boot)

    async def set_boot_device(self, setting: BootSetting, *, verify: bool = True) -> BootSetting:
        """Set the boot override; with ``verify``, read it back and compare the device.

        Persistence and mode are not compared: many BMCs report them inaccurately.
        """
        await self._call(f"set the boot device to {setting.device.value}", lambda: self._set_boot(setting))
        if not verify:
            return setting
        return await self._verify(setting.device.value, self.boot_device, lambda b: b.device is setting.device,
                                  lambda b: b.device.value)

    async def inventory(self) -> Inventory:
        """:returns: identity, MACs and sensors of the server, as far as the BMC knows them."""
        return await self._call("read the inventory", self._inventory)

    async def open_console(self) -> Console:
        """Open a Serial-over-LAN session. :raises BmcUnsupported: the driver has no console."""
        feed = ConsoleFeed(asyncio.get_running_loop())
        io = await self._call("open the console", lambda: self._open_console(feed))
        return BridgedConsole(feed, io, self._executor, self.policy.timeout_s)

    async def close(self) -> None:
        """Log out and drop cached sessions. Best effort: never raises for a BMC's failure."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._close), self.policy.timeout_s)
        except Exception as exc:
            log.info("closing the session to %s failed: %s", self.target.key, self._scrub(str(exc)))

    # --- blocking hooks ------------------------------------------------------------------------
    @abstractmethod
    def _get_power(self) -> PowerState: ...

    @abstractmethod
    def _set_power(self, action: PowerAction) -> None:
        """Request the change and return at once; the base class verifies."""

    @abstractmethod
    def _get_boot(self) -> BootSetting: ...

    @abstractmethod
    def _set_boot(self, setting: BootSetting) -> None: ...

    @abstractmethod
    def _inventory(self) -> Inventory: ...

    def _open_console(self, feed: ConsoleFeed) -> ConsoleIO:
        """Start SOL, delivering output to ``feed`` from any thread."""
        raise BmcUnsupported(driver=self.name, action="open a serial console", bmc=self.target.where)

    @abstractmethod
    def _close(self) -> None: ...

    def _forget_session(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """Called on the event loop after a connection failure: drop cached sessions so the next
        call logs in afresh. Must only reset attributes (the failed thread may still run)."""

    # --- policy --------------------------------------------------------------------------------
    async def _call(self, what: str, hook: Callable[[], T]) -> T:
        """Run ``hook`` in the executor under the whole policy; see the module docstring."""
        attempts = self.policy.retries + 1
        for attempt in range(attempts):
            if not self._breaker.acquire():
                status = self._breaker.status()
                raise BmcCircuitOpen(bmc=self.target.where, seconds=status.retry_in_s, failures=status.failures)
            try:
                result = await self._run_once(what, hook)
            except asyncio.CancelledError:
                self._breaker.abandon_trial()  # else a cancelled trial would hold the breaker half-open
                raise
            except BmcError as err:
                self._account(err)
                last_try = attempt + 1 >= attempts
                if not err.retryable or last_try or self._breaker.is_open:
                    raise
                delay = self.policy.backoff_s * (2**attempt)
                delay += random.uniform(0, delay / 2)  # jitter: a sweep's retries must not sync up
                log.info("%s on %s failed (%s); retry %d/%d in %.2f s", what, self.target.key, err.message,
                         attempt + 1, self.policy.retries, delay)
                await self._sleep(delay)
            else:
                self._breaker.record_success()
                return result
        raise AssertionError("unreachable: the loop returns or raises")

    def _account(self, err: BmcError) -> None:
        """Feed the breaker: only silence and refused credentials count against a BMC."""
        if isinstance(err, BmcConnectionError | BmcAuthError):
            self._breaker.record_failure()
            if isinstance(err, BmcConnectionError):
                self._forget_session()
        else:
            self._breaker.release_trial()  # the BMC answered, so it is reachable

    async def _run_once(self, what: str, hook: Callable[[], T]) -> T:
        if self._semaphore is None:  # created lazily: bound to the running loop
            self._semaphore = asyncio.Semaphore(self.policy.per_bmc_concurrency)
            self._pace_lock = asyncio.Lock()
        async with self._semaphore:
            await self._pace()
            loop = asyncio.get_running_loop()
            try:
                return await asyncio.wait_for(loop.run_in_executor(self._executor, hook), self.policy.timeout_s)
            except TimeoutError:
                raise BmcConnectionError(
                    bmc=self.target.where, reason=f"no answer within {self.policy.timeout_s:g} s to {what}"
                ) from None
            except BmcError:
                raise
            except Exception as exc:
                raise self._map_error(exc, what) from None

    async def _pace(self) -> None:
        """Space commands to this BMC by ``min_interval_s`` (measured start to start)."""
        assert self._pace_lock is not None
        async with self._pace_lock:
            if self._last_command is not None and self.policy.min_interval_s > 0:
                wait = self._last_command + self.policy.min_interval_s - self._monotonic()
                if wait > 0:
                    await self._sleep(wait)
            self._last_command = self._monotonic()

    def _map_error(self, exc: BaseException, what: str) -> BmcError:
        message = self._scrub(str(exc) or type(exc).__name__)
        for matcher, error_cls in self.error_rules:
            if isinstance(matcher, re.Pattern):
                matched = matcher.search(message) is not None
            else:
                matched = isinstance(exc, matcher)
            if matched:
                return error_cls(bmc=self.target.where, reason=message, driver=self.name, action=what)
        return BmcError(bmc=self.target.where, reason=f"{type(exc).__name__}: {message}")

    def _scrub(self, text: str) -> str:
        """Libraries sometimes echo what they were given; never let the password out."""
        password = self.target.password
        return text.replace(password, "***") if password else text

    async def _verify(self, expected: str, read: Callable[[], Awaitable[T]], done: Callable[[T], bool],
                      describe: Callable[[T], str]) -> T:
        """Poll ``read`` until ``done`` or ``verify_timeout_s``; bounded in time and in count."""
        deadline = self._monotonic() + self.policy.verify_timeout_s
        max_polls = math.ceil(self.policy.verify_timeout_s / self.policy.verify_poll_s) + 1
        actual = "nothing"
        for _ in range(max_polls):
            value = await read()
            if done(value):
                return value
            actual = describe(value)
            if self._monotonic() >= deadline:
                break
            await self._sleep(self.policy.verify_poll_s)
        raise BmcVerifyFailed(bmc=self.target.where, expected=expected, actual=actual)

