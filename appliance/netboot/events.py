"""Boot events (which file each machine fetched, and when) queued from any thread and written in
batches by the boot services' runtime, so a boot storm costs one insert per batch."""

from __future__ import annotations

import collections
import threading
from datetime import UTC, datetime
from typing import Any


class EventQueue:
    """Boot events from any thread, written to the database in batches."""

    def __init__(self, limit: int = 100_000) -> None:
        self._items: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        self._lock = threading.Lock()

    def add(self, *, service: str, action: str, mac: str | None = None, client_ip: str | None = None,
            detail: str | None = None, ok: bool = True) -> None:
        with self._lock:
            self._items.append({"at": datetime.now(UTC), "service": service, "action": action, "mac": mac,
                                "client_ip": client_ip, "detail": detail, "ok": ok})

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items
