"""The task handlers that talk to BMCs: add, refresh, power, boot device, remove, fleet power sync
and discovery.

Each handler reads what it needs from the database in a worker thread, talks to the BMC through
the process-wide driver pool (which owns retries, pacing and the circuit breaker) and writes what
it observed back in one short transaction. A BMC failure fails the task with the driver's error
(bad credentials, unreachable, did not reach the state ...) and marks the server hardware, so the
list page shows which servers need attention without opening tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import update

from appliance.db.session import unit_of_work
from appliance.drivers.base import BmcDriver
from appliance.drivers.types import BmcTarget, BootDevice, BootMode, BootSetting, Inventory, PowerAction, PowerState
from appliance.errors import BmcError, BmcUnsupported, NotFound
from appliance.models import ServerHardware
from appliance.repositories.alerts import AlertRepository
from appliance.repositories.server_hardware import ServerHardwareRepository
from appliance.services.alerts import AlertService
from appliance.services.provisioning import ProvisionService, fire_event
from appliance.services.server_hardware import (
    ADDING,
    CATEGORY,
    ERROR,
    MONITORED,
    SERVICEABLE,
    TASK_ADD,
    TASK_BOOT,
    TASK_DISCOVER,
    TASK_POWER,
    TASK_POWER_SYNC,
    TASK_REFRESH,
    TASK_REMOVE,
    ServerHardwareService,
    server_uri,
)
from appliance.states import Event, ProvisionState
from appliance.tasks.handlers import Outcome, TaskContext, TaskHandler

log = logging.getLogger(__name__)

ALERT_UNREACHABLE = "Ingot.ServerHardware.BmcUnreachable"
ALERT_DRIFT = "Ingot.ServerHardware.PowerStateDrift"
# A sweep writes its percent at most this often: 500 progress rows would cost more than the sweep.
PROGRESS_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Managed:
    """A server as a handler needs it: identity, how to reach its BMC, and what Ingot expects."""

    id: str
    name: str
    target: BmcTarget
    expected_power: str | None

    @property
    def uri(self) -> str:
        return server_uri(self.id)


class ServerHardwareTask(TaskHandler):
    """Shared plumbing: load the server, get its driver, record observations and failures."""

    def _load(self, server_id: str, states: tuple[str, ...] | None = None) -> Managed:
        with unit_of_work(self.app.session_factory) as db:
            service = ServerHardwareService(db, self.app.secrets, self.app.clock)
            server = service.get(server_id)
            if states is not None and server.state not in states:
                raise NotFound(kind="server hardware in a serviceable state", ident=server.name)
            return Managed(server.id, server.name, service.target(server), server.expected_power)

    def _provision_state(self, server_id: str) -> tuple[ProvisionState, datetime | None]:
        """The server's provision state and when it entered it (a worker thread's call)."""
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerHardware, server_id)
            if row is None:
                raise NotFound(kind="server hardware", ident=server_id)
            return ProvisionState(row.provision_state), row.provision_updated

    def _fire(self, server_id: str, event: Event, expect: ProvisionState | None = None,
              error: str | None = None) -> ProvisionState:
        """``event`` in a transaction of its own (provisioning.fire_event; a worker thread's call)."""
        return fire_event(self.app.session_factory, self.app.clock, server_id, event, expect=expect, error=error)

    async def managed(self, ctx: TaskContext, states: tuple[str, ...] | None = SERVICEABLE) -> Managed:
        server = await ctx.run_sync(self._load, ctx.args["id"], states)
        ctx.set_result(server.uri, server.name, CATEGORY)
        return server

    def driver(self, server: Managed) -> BmcDriver:
        return self.app.bmcs.driver(server.target)

    async def record(self, server_id: str, **fields: Any) -> None:
        """Write observations (model attribute names) and mark the BMC as just heard from."""

        def write() -> None:
            with unit_of_work(self.app.session_factory) as db:
                row = ServerHardwareRepository(db).get(server_id)
                if row is None:
                    return
                for key, value in fields.items():
                    setattr(row, key, value)
                row.last_contact = row.modified = self.app.clock()
                if row.state == ERROR:
                    row.state, row.state_reason = MONITORED, None
                AlertService(db, self.app.clock).clear_condition(ALERT_UNREACHABLE, server_uri(server_id))

        await asyncio.to_thread(write)

    async def failed(self, server: Managed, error: BmcError) -> None:
        """The BMC let us down: show it on the server and raise an alert, then fail the task."""

        def write() -> None:
            with unit_of_work(self.app.session_factory) as db:
                row = ServerHardwareRepository(db).get(server.id)
                if row is not None:
                    _mark_unreachable(row, error, self.app.clock())
                _alert_unreachable(AlertService(db, self.app.clock), server, error)

        await asyncio.to_thread(write)


def _mark_unreachable(row: ServerHardware, error: BmcError, now: Any) -> None:
    row.status = "Critical"
    row.state_reason = error.message
    if row.state == MONITORED:
        row.state = ERROR
    row.power_state = PowerState.UNKNOWN
    row.modified = now


def _alert_unreachable(alerts: AlertService, server: Managed, error: BmcError) -> None:
    alerts.raise_alert(
        ALERT_UNREACHABLE, "Critical", f"{server.name}: {error.message}",
        corrective_action=" ".join(error.recommended_actions),
        resource_uri=server.uri, resource_name=server.name, resource_category=CATEGORY,
    )


def _inventory_fields(inventory: Inventory) -> dict[str, Any]:
    return {
        "manufacturer": inventory.manufacturer,
        "model": inventory.model,
        "serial_number": inventory.serial_number,
        "part_number": inventory.part_number,
        "uuid": inventory.uuid,
        "rom_version": inventory.bios_version,
        "bmc_firmware": inventory.bmc_firmware,
        "mac_addresses": list(inventory.mac_addresses),
        "sensors": [
            {"name": s.name, "kind": s.kind, "value": s.value, "units": s.units, "health": s.health}
            for s in inventory.sensors
        ],
    }


def _boot_fields(setting: BootSetting) -> dict[str, Any]:
    return {"device": setting.device.value, "persistent": setting.persistent,
            "mode": setting.mode.value if setting.mode else None}


async def read_everything(driver: BmcDriver, ctx: TaskContext) -> dict[str, Any]:
    """Power, inventory and boot device: what add and refresh both record."""
    await ctx.progress(10, "Reading the power state.")
    power = await driver.power_state()
    await ctx.progress(30, "Reading the inventory (FRU, GUID, MACs, sensors).")
    fields = _inventory_fields(await driver.inventory())
    await ctx.progress(70, "Reading the boot device.")
    try:
        fields["boot_device"] = _boot_fields(await driver.boot_device())
    except BmcUnsupported:
        fields["boot_device"] = None
    fields["power_state"] = power.value
    fields["status"] = "OK"
    return fields


class AddTask(ServerHardwareTask):
    """Log in to the new server's BMC and read it. A server whose BMC cannot be read is not kept:
    staff fix the address or credentials and add it again (as OneView does)."""

    kind: ClassVar[str] = TASK_ADD

    async def run(self, ctx: TaskContext) -> Outcome:
        server = await self.managed(ctx, states=(ADDING,))
        await ctx.progress(5, f"Contacting the BMC at {server.target.address}.")
        driver = self.driver(server)
        try:
            fields = await read_everything(driver, ctx)
        except BmcError:
            await ctx.run_sync(self._discard, server.id, ctx.args.get("previous"))
            await self.app.bmcs.forget(server.target.key)
            raise
        await self.record(server.id, state=MONITORED, state_reason=None,
                          expected_power=fields["power_state"], **fields)
        await ctx.run_sync(self._managed, server.id)
        await ctx.progress(100, f"Added {server.name}.")
        return Outcome(status=f"Added {server.name}.")

    def _managed(self, server_id: str) -> None:
        """The BMC answered with the credentials given: a new server is manageable (a forced re-add
        of a known one keeps its provision state)."""
        with unit_of_work(self.app.session_factory) as db:
            row = ServerHardwareRepository(db).get(server_id)
            if row is not None and row.provision_state == ProvisionState.ENROLL:
                ProvisionService(db, self.app.clock).fire(server_id, Event.MANAGE, expect=ProvisionState.ENROLL)

    def _discard(self, server_id: str, previous: dict[str, Any] | None) -> None:
        """Undo the add: a new server is dropped, a forced re-add gets back what it had."""
        with unit_of_work(self.app.session_factory) as db:
            row = ServerHardwareRepository(db).get(server_id)
            if row is None or row.state != ADDING:
                return
            if previous is None:
                ServerHardwareRepository(db).delete(row)
                return
            for key, value in previous.items():
                setattr(row, key, value)
            row.modified = self.app.clock()


class RefreshTask(ServerHardwareTask):
    """Re-read everything through a fresh session. Asked for by a person, so it also ends a
    circuit-breaker pause: the operator says the BMC is worth trying now."""

    kind: ClassVar[str] = TASK_REFRESH

    async def run(self, ctx: TaskContext) -> Outcome:
        server = await self.managed(ctx)
        await self.app.bmcs.forget(server.target.key)
        try:
            fields = await read_everything(self.driver(server), ctx)
        except BmcError as exc:
            await self.failed(server, exc)
            raise
        await self.record(server.id, **fields)
        await ctx.progress(100, f"Refreshed {server.name}.")
        return Outcome(status=f"Refreshed {server.name}.")


class PowerTask(ServerHardwareTask):
    kind: ClassVar[str] = TASK_POWER

    async def run(self, ctx: TaskContext) -> Outcome:
        server = await self.managed(ctx)
        action = PowerAction(ctx.args["action"])
        await ctx.progress(10, f"Asking the BMC to {action.value} {server.name}.")
        try:
            reached = await self.driver(server).set_power(action, verify=True)
        except BmcError as exc:
            await self.failed(server, exc)
            raise
        await self.record(server.id, power_state=reached.value, expected_power=reached.value, status="OK")
        await ctx.progress(100, f"{server.name} is {reached.value}.")
        return Outcome(status=f"{server.name}: {action.value} done; power is {reached.value}.")


class BootDeviceTask(ServerHardwareTask):
    kind: ClassVar[str] = TASK_BOOT

    async def run(self, ctx: TaskContext) -> Outcome:
        server = await self.managed(ctx)
        mode = ctx.args.get("mode")
        wanted = BootSetting(BootDevice(ctx.args["device"]), bool(ctx.args.get("persistent")),
                             BootMode(mode) if mode else None)
        when = "every boot" if wanted.persistent else "the next boot"
        await ctx.progress(10, f"Setting {server.name} to boot from {wanted.device.value} for {when}.")
        try:
            now = await self.driver(server).set_boot_device(wanted, verify=True)
        except BmcError as exc:
            if not isinstance(exc, BmcUnsupported):
                await self.failed(server, exc)
            raise
        await self.record(server.id, boot_device=_boot_fields(now))
        await ctx.progress(100, f"{server.name} boots from {now.device.value} for {when}.")
        return Outcome(status=f"{server.name} boots from {now.device.value} for {when}.")


class RemoveTask(ServerHardwareTask):
    """Forget the server. Nothing is asked of its BMC, so a dead BMC never blocks removal."""

    kind: ClassVar[str] = TASK_REMOVE

    async def run(self, ctx: TaskContext) -> Outcome:
        server = await self.managed(ctx, states=None)
        await self.app.bmcs.forget(server.target.key)

        def delete() -> None:
            with unit_of_work(self.app.session_factory) as db:
                row = ServerHardwareRepository(db).get(server.id)
                if row is not None:
                    ServerHardwareRepository(db).delete(row)
                alerts = AlertService(db, self.app.clock)
                for alert_type in (ALERT_UNREACHABLE, ALERT_DRIFT):
                    alerts.clear_condition(alert_type, server.uri, by=ctx.owner)

        await ctx.run_sync(delete)
        await ctx.progress(100, f"Removed {server.name}.")
        return Outcome(status=f"Removed {server.name}.")


@dataclass(frozen=True)
class Reading:
    server: Managed
    power: PowerState | None
    error: BmcError | None
    seconds: float


class PowerSyncTask(TaskHandler):
    """Read every server's power state with bounded parallelism and reconcile: record what each
    BMC says, alert on BMCs that do not answer and on power that differs from what Ingot expects.
    Dead BMCs cost at most the driver timeout each, in parallel with the live ones; BMCs whose
    circuit is open fail at once."""

    kind: ClassVar[str] = TASK_POWER_SYNC
    resumable: ClassVar[bool] = True  # a sweep is idempotent: starting again is always right

    async def run(self, ctx: TaskContext) -> Outcome:
        servers = await ctx.run_sync(self._load_all)
        total = len(servers)
        await ctx.progress(1, f"Reading the power state of {total} servers.")
        started = time.monotonic()
        limit = asyncio.Semaphore(self.app.settings.bmc.sync_parallelism)
        done = 0
        last_report = 0.0

        async def read(server: Managed) -> Reading:
            nonlocal done, last_report
            async with limit:
                began = time.monotonic()
                try:
                    reading = Reading(server, await self.app.bmcs.driver(server.target).power_state(), None,
                                      time.monotonic() - began)
                except BmcError as exc:
                    reading = Reading(server, None, exc, time.monotonic() - began)
            done += 1
            if time.monotonic() - last_report >= PROGRESS_INTERVAL_S:
                last_report = time.monotonic()
                await ctx.progress(1 + 94 * done // max(total, 1), f"Read {done} of {total} servers.")
            return reading

        readings = await asyncio.gather(*(read(s) for s in servers))
        elapsed = time.monotonic() - started
        drift, unreachable = await ctx.run_sync(self._reconcile, readings)
        ctx.set_data({
            "total": total,
            "reachable": total - len(unreachable),
            "unreachable": unreachable,
            "drift": drift,
            "seconds": round(elapsed, 3),
        })
        summary = (f"Read {total - len(unreachable)} of {total} servers in {elapsed:.1f} s; "
                   f"{len(unreachable)} BMCs did not answer, {len(drift)} servers drifted.")
        await ctx.progress(100, summary)
        return Outcome(status=summary, warning=bool(unreachable or drift))

    def _load_all(self) -> list[Managed]:
        with unit_of_work(self.app.session_factory) as db:
            service = ServerHardwareService(db, self.app.secrets, self.app.clock)
            return [Managed(s.id, s.name, service.target(s), s.expected_power)
                    for s in ServerHardwareRepository(db).all(states=SERVICEABLE)]

    def _reconcile(self, readings: list[Reading]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        drift: list[dict[str, Any]] = []
        unreachable: list[dict[str, Any]] = []
        now = self.app.clock()
        with unit_of_work(self.app.session_factory) as db:
            # A sweep touches every server: load rows and open alerts in two queries, not 3 per server.
            rows = {row.id: row for row in ServerHardwareRepository(db).all()}
            open_alerts = AlertRepository(db).active_keys((ALERT_UNREACHABLE, ALERT_DRIFT))
            alerts = AlertService(db, self.app.clock)

            heard: list[str] = []  # last_contact for these is set below in one statement

            def clear(alert_type: str, uri: str) -> None:
                if (alert_type, uri) in open_alerts:
                    alerts.clear_condition(alert_type, uri)

            for reading in readings:
                server = reading.server
                row = rows.get(server.id)
                if row is None:
                    continue  # removed while we were reading
                if reading.error is not None:
                    _mark_unreachable(row, reading.error, now)
                    _alert_unreachable(alerts, server, reading.error)
                    unreachable.append({"name": server.name, "uri": server.uri,
                                        "errorCode": reading.error.error_code, "message": reading.error.message})
                    continue
                assert reading.power is not None
                if row.power_state != reading.power.value:
                    row.power_state = reading.power.value
                heard.append(row.id)
                if row.state == ERROR:
                    row.state, row.state_reason, row.status = MONITORED, None, "OK"
                clear(ALERT_UNREACHABLE, server.uri)
                expected = row.expected_power
                if expected is not None and expected != reading.power.value:
                    row.status = "Warning"
                    drift.append({"name": server.name, "uri": server.uri, "expected": expected,
                                  "actual": reading.power.value})
                    alerts.raise_alert(
                        ALERT_DRIFT, "Warning",
                        f"{server.name} is {reading.power.value} but Ingot last left it {expected}.",
                        corrective_action="Find out who changed the power outside Ingot; power the server "
                                          f"{expected.lower()} again or refresh it to accept the new state.",
                        resource_uri=server.uri, resource_name=server.name, resource_category=CATEGORY,
                    )
                else:
                    if row.status != "OK":
                        row.status = "OK"
                    clear(ALERT_DRIFT, server.uri)
            if heard:
                db.execute(update(ServerHardware).where(ServerHardware.id.in_(heard))
                           .values(last_contact=now, modified=now))
        return drift, unreachable


class DiscoverTask(TaskHandler):
    """Scan a management subnet for BMCs (RMCP presence ping / IPMI, Redfish service root) and
    list what answered, marking those already enrolled. Enrolling is a separate add per BMC."""

    kind: ClassVar[str] = TASK_DISCOVER

    async def run(self, ctx: TaskContext) -> Outcome:
        from appliance.discovery.scanner import scan  # here: only discovery tasks need the scanner

        settings = self.app.settings.bmc
        cidr = ctx.args["cidr"]
        await ctx.progress(1, f"Scanning {cidr}.")
        probed = [0, 1]  # done, total: written by the scanner's callback, read by the reporter

        def on_progress(done: int, total: int) -> None:
            probed[:] = [done, total]

        async def report() -> None:
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL_S)
                done, total = probed
                await ctx.progress(1 + 94 * done // max(total, 1), f"Probed {done} of {total} addresses.")

        reporter = asyncio.create_task(report())
        try:
            found = await scan(
                cidr, ipmi_ports=tuple(ctx.args.get("ipmiPorts") or ()),
                redfish_ports=tuple(ctx.args.get("redfishPorts") or ()),
                timeout_s=settings.discovery_timeout_s, max_addresses=settings.discovery_max_addresses,
                on_progress=on_progress,
            )
        finally:
            reporter.cancel()
        enrolled = await ctx.run_sync(self._enrolled)
        results = []
        for item in found:
            uri = enrolled.get((item.address, item.port))
            results.append({"address": item.address, "port": item.port, "protocol": item.protocol,
                            "enrolled": uri is not None, "serverHardwareUri": uri, "detail": dict(item.detail)})
        ctx.set_data({"cidr": cidr, "found": results})
        new = sum(1 for r in results if not r["enrolled"])
        summary = f"{len(results)} BMCs answered in {cidr}; {new} not yet enrolled."
        await ctx.progress(100, summary)
        return Outcome(status=summary)

    def _enrolled(self) -> dict[tuple[str, int], str]:
        with unit_of_work(self.app.session_factory) as db:
            return {(s.address, s.port): server_uri(s.id) for s in ServerHardwareRepository(db).all()}
