"""Task handlers used only by tests: slow work whose pace the test controls."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from appliance.tasks.handlers import Outcome, TaskContext, TaskHandler


class SlowTask(TaskHandler):
    """``steps`` steps of ``delay`` seconds each; not resumable (an interrupted run is failed)."""

    kind: ClassVar[str] = "test-slow"

    async def run(self, ctx: TaskContext) -> Outcome:
        steps = int(ctx.args.get("steps", 5))
        delay = float(ctx.args.get("delay", 0.2))
        first = int(ctx.checkpoint.get("done", 0))
        for step in range(first, steps):
            await asyncio.sleep(delay)
            await ctx.save_checkpoint({"done": step + 1})
            await ctx.progress(100 * (step + 1) // steps, f"Step {step + 1} of {steps} done.")
        return Outcome(status=f"All {steps} steps done (attempt {ctx.attempt}).")


class ResumableSlowTask(SlowTask):
    """The same work, resumable from its checkpoint."""

    kind: ClassVar[str] = "test-slow-resumable"
    resumable: ClassVar[bool] = True


class FailingTask(TaskHandler):
    kind: ClassVar[str] = "test-fail"

    async def run(self, ctx: TaskContext) -> Outcome:
        from appliance.errors import Conflict

        await ctx.progress(30, "About to fail.")
        raise Conflict(reason="the test asked for a failure")


TEST_HANDLERS = (SlowTask, ResumableSlowTask, FailingTask)
