"""The task runner: claims queued tasks through a database lease and runs their handlers.

Theory of operation
-------------------
Each runner has an identity ``<node>:<boot>`` — the node name is stable for an appliance (its
INGOT_HOME), the boot part is new for every process. It claims a task with a compare-and-set
UPDATE that writes its identity and ``lease_expires`` and keeps renewing that lease every third of
``lease_ttl_s`` while the handler runs.

A task is claimable when it is New, or active but abandoned: its lease expired (the runner on
another node died), or it is held by an earlier process of this same node (we are its restart, so
there is no need to wait for the lease to run out). An abandoned task is resumed if its handler is
resumable and it has attempts left, and otherwise failed with ``TASK_INTERRUPTED`` plus an alert —
never left "Running".

Every write the runner makes for a task is fenced by ``lease_owner = me``: a runner that stalled
past its lease and lost the task to another node cannot overwrite the new owner's progress.
Cancellation requested through the API is noticed at the next heartbeat (or at once on this node,
through the wakeup) and ends the handler's coroutine; the task becomes Terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.errors import ApplianceError, TaskCancelled, TaskInterrupted, UnknownTaskKind
from appliance.models import Task
from appliance.repositories.tasks import TaskRepository
from appliance.services.alerts import AlertService
from appliance.services.tasks import error_entry
from appliance.tasks.handlers import HandlerFactory, Outcome, TaskContext, TaskHandler
from appliance.tasks.states import ACTIVE_STATES, TaskState

T = TypeVar("T")

log = logging.getLogger(__name__)


async def _outlive_cancel(write: Callable[[], T]) -> T:
    """Run a database write for a handler in a worker thread, and wait for it even when the handler
    is cancelled. The thread cannot be stopped; if the handler returned at once, its last progress
    line ("Step 6 of 400 done.") could land after the runner recorded how the task ended ("Paused")."""
    job = asyncio.ensure_future(asyncio.to_thread(write))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        raise


class _Cancelled(Exception):
    """Why we cancelled a handler coroutine, so the wrapper records the right end state."""


class TaskRunner:
    def __init__(self, app: AppContext, handlers: dict[str, HandlerFactory]) -> None:
        self.app = app
        self.settings = app.settings.tasks
        self.handlers: dict[str, TaskHandler] = {kind: cls(app) for kind, cls in handlers.items()}
        self.owner = f"{app.node_name}:{uuid.uuid4().hex[:12]}"
        self._running: dict[str, asyncio.Task[None]] = {}
        self._why: dict[str, str] = {}  # task id -> "cancel:<user>" | "lost" | "shutdown"
        self._stopping = False
        self._wake = asyncio.Event()

    # --- the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Claim and run tasks until :meth:`stop`."""
        self.app.wakeup.attach(asyncio.get_running_loop(), self._wake)
        heartbeat_every = self.settings.lease_ttl_s / 3
        next_heartbeat = 0.0
        loop = asyncio.get_running_loop()
        log.info("task runner %s started", self.owner)
        try:
            while not self._stopping:
                self._wake.clear()
                if loop.time() >= next_heartbeat:
                    await self._heartbeat()
                    next_heartbeat = loop.time() + heartbeat_every
                else:
                    await self._check_cancellations()
                await self._claim()
                timeout = min(self.settings.poll_interval_s, max(0.0, next_heartbeat - loop.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)
        finally:
            self.app.wakeup.detach()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop claiming; let running handlers finish for ``grace_s``, then interrupt the rest.

        An interrupted resumable task keeps its Running state with its lease released, so the next
        runner resumes it at once; any other is failed now with a clear message.
        """
        self._stopping = True
        self._wake.set()
        pending = list(self._running.values())
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace_s)
            for task_id, job in list(self._running.items()):
                if job in still:
                    self._why[task_id] = "shutdown"
                    job.cancel()
            if still:
                await asyncio.wait(still, timeout=5)

    @property
    def running_ids(self) -> set[str]:
        return set(self._running)

    # --- claiming ------------------------------------------------------------------------------
    async def _claim(self) -> None:
        free = self.settings.max_concurrent - len(self._running)
        if free <= 0 or self._stopping:
            return
        started = await asyncio.to_thread(self._claim_sync, free)
        for task_id, kind, owner, args, checkpoint, attempt in started:
            ctx = TaskContext(self, task_id, owner, args, checkpoint, attempt)
            job = asyncio.create_task(self._execute(self.handlers[kind], ctx), name=f"task-{task_id}")
            self._running[task_id] = job
            job.add_done_callback(functools.partial(self._forget_job, task_id))

    def _forget_job(self, task_id: str, _job: asyncio.Task[None]) -> None:
        self._running.pop(task_id, None)
        self._why.pop(task_id, None)
        self._wake.set()  # a slot is free

    def _claim_sync(self, limit: int) -> list[tuple[str, str, str, dict[str, Any], dict[str, Any], int]]:
        started: list[tuple[str, str, str, dict[str, Any], dict[str, Any], int]] = []
        now = self.app.clock()
        expires = now + timedelta(seconds=self.settings.lease_ttl_s)
        with unit_of_work(self.app.session_factory) as db:
            repo = TaskRepository(db)
            for task in repo.claimable(self.app.node_name, self.owner, now, limit * 2):
                if len(started) >= limit:
                    break
                if task.id in self._running:
                    continue
                decision = self._decide(task)
                if decision == "run":
                    values: dict[str, Any] = {"state": TaskState.RUNNING, "attempts": task.attempts + 1,
                                              "modified": now}
                    if task.started is None:
                        values["started"] = now
                    if not repo.try_claim(task, self.owner, expires, values):
                        continue  # another runner was quicker
                    message = "Started." if task.state == TaskState.NEW else (
                        f"Resumed by {self.owner} after {task.lease_owner} stopped (attempt {task.attempts + 1})."
                    )
                    repo.add_progress(task, message, now)
                    self._fail_open_phases(db, task.id, TaskInterrupted(owner=task.lease_owner or "?"))
                    started.append((task.id, task.kind, task.owner, dict(task.args), dict(task.checkpoint),
                                    task.attempts + 1))
                    log.info("task %s (%s) claimed by %s", task.id, task.kind, self.owner)
                else:
                    self._close_abandoned(db, repo, task, decision, expires)
        return started

    def _decide(self, task: Task) -> str:
        """run | unknown | cancelled | interrupted"""
        if task.kind not in self.handlers:
            return "unknown"
        if task.state == TaskState.NEW:
            return "run"
        if task.cancel_requested_by:
            return "cancelled"
        handler = self.handlers[task.kind]
        if handler.resumable and task.attempts < self.settings.max_attempts:
            return "run"
        return "interrupted"

    def _close_abandoned(
        self, db: Session, repo: TaskRepository, task: Task, decision: str, expires: Any
    ) -> None:
        previous_owner = task.lease_owner  # before the claim below replaces it with ours
        if not repo.try_claim(task, self.owner, expires, {}):
            return
        db.refresh(task)
        error: ApplianceError
        if decision == "unknown":
            error = UnknownTaskKind(kind=task.kind)
            state = TaskState.ERROR
        elif decision == "cancelled":
            error = TaskCancelled(user=task.cancel_requested_by or "?")
            state = TaskState.TERMINATED
        else:
            error = TaskInterrupted(owner=previous_owner or "?")
            state = TaskState.ERROR
        self._finish_row(db, task, state, error.message, [error_entry(error)])
        self._fail_open_phases(db, task.id, error)
        if decision == "interrupted":
            AlertService(db, self.app.clock).raise_alert(
                alert_type="Ingot.Tasks.Interrupted",
                severity="Warning",
                description=f"Task '{task.name}' was interrupted when runner {previous_owner} stopped, "
                f"and was marked failed.",
                corrective_action="Check the affected resource, then start the operation again.",
                resource_uri=f"/rest/tasks/{task.id}",
                resource_name=task.name,
                resource_category="tasks",
            )
        log.warning("task %s (%s) closed as %s: %s", task.id, task.kind, state, error.message)

    # --- execution -----------------------------------------------------------------------------
    async def _execute(self, handler: TaskHandler, ctx: TaskContext) -> None:
        try:
            outcome = await handler.run(ctx) or Outcome()
        except asyncio.CancelledError:
            why = self._why.get(ctx.task_id, "shutdown")
            await asyncio.shield(self._record_cancel(handler, ctx, why))
            return
        except ApplianceError as exc:
            log.info("task %s failed: %s", ctx.task_id, exc.message)
            await self._finish(ctx, TaskState.ERROR, exc.message, [error_entry(exc)])
            return
        except Exception as exc:
            log.exception("task %s (%s) crashed", ctx.task_id, handler.kind)
            error = ApplianceError(f"Unexpected error in {handler.kind}: {type(exc).__name__}.")
            await self._finish(ctx, TaskState.ERROR, error.message, [error_entry(error)])
            return
        state = TaskState.WARNING if outcome.warning else TaskState.COMPLETED
        await self._finish(ctx, state, outcome.status, [], percent=100)

    async def _record_cancel(self, handler: TaskHandler, ctx: TaskContext, why: str) -> None:
        if why == "lost":
            log.warning("task %s: lease lost to another runner; stopped without writing", ctx.task_id)
        elif why.startswith("cancel:"):
            cancelled = TaskCancelled(user=why.removeprefix("cancel:"))
            await self._finish(ctx, TaskState.TERMINATED, cancelled.message, [error_entry(cancelled)])
        elif handler.resumable:
            await asyncio.to_thread(self._release_sync, ctx.task_id)
        else:
            error = TaskInterrupted(owner=self.owner, details="The appliance was shut down.")
            await self._finish(ctx, TaskState.ERROR, error.message, [error_entry(error)])

    async def _finish(
        self, ctx: TaskContext, state: TaskState, status: str, errors: list[dict[str, Any]],
        percent: int | None = None,
    ) -> None:
        def write() -> None:
            with unit_of_work(self.app.session_factory) as db:
                task = self._fenced(db, ctx.task_id)
                if task is None:
                    return
                if ctx.result is not None:
                    task.resource_uri = ctx.result.uri
                    task.resource_name = ctx.result.name
                    task.resource_category = ctx.result.category
                if ctx.data is not None:
                    task.data = ctx.data
                if percent is not None:
                    task.percent_complete = percent
                self._finish_row(db, task, state, status, errors)
                if state != TaskState.COMPLETED and errors:
                    self._fail_open_phases(db, task.id, None)

        await asyncio.to_thread(write)
        log.info("task %s finished: %s", ctx.task_id, state)

    def _finish_row(self, db: Session, task: Task, state: TaskState, status: str,
                    errors: list[dict[str, Any]]) -> None:
        now = self.app.clock()
        task.state = state
        task.status = status[:255]
        task.errors = errors
        task.completed = now
        task.modified = now
        task.lease_owner = None
        task.lease_expires = None
        TaskRepository(db).add_progress(task, status, now)

    def _release_sync(self, task_id: str) -> None:
        with unit_of_work(self.app.session_factory) as db:
            task = self._fenced(db, task_id)
            if task is not None:
                TaskRepository(db).add_progress(task, "Paused: the appliance is shutting down; it resumes "
                                                      "when a runner starts.", self.app.clock())
                task.lease_owner = None
                task.lease_expires = None

    def _fenced(self, db: Session, task_id: str) -> Task | None:
        task = db.get(Task, task_id)
        if task is None or task.lease_owner != self.owner:
            log.warning("task %s is no longer held by %s; not writing", task_id, self.owner)
            return None
        return task

    def _fail_open_phases(self, db: Session, parent_id: str, error: ApplianceError | None) -> None:
        for child in TaskRepository(db).children(parent_id):
            if child.inline and child.state in ACTIVE_STATES:
                err = error or ApplianceError("The parent task ended before this phase finished.")
                child.state = TaskState.ERROR
                child.status = err.message[:255]
                child.errors = [error_entry(err)]
                child.completed = self.app.clock()

    # --- reporting (called through TaskContext) ------------------------------------------------
    async def report(self, task_id: str, percent: int | None, message: str | None) -> None:
        def write() -> None:
            with unit_of_work(self.app.session_factory) as db:
                task = db.get(Task, task_id)
                if task is None:
                    return
                root = task if not task.inline else db.get(Task, task.parent_id or "")
                if root is None or root.lease_owner != self.owner:
                    return
                now = self.app.clock()
                if percent is not None:
                    task.percent_complete = percent
                if message:
                    task.status = message[:255]
                    TaskRepository(db).add_progress(task, message, now)
                task.modified = now

        await _outlive_cancel(write)

    async def save_checkpoint(self, task_id: str, data: dict[str, Any]) -> None:
        def write() -> None:
            with unit_of_work(self.app.session_factory) as db:
                task = self._fenced(db, task_id)
                if task is not None:
                    task.checkpoint = data

        await _outlive_cancel(write)

    async def open_phase(self, parent_id: str, name: str) -> str:
        def write() -> str:
            with unit_of_work(self.app.session_factory) as db:
                parent = self._fenced(db, parent_id)
                now = self.app.clock()
                child = Task(
                    kind="phase", name=name, owner=parent.owner if parent else "", state=TaskState.RUNNING,
                    status="Running.", parent_id=parent_id, inline=True, started=now, created=now,
                    modified=now, task_type=parent.task_type if parent else "User",
                )
                db.add(child)
                db.flush()
                TaskRepository(db).add_progress(child, "Started.", now)
                return child.id

        return await _outlive_cancel(write)

    async def close_phase(self, child_id: str, failed: bool, error: ApplianceError | None) -> None:
        def write() -> None:
            with unit_of_work(self.app.session_factory) as db:
                child = db.get(Task, child_id)
                if child is None or child.state not in ACTIVE_STATES:
                    return
                now = self.app.clock()
                if failed:
                    err = error or ApplianceError("The phase was interrupted.")
                    child.state, child.status, child.errors = TaskState.ERROR, err.message[:255], [error_entry(err)]
                else:
                    child.state, child.status, child.percent_complete = TaskState.COMPLETED, "Completed.", 100
                child.completed = child.modified = now
                TaskRepository(db).add_progress(child, child.status, now)

        await _outlive_cancel(write)

    # --- heartbeat -----------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        ids = set(self._running)
        if not ids:
            return
        expires = self.app.clock() + timedelta(seconds=self.settings.lease_ttl_s)

        def renew() -> tuple[set[str], dict[str, str]]:
            with unit_of_work(self.app.session_factory) as db:
                repo = TaskRepository(db)
                return repo.renew(self.owner, ids, expires), repo.cancel_requested(ids)

        held, cancels = await asyncio.to_thread(renew)
        for task_id in ids - held:
            self._interrupt(task_id, "lost")
        self._apply_cancels(cancels)

    async def _check_cancellations(self) -> None:
        ids = set(self._running)
        if not ids:
            return

        def read() -> dict[str, str]:
            with unit_of_work(self.app.session_factory) as db:
                return TaskRepository(db).cancel_requested(ids)

        self._apply_cancels(await asyncio.to_thread(read))

    def _apply_cancels(self, cancels: dict[str, str]) -> None:
        for task_id, user in cancels.items():
            self._interrupt(task_id, f"cancel:{user}")

    def cancelled_by(self, task_id: str) -> str | None:
        """The user who cancelled the running task, or None (running, or stopped by a shutdown or a
        lost lease, after which a resumable task goes on elsewhere)."""
        why = self._why.get(task_id, "")
        return why.removeprefix("cancel:") if why.startswith("cancel:") else None

    def _interrupt(self, task_id: str, why: str) -> None:
        job = self._running.get(task_id)
        if job is not None and task_id not in self._why:
            self._why[task_id] = why
            job.cancel()

