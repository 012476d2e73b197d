"""Driving a server's deploy agent from a task: boot it into the agent ramdisk, wait for the agent
to look itself up, run commands on it and follow their progress, all while the server's provision
state stays in the wait state the work is for.

The provision state is the source of truth: an operator's ``abort`` or the periodic TTL check
moves the server out of its wait state, and every poll here looks at it, so the task ends within
a poll with the server's ``last_error`` as its error. The wait state's time-to-live is checked here
too (whichever of this and the periodic check comes first fires the timeout).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.drivers.base import BmcDriver
from appliance.drivers.types import BootDevice, BootSetting, PowerAction, PowerState
from appliance.errors import ApplianceError, NotFound
from appliance.models import AgentSession, ServerHardware
from appliance.services.agents import AgentService
from appliance.services.phase_retry import with_retries
from appliance.services.provisioning import fire_event, time_out
from appliance.states import Event, ProvisionState
from appliance.tasks.handlers import PhaseReporter, TaskContext

POLL_S = 0.5
REPORT_EVERY = 10  # polls between "still waiting" lines


class AgentWorkFailed(ApplianceError):
    msg_fmt = "{name}: {reason}"
    error_code = "AGENT_WORK_FAILED"
    http_status = 409
    default_actions = ("Read the server's last error and its serial console, fix the cause, then try again.",)


class AgentWork:
    def __init__(self, app: AppContext, driver: BmcDriver, server_id: str, name: str,
                 wait_state: ProvisionState, ttl_s: int) -> None:
        self.app = app
        self.driver = driver
        self.server_id = server_id
        self.name = name
        self.wait_state = wait_state
        self.ttl_s = ttl_s

    async def boot_agent(self, phase: PhaseReporter) -> datetime:
        """One-time network boot, then power on (or cycle), tried again while the BMC fails transiently
        (:mod:`appliance.services.phase_retry`); returns when it was asked."""
        return await with_retries(phase, "Booting the server over the network", lambda: self._boot(phase),
                                  self.app.settings.provisioning)

    async def _boot(self, phase: PhaseReporter) -> datetime:
        await phase.progress(5, "Setting a one-time network boot.")
        await self.driver.set_boot_device(BootSetting(BootDevice.PXE, persistent=False))
        power = await self.driver.power_state()
        await phase.progress(15, "Power cycling the server." if power == PowerState.ON else "Powering the server on.")
        since = self.app.clock()
        await self.driver.set_power(PowerAction.CYCLE if power == PowerState.ON else PowerAction.ON)
        return since

    async def boot_and_wait(self, ctx: TaskContext, phase: PhaseReporter, checkpoint: dict[str, Any],
                            working: ProvisionState) -> datetime:
        """Boot the agent from ``working`` (then ``wait`` → the wait state; when it was asked goes
        into the checkpoint as ``since``), or, in a resumed task, take the wait up again; then wait
        for the agent. Returns when the server entered the wait state (its TTL counts from there).

        :raises AgentWorkFailed: the server is in neither state (or resumed without ``since``).
        """
        state, _, entered = await asyncio.to_thread(self._snapshot)
        if state == working:
            since = await self.boot_agent(phase)
            checkpoint["since"] = since.isoformat()
            await ctx.save_checkpoint(checkpoint)
            await asyncio.to_thread(fire_event, self.app.session_factory, self.app.clock, self.server_id, Event.WAIT,
                                    expect=working)
            state, _, entered = await asyncio.to_thread(self._snapshot)
        elif state != self.wait_state or "since" not in checkpoint:
            raise AgentWorkFailed(name=self.name, reason=f"the server is {state}, not {working}")
        assert entered is not None
        await self.wait_for_agent(phase, datetime.fromisoformat(checkpoint["since"]), entered)
        return entered

    async def wait_for_agent(self, phase: PhaseReporter, since: datetime, entered: datetime) -> None:
        """Until an agent started after ``since`` has looked itself up for this server."""
        polls = 0
        while True:
            await self.guard(entered)
            started = await asyncio.to_thread(self._agent_started)
            if started is not None and started >= since:
                await phase.progress(100, "The deploy agent is up.")
                return
            if polls % REPORT_EVERY == 0:
                waited = int((self.app.clock() - since).total_seconds())
                await phase.progress(20 + min(75, waited // 2), f"Waiting for the deploy agent to boot ({waited} s).")
            polls += 1
            await asyncio.sleep(POLL_S)

    async def run_command(self, phase: PhaseReporter, name: str, params: dict[str, Any],
                          entered: datetime) -> dict[str, Any]:
        """Queue ``name`` for the agent and follow it to its end; its percent is the phase's.

        :raises AgentWorkFailed: the agent reported a failure (its message), or the wait ended.
        """
        return await self.follow(phase, name, await self.queue(name, params), entered)

    async def queue(self, name: str, params: dict[str, Any]) -> str:
        """Queue ``name`` for the agent (handed out by its next heartbeat); returns the command's id."""
        return await asyncio.to_thread(self._queue, name, params)

    async def follow(self, phase: PhaseReporter, name: str, command_id: str, entered: datetime) -> dict[str, Any]:
        """Follow a queued command to its end (see :meth:`run_command`)."""
        shown: tuple[int, str | None] = (-1, None)
        while True:
            await self.guard(entered, command_id)
            state, percent, message, result, error = await asyncio.to_thread(self._command, command_id)
            if state == "succeeded":
                await phase.progress(100, message or f"{name} done.")
                return result or {}
            if state == "failed":
                raise AgentWorkFailed(name=self.name, reason=f"the agent's {name} failed: {error}")
            if (percent, message) != shown:
                shown = (percent, message)
                await phase.progress(percent, message or f"{name}: {state}.")
            await asyncio.sleep(POLL_S)

    async def guard(self, entered: datetime, command_id: str | None = None) -> None:
        """Raise when the server left the wait state (abort, timeout); fire the timeout when due."""
        state, last_error, _ = await asyncio.to_thread(self._snapshot)
        if state != self.wait_state:
            if command_id is not None:
                await asyncio.to_thread(self._cancel, f"The server left {self.wait_state} for {state}.")
            raise AgentWorkFailed(name=self.name, reason=last_error or f"the server left {self.wait_state} for {state}")
        if (self.app.clock() - entered).total_seconds() > self.ttl_s:
            await asyncio.to_thread(self._timeout)

    # --- database steps (worker threads) --------------------------------------------------------
    def _snapshot(self) -> tuple[ProvisionState, str | None, datetime | None]:
        """The server's provision state, last error and when it entered the state."""
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerHardware, self.server_id)
            if row is None:
                raise NotFound(kind="server hardware", ident=self.server_id)
            return ProvisionState(row.provision_state), row.last_error, row.provision_updated

    def _agent_started(self) -> datetime | None:
        with unit_of_work(self.app.session_factory) as db:
            session = db.get(AgentSession, self.server_id)
            return session.started if session is not None else None

    def _queue(self, name: str, params: dict[str, Any]) -> str:
        with unit_of_work(self.app.session_factory) as db:
            return AgentService(db, self.app.clock).queue(self.server_id, name, params).id

    def _command(self, command_id: str) -> tuple[str, int, str | None, dict[str, Any] | None, str | None]:
        with unit_of_work(self.app.session_factory) as db:
            command = AgentService(db, self.app.clock).command(command_id)
            return command.state, command.percent, command.message, command.result, command.error

    def _cancel(self, why: str) -> None:
        with unit_of_work(self.app.session_factory) as db:
            AgentService(db, self.app.clock).cancel_all(self.server_id, why)

    def _timeout(self) -> None:
        time_out(self.app.session_factory, self.app.clock, self.server_id, self.wait_state, self.ttl_s)
