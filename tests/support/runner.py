"""A real task runner for in-process API tests: its own event loop in a thread, as in ``ingot serve``
(where uvicorn's loop and the runner share one loop; the TestClient brings its own)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appliance.context import AppContext
from appliance.tasks.handlers import discover_handlers
from appliance.tasks.runner import TaskRunner
from appliance.tasks.states import ACTIVE_STATES


class BackgroundRunner:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.loop = asyncio.new_event_loop()
        self.runner = TaskRunner(ctx, discover_handlers())
        self._thread = threading.Thread(target=self._main, name="test-runner", daemon=True)
        self._started = threading.Event()
        self._stopped = asyncio.Event()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        job = self.loop.create_task(self.runner.run())
        self.loop.call_soon(self._started.set)
        self.loop.run_until_complete(job)
        # run() returns as soon as stop() asks it to, while stop() is still letting running tasks
        # finish or interrupting them: keep the loop turning until stop() itself is done.
        self.loop.run_until_complete(self._stopped.wait())
        if "bmcs" in self.ctx.__dict__:
            self.loop.run_until_complete(self.ctx.bmcs.close())
        self.loop.close()

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    async def _stop(self) -> None:
        try:
            await self.runner.stop(grace_s=2)
        finally:
            self._stopped.set()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self._thread.join(30)


@pytest.fixture
def runner(ctx: AppContext) -> Iterator[BackgroundRunner]:
    background = BackgroundRunner(ctx)
    background.start()
    yield background
    background.stop()


def wait_task(client: TestClient, headers: dict[str, str], task_uri: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll a task until it leaves the active states (bounded), then return its body."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(task_uri, headers=headers).json()
        if body["taskState"] not in ACTIVE_STATES:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_uri} still {body['taskState']} after {timeout} s: {body['taskStatus']}")
        time.sleep(0.05)
