"""What a kind of task does: the handler interface, the context it works through, and discovery.

Theory of operation
-------------------
A service queues a task row (``TaskService.create(kind=...)``) and returns 202 + its URI. A runner
claims the row and calls ``handler.run(ctx)`` on the event loop. The handler reports through the
:class:`TaskContext` — ``progress``, ``checkpoint``, ``phase`` for child tasks, ``set_result`` for
the resource the SDK fetches afterwards — and runs blocking work through ``ctx.run_sync``, never on
the loop. It finishes by returning (Completed, or Warning with a message), by raising an
:class:`~appliance.errors.ApplianceError` (Error, with that error in ``taskErrors``), or by being
cancelled (Terminated).

A handler that sets ``resumable = True`` promises that ``run`` can start again from
``ctx.checkpoint`` after the appliance died mid-task; any other handler's interrupted tasks are
failed with a clear message instead. Handlers are found through the ``appliance.tasks``
entry-point group, keyed by ``kind``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from appliance.errors import ApplianceError
from appliance.services.tasks import ResourceRef

if TYPE_CHECKING:
    from appliance.context import AppContext
    from appliance.tasks.runner import TaskRunner

log = logging.getLogger(__name__)
T = TypeVar("T")
ENTRY_POINT_GROUP = "appliance.tasks"


@dataclass(frozen=True)
class Outcome:
    """What a handler may return: a final status line, and whether it merits a Warning."""

    status: str = "Completed."
    warning: bool = False


class TaskHandler(ABC):
    """One kind of long work. Subclasses set ``kind`` and implement ``run``.

    :cvar kind: the key stored in ``tasks.kind``; short kebab-case.
    :cvar resumable: whether ``run`` may be called again for an interrupted task.
    """

    kind: ClassVar[str]
    resumable: ClassVar[bool] = False

    def __init__(self, app: AppContext) -> None:
        self.app = app

    @abstractmethod
    async def run(self, ctx: TaskContext) -> Outcome | None:
        """Do the work.

        :raises ApplianceError: to fail the task with that error.
        :returns: an :class:`Outcome`, or None for a plain "Completed."
        """


class TaskContext:
    """The handler's view of its task. All database writes happen off the event loop."""

    def __init__(
        self,
        runner: TaskRunner,
        task_id: str,
        owner: str,
        args: dict[str, Any],
        checkpoint: dict[str, Any],
        attempt: int,
    ) -> None:
        self._runner = runner
        self.task_id = task_id
        self.owner = owner  # the user who started it
        self.args = args
        self.checkpoint = dict(checkpoint)
        self.attempt = attempt
        self.result: ResourceRef | None = None
        self.data: dict[str, Any] | None = None
        self._percent = 0

    @property
    def uri(self) -> str:
        return f"/rest/tasks/{self.task_id}"

    async def progress(self, percent: int | None = None, message: str | None = None) -> None:
        """Report progress: percent of this task (0-100, never going back) and/or a status line."""
        if percent is not None:
            percent = max(self._percent, min(100, int(percent)))
            self._percent = percent
        await self._runner.report(self.task_id, percent, message)

    def cancelled_by(self) -> str | None:
        """Inside ``except CancelledError``: the user who cancelled this task, or None when the
        appliance is shutting down or lost the task (a resumable handler then leaves its work
        for the next run to pick up, and must not undo it)."""
        return self._runner.cancelled_by(self.task_id)

    async def save_checkpoint(self, data: dict[str, Any]) -> None:
        """Persist where a resumable handler has got to; a resumed run sees it as ``checkpoint``."""
        self.checkpoint = dict(data)
        await self._runner.save_checkpoint(self.task_id, self.checkpoint)

    def set_result(self, uri: str | None, name: str | None, category: str | None) -> None:
        """The resource the task produced; the SDK GETs its URI once the task completes."""
        self.result = ResourceRef(uri=uri, name=name, category=category)

    def set_data(self, data: dict[str, Any]) -> None:
        """Structured output stored with the task (its ``data`` field) when it finishes."""
        self.data = dict(data)

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (database, files, subprocess waits) in a worker thread."""
        return await asyncio.to_thread(fn, *args)

    async def run_with_progress(self, work: Callable[[Callable[[float], None]], T], start: int, end: int,
                                doing: str, interval: float = 0.5) -> T:
        """Run blocking ``work(report)`` in a worker thread; ``report(percent)`` (0-100, from any
        thread) moves this task from ``start`` to ``end`` percent, looked at every ``interval`` s
        and written only when the whole percent has moved (each write is a progress line)."""

        async def report(percent: int) -> None:
            await self.progress(start + percent * (end - start) // 100, f"{doing}: {percent}%.")

        return await _follow(work, report, interval)

    @contextlib.asynccontextmanager
    async def phase(self, name: str, until_percent: int) -> AsyncIterator[PhaseReporter]:
        """A child task for one phase of this task; the parent's percent moves from where it is to
        ``until_percent`` as the phase reports its own 0-100."""
        start = self._percent
        child_id = await self._runner.open_phase(self.task_id, name)
        reporter = PhaseReporter(self, child_id, start, max(start, min(100, until_percent)))
        try:
            yield reporter
        except BaseException as exc:
            error = exc if isinstance(exc, ApplianceError) else None
            await self._runner.close_phase(child_id, failed=True, error=error)
            raise
        await self._runner.close_phase(child_id, failed=False, error=None)
        await self.progress(reporter.end)


class PhaseReporter:
    def __init__(self, parent: TaskContext, child_id: str, start: int, end: int) -> None:
        self.parent, self.child_id, self.start, self.end = parent, child_id, start, end

    async def progress(self, percent: int, message: str | None = None) -> None:
        percent = max(0, min(100, percent))
        await self.parent._runner.report(self.child_id, percent, message)
        await self.parent.progress(self.start + (self.end - self.start) * percent // 100)

    async def run_with_progress(self, work: Callable[[Callable[[float], None]], T], doing: str,
                                interval: float = 0.5) -> T:
        """:meth:`TaskContext.run_with_progress` for a phase: ``work``'s percent is the phase's."""

        async def report(percent: int) -> None:
            await self.progress(percent, f"{doing}: {percent}%.")

        return await _follow(work, report, interval)


async def _follow(work: Callable[[Callable[[float], None]], T], report: Callable[[int], Awaitable[None]],
                  interval: float) -> T:
    """Run blocking ``work(on_percent)`` in a worker thread and ``report`` each whole percent it reaches."""
    latest = [0.0]
    job = asyncio.ensure_future(asyncio.to_thread(work, lambda percent: latest.__setitem__(0, percent)))
    written = -1
    while not job.done():
        await asyncio.wait([job], timeout=interval)
        percent = int(latest[0])
        if percent != written:
            written = percent
            await report(percent)
    return job.result()


HandlerFactory = type[TaskHandler]


def discover_handlers(extra: Iterable[HandlerFactory] = ()) -> dict[str, HandlerFactory]:
    """Handler classes from the ``appliance.tasks`` entry points plus any given explicitly."""
    found: dict[str, HandlerFactory] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
        except Exception:
            log.exception("cannot load task handler %s", entry.value)
            continue
        found[cls.kind] = cls
    for cls in extra:
        found[cls.kind] = cls
    return found
