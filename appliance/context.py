"""The composition object: what the entry point builds once and hands to the web app, the task
runner and task handlers. Holds no request state."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine

from appliance.clock import Clock, system_clock
from appliance.config import Settings
from appliance.db.session import SessionFactory


class Wakeup:
    """Thread-safe nudge for the task runner: set from an API thread when a task is created or
    cancelled, awaited on the event loop. Without a loop attached it does nothing (the runner's
    poll interval still finds the work)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._lock = threading.Lock()

    def attach(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._loop, self._event = loop, event

    def detach(self) -> None:
        with self._lock:
            self._loop = self._event = None

    def notify(self) -> None:
        with self._lock:
            loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    session_factory: SessionFactory
    node_name: str
    clock: Clock = system_clock
    wakeup: Wakeup = field(default_factory=Wakeup)
