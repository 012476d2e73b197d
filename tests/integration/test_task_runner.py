"""The task runner against a real database: claiming, progress, failure, cancel, leases, takeover."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.models import Alert, Task
from appliance.services.tasks import TaskService
from appliance.tasks.handlers import Outcome, TaskContext, TaskHandler
from appliance.tasks.runner import TaskRunner
from appliance.tasks.states import TaskState
from tests.conftest import FakeClock
from tests.support.handlers import TEST_HANDLERS


class PhasedTask(TaskHandler):
    kind = "test-phased"

    async def run(self, ctx: TaskContext) -> Outcome:
        async with ctx.phase("Prepare", until_percent=40) as phase:
            await phase.progress(50, "half prepared")
        async with ctx.phase("Apply", until_percent=100) as phase:
            await phase.progress(100, "applied")
        ctx.set_result("/rest/backups/none", "none", "backups")
        return Outcome(status="Phased work done.", warning=True)


HANDLERS = {cls.kind: cls for cls in (*TEST_HANDLERS, PhasedTask)}


def queue(ctx: AppContext, kind: str, **args: Any) -> str:
    with unit_of_work(ctx.session_factory) as db:
        return TaskService(db, ctx.clock).create(kind=kind, name=f"{kind} task", owner="tester", args=args).id


def load(ctx: AppContext, task_id: str) -> Task:
    with unit_of_work(ctx.session_factory) as db:
        task = db.get(Task, task_id)
        assert task is not None
        task.progress  # noqa: B018 - load before the session closes
        db.expunge(task)
        return task


async def run_until(runner: TaskRunner, done: Callable[[], bool], timeout: float = 30.0) -> None:
    job = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.02)
    finally:
        await runner.stop(grace_s=0.5)
        await job


def finished(ctx: AppContext, task_id: str) -> Callable[[], bool]:
    return lambda: load(ctx, task_id).state not in ("New", "Running", "Stopping")


def test_task_runs_to_completion_with_progress(ctx: AppContext) -> None:
    task_id = queue(ctx, "test-slow", steps=3, delay=0.01)
    asyncio.run(run_until(TaskRunner(ctx, HANDLERS), finished(ctx, task_id)))
    task = load(ctx, task_id)
    assert task.state == TaskState.COMPLETED
    assert task.percent_complete == 100
    assert task.lease_owner is None
    updates = [p.status_update for p in task.progress]
    assert updates[:2] == ["Queued.", "Started."]
    assert "Step 3 of 3 done." in updates
    assert task.started is not None and task.completed is not None


def test_failing_task_records_error(ctx: AppContext) -> None:
    task_id = queue(ctx, "test-fail")
    asyncio.run(run_until(TaskRunner(ctx, HANDLERS), finished(ctx, task_id)))
    task = load(ctx, task_id)
    assert task.state == TaskState.ERROR
    assert task.errors[0]["errorCode"] == "RESOURCE_CONFLICT"
    assert "the test asked for a failure" in task.errors[0]["message"]
    assert task.percent_complete == 30


def test_phases_become_child_tasks(ctx: AppContext) -> None:
    task_id = queue(ctx, "test-phased")
    asyncio.run(run_until(TaskRunner(ctx, HANDLERS), finished(ctx, task_id)))
    task = load(ctx, task_id)
    assert task.state == TaskState.WARNING
    assert task.resource_uri == "/rest/backups/none"
    with unit_of_work(ctx.session_factory) as db:
        children = list(db.scalars(select(Task).where(Task.parent_id == task_id).order_by(Task.created)))
        assert [(c.name, c.state, c.percent_complete) for c in children] == [
            ("Prepare", "Completed", 100), ("Apply", "Completed", 100)]


def test_unknown_kind_fails_clearly(ctx: AppContext) -> None:
    task_id = queue(ctx, "no-such-kind")
    with unit_of_work(ctx.session_factory) as db:  # as if another node queued it while running
        db.execute(update(Task).where(Task.id == task_id).values(state="Running", lease_owner="gone:1",
                                                                  lease_expires=ctx.clock()))
    asyncio.run(run_until(TaskRunner(ctx, HANDLERS), finished(ctx, task_id)))
    task = load(ctx, task_id)
    assert task.state == TaskState.ERROR
    assert task.errors[0]["errorCode"] == "TASK_KIND_UNKNOWN"


def test_cancel_queued_task(ctx: AppContext) -> None:
    task_id = queue(ctx, "test-slow")
    with unit_of_work(ctx.session_factory) as db:
        TaskService(db).cancel(task_id, "operator1")
    task = load(ctx, task_id)
    assert task.state == TaskState.TERMINATED
    assert task.errors[0]["message"] == "Cancelled by operator1."


def test_cancel_running_task(ctx: AppContext) -> None:
    task_id = queue(ctx, "test-slow", steps=200, delay=0.05)
    runner = TaskRunner(ctx, HANDLERS)

    async def scenario() -> None:
        job = asyncio.create_task(runner.run())
        async with asyncio.timeout(30):
            while load(ctx, task_id).percent_complete < 2:
                await asyncio.sleep(0.02)
            with unit_of_work(ctx.session_factory) as db:
                TaskService(db, ctx.clock, ctx.wakeup.notify).cancel(task_id, "operator1")
            while load(ctx, task_id).state != TaskState.TERMINATED:
                await asyncio.sleep(0.02)
        await runner.stop(grace_s=0.5)
        await job

    asyncio.run(scenario())
    task = load(ctx, task_id)
    assert task.errors[0]["errorCode"] == "TASK_CANCELLED"
    assert 0 < task.percent_complete < 100


def _abandon(ctx: AppContext, task_id: str, owner: str, expires_in: float, attempts: int = 1,
             checkpoint: dict[str, Any] | None = None) -> None:
    """Make the row look like a runner ``owner`` was working on it and then vanished."""
    with unit_of_work(ctx.session_factory) as db:
        db.execute(update(Task).where(Task.id == task_id).values(
            state="Running", lease_owner=owner, lease_expires=ctx.clock() + timedelta(seconds=expires_in),
            attempts=attempts, started=ctx.clock(), checkpoint=checkpoint or {}, percent_complete=40))


def _alerts(ctx: AppContext) -> list[Alert]:
    with unit_of_work(ctx.session_factory) as db:
        return list(db.scalars(select(Alert)))


def test_other_nodes_task_waits_for_lease_expiry(ctx: AppContext, clock: FakeClock) -> None:
    ctx.clock = clock
    task_id = queue(ctx, "test-slow-resumable", steps=4, delay=0.01)
    _abandon(ctx, task_id, "other-node:boot1", expires_in=30, checkpoint={"done": 2})

    async def scenario() -> None:
        runner = TaskRunner(ctx, HANDLERS)
        job = asyncio.create_task(runner.run())
        await asyncio.sleep(0.5)  # several polls: the lease is still valid, so nobody may touch it
        assert load(ctx, task_id).lease_owner == "other-node:boot1"
        clock.advance(seconds=31)
        async with asyncio.timeout(30):
            while load(ctx, task_id).state != TaskState.COMPLETED:
                await asyncio.sleep(0.02)
        await runner.stop(grace_s=0.5)
        await job

    asyncio.run(scenario())
    task = load(ctx, task_id)
    updates = [p.status_update for p in task.progress]
    assert any(u.startswith("Resumed by test-node:") and "other-node:boot1" in u for u in updates)
    # resumed from its checkpoint: steps 3 and 4 only
    assert "Step 2 of 4 done." not in updates and "Step 4 of 4 done." in updates
    assert task.status == "All 4 steps done (attempt 2)."


def test_restart_on_same_node_recovers_at_once(ctx: AppContext, clock: FakeClock) -> None:
    ctx.clock = clock
    plain = queue(ctx, "test-slow", steps=4, delay=0.01)
    resumable = queue(ctx, "test-slow-resumable", steps=4, delay=0.01)
    for task_id in (plain, resumable):  # held by an earlier process of this node, lease still valid
        _abandon(ctx, task_id, "test-node:deadbeef", expires_in=3600)

    asyncio.run(run_until(TaskRunner(ctx, HANDLERS),
                          lambda: finished(ctx, plain)() and finished(ctx, resumable)()))
    failed, resumed = load(ctx, plain), load(ctx, resumable)
    assert failed.state == TaskState.ERROR
    assert failed.errors[0]["errorCode"] == "TASK_INTERRUPTED"
    assert "test-node:deadbeef" in failed.errors[0]["message"]
    assert resumed.state == TaskState.COMPLETED
    alerts = _alerts(ctx)
    assert [(a.alert_type, a.resource_uri) for a in alerts] == [("Ingot.Tasks.Interrupted", f"/rest/tasks/{plain}")]


def test_resumable_task_gives_up_after_max_attempts(ctx: AppContext) -> None:
    task_id = queue(ctx, "test-slow-resumable")
    _abandon(ctx, task_id, "gone:1", expires_in=-1, attempts=ctx.settings.tasks.max_attempts)
    asyncio.run(run_until(TaskRunner(ctx, HANDLERS), finished(ctx, task_id)))
    assert load(ctx, task_id).errors[0]["errorCode"] == "TASK_INTERRUPTED"


def test_lost_lease_stops_writing(ctx: AppContext) -> None:
    """A runner whose lease was taken over (it stalled) must not overwrite the new owner's row."""
    task_id = queue(ctx, "test-slow", steps=400, delay=0.02)
    runner = TaskRunner(ctx, HANDLERS)

    async def scenario() -> None:
        job = asyncio.create_task(runner.run())
        async with asyncio.timeout(30):
            while load(ctx, task_id).percent_complete < 1:
                await asyncio.sleep(0.02)
            with unit_of_work(ctx.session_factory) as db:  # another node took it over
                db.execute(update(Task).where(Task.id == task_id).values(lease_owner="thief:1", percent_complete=0))
            while task_id in runner.running_ids:  # noticed at the next heartbeat
                await asyncio.sleep(0.05)
        await runner.stop(grace_s=0.5)
        await job

    asyncio.run(scenario())
    task = load(ctx, task_id)
    assert task.lease_owner == "thief:1"
    assert task.state == TaskState.RUNNING
    assert task.percent_complete == 0


def test_shutdown_interrupts_and_releases(ctx: AppContext) -> None:
    plain = queue(ctx, "test-slow", steps=400, delay=0.05)
    resumable = queue(ctx, "test-slow-resumable", steps=400, delay=0.05)
    runner = TaskRunner(ctx, HANDLERS)

    async def scenario() -> None:
        job = asyncio.create_task(runner.run())
        async with asyncio.timeout(30):
            while not (load(ctx, plain).percent_complete and load(ctx, resumable).percent_complete):
                await asyncio.sleep(0.02)
        await runner.stop(grace_s=0.1)
        await job

    asyncio.run(scenario())
    assert load(ctx, plain).state == TaskState.ERROR
    paused = load(ctx, resumable)
    assert (paused.state, paused.lease_owner) == (TaskState.RUNNING, None)
    assert "Paused" in paused.progress[-1].status_update


@pytest.mark.parametrize("limit", [1, 2])
def test_concurrency_limit(ctx: AppContext, limit: int) -> None:
    ctx.settings.tasks.max_concurrent = limit
    ids = [queue(ctx, "test-slow", steps=3, delay=0.05) for _ in range(4)]
    runner = TaskRunner(ctx, HANDLERS)
    peak = 0

    async def scenario() -> None:
        nonlocal peak
        job = asyncio.create_task(runner.run())
        async with asyncio.timeout(60):
            while not all(finished(ctx, t)() for t in ids):
                peak = max(peak, len(runner.running_ids))
                await asyncio.sleep(0.01)
        await runner.stop(grace_s=0.5)
        await job

    asyncio.run(scenario())
    assert peak == limit
    assert {load(ctx, t).state for t in ids} == {TaskState.COMPLETED}
