"""Inspection: boot a server into the deploy agent, let the agent report the hardware, and put the
server in the pool (``available``).

The API fires ``inspect`` (manageable or inspect-failed → inspecting) in the same transaction that
queues this task, so a refused event is a synchronous 409. The task then:

1. sets a one-time network boot and powers the server on (or cycles it when it is on);
2. fires ``wait`` (→ inspect-wait) and watches the database until the agent's inventory arrives
   (``AgentService.record_inventory`` stamps ``inspected``), while the wait state's TTL and an
   operator's ``abort`` stand guard: either moves the server out of inspect-wait, and the task
   fails with the server's ``last_error``;
3. fires ``resume``, fills the OneView fields the inventory answers (memory, processors), powers
   the server off through its BMC and fires ``done`` (→ available).

The task is resumable: all it needs is in the database and its checkpoint, so an appliance that
restarts (or a peer that takes the task over) picks up the wait where it was. A failure fires
``fail`` with the error, which keeps it as the server's ``last_error`` and raises an alert.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import Any, ClassVar

from appliance.db.session import unit_of_work
from appliance.drivers.types import BootDevice, BootSetting, PowerAction, PowerState
from appliance.errors import ApplianceError
from appliance.models import ServerHardware
from appliance.services.agents import AgentService
from appliance.services.provisioning import ProvisionService, time_out, wait_ttls
from appliance.services.server_hardware import TASK_INSPECT
from appliance.services.server_hardware_tasks import ServerHardwareTask
from appliance.states import Event, ProvisionState
from appliance.tasks.handlers import Outcome, TaskContext

POLL_S = 1.0
REPORT_EVERY = 5  # polls between progress lines
PS = ProvisionState


class InspectionFailed(ApplianceError):
    msg_fmt = "Inspection of {name} failed: {reason}"
    error_code = "INSPECTION_FAILED"
    http_status = 409
    default_actions = ("Read the server's last error and its serial console, fix the cause, then inspect again.",)


class InspectTask(ServerHardwareTask):
    kind: ClassVar[str] = TASK_INSPECT
    resumable: ClassVar[bool] = True  # everything it waits for is in the database

    async def run(self, ctx: TaskContext) -> Outcome:
        server = await self.managed(ctx, states=None)
        try:
            return await self._inspect(ctx, server.id, server.name)
        except ApplianceError as error:
            await ctx.run_sync(self._fail, server.id, error.message)
            raise

    async def _inspect(self, ctx: TaskContext, server_id: str, name: str) -> Outcome:
        state, _ = await ctx.run_sync(self._state, server_id)
        booted, reported = ctx.checkpoint.get("booted"), ctx.checkpoint.get("reported")
        if state == PS.INSPECTING and not booted:
            await self._boot_agent(ctx)
            await ctx.run_sync(self._fire, server_id, Event.WAIT, PS.INSPECTING)
        elif state == PS.INSPECTING and not reported:  # resumed: the restart came between boot and wait
            await ctx.run_sync(self._fire, server_id, Event.WAIT, PS.INSPECTING)
        elif state not in (PS.INSPECTING, PS.INSPECT_WAIT):
            raise InspectionFailed(name=name, reason=f"the server is in provision state {state}, not inspecting")
        if not reported:
            await self._wait_for_inventory(ctx, server_id, name, datetime.fromisoformat(ctx.checkpoint["since"]))
        await ctx.progress(85, "The agent reported the inventory; powering the server off.")
        summary = await ctx.run_sync(self._summary, server_id)
        if summary:
            await self.record(server_id, **summary)
        driver = self.driver(await self.managed(ctx, states=None))
        await driver.set_power(PowerAction.OFF)
        await self.record(server_id, power_state=PowerState.OFF.value, expected_power=PowerState.OFF.value)
        await ctx.run_sync(self._fire, server_id, Event.DONE, PS.INSPECTING)
        await ctx.progress(100, f"Inspected {name}: available.")
        return Outcome(status=f"Inspected {name}.")

    async def _boot_agent(self, ctx: TaskContext) -> None:
        """One-time network boot, then power on (or cycle): the agent ramdisk comes up."""
        driver = self.driver(await self.managed(ctx, states=None))
        await ctx.progress(5, "Setting a one-time network boot.")
        await driver.set_boot_device(BootSetting(BootDevice.PXE, persistent=False))
        power = await driver.power_state()
        await ctx.progress(10, "Power cycling the server." if power == PowerState.ON else "Powering the server on.")
        await driver.set_power(PowerAction.CYCLE if power == PowerState.ON else PowerAction.ON)
        await ctx.save_checkpoint({"booted": True, "since": self.app.clock().isoformat()})

    async def _wait_for_inventory(self, ctx: TaskContext, server_id: str, name: str, since: datetime) -> None:
        ttl = wait_ttls(self.app.settings.provisioning)[PS.INSPECT_WAIT]
        for poll in itertools.count():
            state, inspected = await ctx.run_sync(self._state, server_id)
            if state != PS.INSPECT_WAIT:
                error = await ctx.run_sync(self._last_error, server_id)
                raise InspectionFailed(name=name, reason=error or f"the server left inspect-wait for {state}")
            if inspected is not None and inspected >= since:
                await ctx.run_sync(self._fire, server_id, Event.RESUME, PS.INSPECT_WAIT)
                await ctx.save_checkpoint({**ctx.checkpoint, "reported": True})
                return
            waited = (self.app.clock() - since).total_seconds()
            if waited > ttl:  # the periodic check fires the timeout too; whichever comes first
                await ctx.run_sync(self._timeout, server_id, ttl)
                continue
            if poll % REPORT_EVERY == 0:
                await ctx.progress(15 + int(65 * min(1.0, waited / ttl)),
                                   f"Waiting for the agent on {name} to report ({int(waited)} s).")
            await asyncio.sleep(POLL_S)

    # --- database steps (worker threads) --------------------------------------------------------
    def _state(self, server_id: str) -> tuple[PS, datetime | None]:
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerHardware, server_id)
            if row is None:
                raise InspectionFailed(name=server_id, reason="the server hardware was removed")
            return PS(row.provision_state), row.inspected

    def _last_error(self, server_id: str) -> str | None:
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerHardware, server_id)
            return row.last_error if row is not None else None

    def _timeout(self, server_id: str, ttl: int) -> None:
        time_out(self.app.session_factory, self.app.clock, server_id, PS.INSPECT_WAIT, ttl,
                 ": the agent never reported")

    def _fail(self, server_id: str, message: str) -> None:
        """Fire ``fail`` if the server is still in the inspection's working states."""
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerHardware, server_id)
            if row is not None and row.provision_state in (PS.INSPECTING, PS.INSPECT_WAIT):
                ProvisionService(db, self.app.clock).fire(server_id, Event.FAIL, error=message)
            AgentService(db, self.app.clock).cancel_all(server_id, f"Inspection failed: {message}")

    def _summary(self, server_id: str) -> dict[str, Any]:
        """The OneView server-hardware fields the agent's inventory answers."""
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerHardware, server_id)
            inventory = (row.hardware_inventory if row is not None else None) or {}
        macs = [n["mac"].upper() for n in inventory.get("nics", []) if n.get("mac")]
        fields: dict[str, Any] = {}
        if macs and row is not None and not row.mac_addresses:
            fields["mac_addresses"] = macs
        return fields
