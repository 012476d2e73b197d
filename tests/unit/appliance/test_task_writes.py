"""A handler's database write finishes before the handler's cancellation is seen by the runner.

The runner records how an interrupted task ended (``Paused``, ``Cancelled``) right after the
handler coroutine ends; a progress write still running in its worker thread must not land after
that record. CI caught it once in test_shutdown_interrupts_and_releases; this test forces the
ordering.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from appliance.tasks.runner import _outlive_cancel


def test_cancelled_caller_waits_for_the_write_in_its_thread() -> None:
    started, release = threading.Event(), threading.Event()
    wrote: list[str] = []

    def write() -> str:
        started.set()
        release.wait(30)
        wrote.append("Step 6 of 400 done.")
        return "written"

    async def scenario() -> None:
        caller = asyncio.create_task(_outlive_cancel(write))
        await asyncio.to_thread(started.wait, 30)
        caller.cancel()
        for _ in range(20):  # a plain to_thread caller would be done after the first of these
            await asyncio.sleep(0)
        assert not caller.done() and wrote == []
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert wrote == ["Step 6 of 400 done."]

    asyncio.run(scenario())


def test_uncancelled_caller_gets_the_result_and_errors() -> None:
    def fail() -> None:
        raise ValueError("disk full")

    assert asyncio.run(_outlive_cancel(lambda: 42)) == 42
    with pytest.raises(ValueError, match="disk full"):
        asyncio.run(_outlive_cancel(fail))
