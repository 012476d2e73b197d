"""The composition object: what the entry point builds once and hands to the web app, the task
runner and task handlers. Holds no request state."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from appliance.clock import Clock, system_clock
from appliance.config import Settings
from appliance.db.session import SessionFactory
from appliance.netboot.events import EventQueue
from appliance.secretbox import SecretBox
from golden_images.nbd import NbdExports
from golden_images.store import ImageStore

if TYPE_CHECKING:
    from appliance.drivers.pool import BmcPool


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
    #: Nudged by the API after it changed subnets, reservations or DNS records (boot services reload).
    netboot_changed: Wakeup = field(default_factory=Wakeup)
    #: Boot events from the DHCP/TFTP/DNS servers and the HTTP boot endpoint, written in batches.
    boot_events: EventQueue = field(default_factory=EventQueue)

    @cached_property
    def images(self) -> ImageStore:
        """The image store (golden images, OS volumes), under INGOT_HOME/images unless configured."""
        return ImageStore(self.settings.images.root or self.settings.home / "images",
                          max_virtual_size=self.settings.images.max_virtual_size)

    @cached_property
    def bundles_dir(self) -> Path:
        """Artifact bundle zips (INGOT_HOME/bundles/<id>.zip)."""
        path = self.settings.home / "bundles"
        path.mkdir(mode=0o750, parents=True, exist_ok=True)
        return path

    @cached_property
    def nbd(self) -> NbdExports:
        """OS volumes exported over NBD by this appliance (none survive a restart)."""
        images = self.settings.images
        return NbdExports(address=images.nbd_address,
                          ports=range(images.nbd_port_first, min(images.nbd_port_first + images.nbd_port_count, 65536)),
                          log_dir=self.images.logs_dir)

    @cached_property
    def secrets(self) -> SecretBox:
        """Encrypts credentials at rest (key under INGOT_HOME)."""
        return SecretBox.for_home(self.settings.home)

    @cached_property
    def build_slots(self) -> threading.BoundedSemaphore:
        """Deploys building their image in this process at once (``provisioning.parallel_builds``).
        A thread semaphore, not asyncio's: a task runner may be restarted on another event loop."""
        return threading.BoundedSemaphore(self.settings.provisioning.parallel_builds)

    @cached_property
    def bmcs(self) -> BmcPool:
        """The process-wide BMC driver pool; built on first use so processes without BMC work
        (the CLI, most tests) start no worker threads."""
        from appliance.drivers.pool import BmcPool  # here, not at the top: keeps pyghmi out of light imports

        return BmcPool(self.settings.bmc)
