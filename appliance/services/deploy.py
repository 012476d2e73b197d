"""Applying and deleting server profiles: the deploy itself (issue 8).

Apply (``server-profile-apply``; the API already fired ``deploy`` or ``redeploy``, so the server is
``deploying``) runs these phases, each a child task with its own progress:

1. **Create the OS volume**: a linked clone of the deployment plan's golden image. It becomes the
   profile's volume at once and the previous one is deleted (the server's disk is about to be
   overwritten): a profile has one volume at any time, so nothing is ever orphaned.
2. **Personalize**: the build plan's scripts with the profile's attribute values (guestfish).
3. **Export the image**: flattened to raw, with its SHA-256.
4. **Boot the deploy agent**: one-time network boot, power on; ``wait`` (→ deploy-wait) until the
   agent has looked itself up.
5. **Write the image**: the agent streams the export from the boot listener
   (``/agent/v1/nodes/{id}/image``) onto the disk its root-device hints choose, resuming after a
   dropped connection and checking the SHA-256 as it writes.
6. **Boot the operating system**: ``resume`` (→ deploying), boot from disk from now on, power
   cycle, ``done`` (→ deployed).

Phases 1-3 are the heavy part (disk copies, a guestfish appliance): at most
``provisioning.parallel_builds`` deploys run them at once, the others wait for a slot. Phases 4-6
wait on the server and its agent, and run for every deploy at once.

**Installer deploys.** When the deployment plan names an installer instead of a golden image
(``installer`` on the plan, plans/installer.py), the phases are:

1. **Render the answer file**: the installer media's files must be in place and the answer file
   must render with the profile's values; an installer session opens (appliance/services/installer.py)
   and an earlier image deploy's OS volume goes.
2. **Boot the installer**: one-time network boot, power on; ``wait`` (→ deploy-wait). The server's
   iPXE script is now the installer's, told where its answer file is.
3. **Install the operating system**: the answer file's callbacks are followed: ``start``, then
   ``success`` (``resume`` → deploying) or ``failure`` (the deploy fails). Nothing is heard within
   ``provisioning.deploy_wait_s``: the wait's time-to-live ends it (``timeout`` → deploy-failed).
4. **Boot the operating system**: boot from disk from now on (the installer reboots the server
   itself), ``done`` (→ deployed). The profile has no OS volume.

The task is resumable. Its checkpoint says how far it got: an interrupted build (phases 1-3) is
thrown away with its half-made volume and done again; after the export, a restarted task picks
up the wait for the agent or its command where it was. Any failure fires ``fail`` (the server's
``last_error``, an alert), cancels the agent's commands, powers the server off and marks the
profile ``Error``.

Delete (``server-profile-delete``, task name ``Delete``) waits for a running apply to stop (the
API cancelled it and aborted a waiting server), powers the server off, releases it (releasing →
cleaning: the agent erases the partition tables and file system signatures at both ends of each
disk → available), and deletes the OS volume and the profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from appliance.db.base import new_id
from appliance.db.session import unit_of_work
from appliance.drivers.base import BmcDriver
from appliance.drivers.types import BootDevice, BootSetting, PowerAction, PowerState
from appliance.errors import ApplianceError, NotFound
from appliance.models import DeploymentPlan, GoldenImage, OsVolume, ServerHardware, ServerProfile, Task
from appliance.services.agent_work import POLL_S, AgentWork, AgentWorkFailed
from appliance.services.agents import AgentService
from appliance.services.installer import InstallerFailed, InstallerService
from appliance.services.os_volumes import PROGRESS_INTERVAL_S
from appliance.services.personalize import personalize_volume, resolve_deployment_plan
from appliance.services.phase_retry import with_retries
from appliance.services.provisioning import ProvisionService, wait_ttls
from appliance.services.server_hardware_tasks import ServerHardwareTask
from appliance.services.server_profiles import CATEGORY, TASK_APPLY, TASK_DELETE, plain_values, profile_uri
from appliance.states import Event, ProvisionState
from appliance.tasks.handlers import Outcome, PhaseReporter, TaskContext
from appliance.tasks.states import ACTIVE_STATES
from plans.installer import InstallerSpec

PS = ProvisionState
APPLY_STOP_WAIT_S = 120.0  # how long a delete waits for a cancelled apply to stop
POWER_OFF_TIMEOUT_S = 60.0
BUILD_SLOT_POLL_S = 0.5
INSTALLER_REPORT_EVERY = 20  # polls between "still running" lines


@dataclass(frozen=True)
class Profile:
    """What a deploy needs of a profile, read once."""

    id: str
    name: str
    server_id: str | None
    plan_id: str | None
    values: dict[str, object]
    sealed: dict[str, str]
    volume_id: str | None
    root_device_hints: dict[str, Any]
    task_id: str | None


def agent_image_path(server_id: str) -> str:
    """Where the agent fetches its image, relative to the boot listener (docs/agent-api.md)."""
    return f"/agent/v1/nodes/{server_id}/image"


class ProfileTask(ServerHardwareTask):
    """Shared steps of apply and delete."""

    def _profile(self, profile_id: str) -> Profile:
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerProfile, profile_id)
            if row is None:
                raise NotFound(kind="server profile", ident=profile_id)
            return Profile(row.id, row.name, row.server_hardware_id, row.deployment_plan_id, plain_values(row),
                           dict(row.sealed_attributes), row.os_volume_id, dict(row.root_device_hints), row.task_id)

    def _mark(self, profile_id: str, state: str, status: str = "OK", reason: str | None = None,
              volume_id: str | None = None) -> None:
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerProfile, profile_id)
            if row is None:
                return
            row.state, row.status, row.state_reason, row.modified = state, status, reason, self.app.clock()
            if volume_id is not None:
                row.os_volume_id = volume_id

    def _delete_volume(self, volume_id: str) -> None:
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(OsVolume, volume_id)
            if row is not None:
                db.delete(row)
        self.app.images.delete_volume(volume_id)


class ServerProfileApplyTask(ProfileTask):
    kind: ClassVar[str] = TASK_APPLY
    resumable: ClassVar[bool] = True  # see the module docstring: the checkpoint says where to pick up

    async def run(self, ctx: TaskContext) -> Outcome:
        profile = await ctx.run_sync(self._profile, str(ctx.args["id"]))
        ctx.set_result(profile_uri(profile.id), profile.name, CATEGORY)
        if not ctx.args.get("deploy") or profile.server_id is None or profile.plan_id is None:
            await ctx.run_sync(self._mark, profile.id, "Normal")
            await ctx.progress(100, f"Server profile {profile.name} saved.")
            return Outcome(status=f"Server profile {profile.name} saved.")
        try:
            await self._deploy(ctx, profile, profile.server_id, profile.plan_id)
        except ApplianceError as exc:
            await asyncio.shield(self._fail_deploy(profile, profile.server_id, exc.message))
            raise
        except asyncio.CancelledError:
            user = ctx.cancelled_by()  # None: a shutdown; the next run resumes from the checkpoint
            if user is not None:
                await asyncio.shield(self._fail_deploy(profile, profile.server_id, f"Cancelled by {user}."))
            raise
        return Outcome(status=f"Deployed {profile.name}.")

    async def _fail_deploy(self, profile: Profile, server_id: str, reason: str) -> None:
        """Fail the server's deploy, stop its agent, power it off (a half-written disk must not boot),
        and mark the profile."""
        await asyncio.to_thread(self._fail_state, server_id, reason)
        try:
            managed = await asyncio.to_thread(self._load, server_id, None)
            await asyncio.wait_for(self.driver(managed).set_power(PowerAction.OFF), POWER_OFF_TIMEOUT_S)
            await self.record(server_id, power_state=PowerState.OFF.value, expected_power=PowerState.OFF.value)
        except (ApplianceError, TimeoutError):
            pass  # a dead BMC is another failure; the deploy's own error is the one to show
        await asyncio.to_thread(self._mark_failed, profile.id, reason)

    async def _deploy(self, ctx: TaskContext, profile: Profile, server_id: str, plan_id: str) -> None:
        managed = await ctx.run_sync(self._load, server_id, None)
        driver = self.driver(managed)
        checkpoint = dict(ctx.checkpoint)
        if await ctx.run_sync(self._runs_installer, plan_id):
            await self._install(ctx, profile, server_id, managed.name, driver, checkpoint)
            return
        if "image" not in checkpoint:
            checkpoint = await self._build(ctx, profile, plan_id, checkpoint)
        work = AgentWork(self.app, driver, server_id, managed.name, PS.DEPLOY_WAIT,
                         wait_ttls(self.app.settings.provisioning)[PS.DEPLOY_WAIT])
        if "written" not in checkpoint:
            async with ctx.phase("Boot the deploy agent", 60) as phase:
                entered = await work.boot_and_wait(ctx, phase, checkpoint, PS.DEPLOYING)
            async with ctx.phase("Write the image", 90) as phase:
                image = checkpoint["image"]
                params = {"url": agent_image_path(server_id), "sha256": image["sha256"], "size": image["size"],
                          "rootDeviceHints": profile.root_device_hints}
                checkpoint["written"] = await work.run_command(phase, "write_image", params, entered)
                await ctx.save_checkpoint(checkpoint)
        async with ctx.phase("Boot the operating system", 100) as phase:
            state, _ = await ctx.run_sync(self._provision_state, server_id)
            if state == PS.DEPLOY_WAIT:
                state = await ctx.run_sync(self._fire, server_id, Event.RESUME, PS.DEPLOY_WAIT)
            if state == PS.DEPLOYING:
                written = checkpoint["written"]

                async def boot_disk() -> None:
                    await phase.progress(10, f"Wrote {written.get('bytes')} bytes to {written.get('device')}; "
                                             "booting from the disk from now on.")
                    await driver.set_boot_device(BootSetting(BootDevice.DISK, persistent=True))
                    await phase.progress(40, "Power cycling into the operating system.")
                    await driver.set_power(PowerAction.CYCLE)

                await with_retries(phase, "Booting the operating system", boot_disk, self.app.settings.provisioning)
                await self.record(server_id, power_state=PowerState.ON.value, expected_power=PowerState.ON.value)
                await ctx.run_sync(self._fire, server_id, Event.DONE, PS.DEPLOYING)
            elif state != PS.DEPLOYED:  # resumed after done: nothing left but the profile
                raise AgentWorkFailed(name=managed.name, reason=f"the server is {state}, not deploying")
        await ctx.run_sync(self._mark, profile.id, "Normal", "OK", None, checkpoint["volume"])
        await ctx.progress(100, f"Deployed {profile.name} on {managed.name}.")

    async def _install(self, ctx: TaskContext, profile: Profile, server_id: str, name: str, driver: BmcDriver,
                       checkpoint: dict[str, Any]) -> None:
        """An installer deploy: render the answer file, boot the installer, follow its callbacks, then let
        the server boot what it installed (see "Installer deploys" in the module docstring)."""
        work = AgentWork(self.app, driver, server_id, name, PS.DEPLOY_WAIT,
                         wait_ttls(self.app.settings.provisioning)[PS.DEPLOY_WAIT])
        state, _ = await ctx.run_sync(self._provision_state, server_id)
        if state == PS.DEPLOYING and "installed" not in checkpoint:
            async with ctx.phase("Render the answer file", 10) as phase:
                spec = await ctx.run_sync(self._open_installer, profile)
                await phase.progress(100, f"The {spec.kind} answer file renders with the profile's values; the "
                                          f"installer media {spec.media} is in place.")
            async with ctx.phase("Boot the installer", 20) as phase:
                checkpoint = {"installer": True, "since": (await work.boot_agent(phase)).isoformat()}
                await ctx.save_checkpoint(checkpoint)
                await ctx.run_sync(self._fire, server_id, Event.WAIT, PS.DEPLOYING)
                await phase.progress(100, f"{name} is booting the installer.")
            state = PS.DEPLOY_WAIT
        if state == PS.DEPLOY_WAIT:
            async with ctx.phase("Install the operating system", 90) as phase:
                _, entered = await ctx.run_sync(self._provision_state, server_id)
                assert entered is not None
                await self._follow_installer(phase, work, server_id, name, entered)
            checkpoint["installed"] = True
            await ctx.save_checkpoint(checkpoint)
            state = await ctx.run_sync(self._fire, server_id, Event.RESUME, PS.DEPLOY_WAIT)
        async with ctx.phase("Boot the operating system", 100) as phase:
            if state == PS.DEPLOYING:
                # The installer reboots the server itself when it is done; from now on that is into its disk.
                await with_retries(phase, "Setting the boot device", lambda: driver.set_boot_device(
                    BootSetting(BootDevice.DISK, persistent=True)), self.app.settings.provisioning)
                await phase.progress(50, "The installer reboots the server; it boots from its disk from now on.")
                await ctx.run_sync(self._fire, server_id, Event.DONE, PS.DEPLOYING)
            elif state != PS.DEPLOYED:
                raise InstallerFailed(name=name, reason=f"the server is {state}, not deploying")
            await ctx.run_sync(self._close_installer, server_id)
        await ctx.run_sync(self._mark, profile.id, "Normal", "OK")
        await ctx.progress(100, f"Deployed {profile.name} on {name} with its installer.")

    async def _follow_installer(self, phase: PhaseReporter, work: AgentWork, server_id: str, name: str,
                                entered: datetime) -> None:
        """Until the installer calls back success; its failure callback, an abort or the TTL end it."""
        polls, shown = 0, ""
        while True:
            await work.guard(entered)
            fetched, started, outcome, detail = await asyncio.to_thread(self._installer_state, server_id)
            if outcome == "success":
                await phase.progress(100, "The installer reported success.")
                return
            if outcome == "failure":
                raise InstallerFailed(name=name, reason="the installer reported failure"
                                      + (f": {detail}" if detail else ""))
            stage = "running" if started else "fetched" if fetched else "booting"
            if stage != shown or polls % INSTALLER_REPORT_EVERY == 0:
                shown = stage
                waited = int((self.app.clock() - entered).total_seconds())
                if started:
                    await phase.progress(30 + min(65, waited // 20), f"The installer is running ({waited} s).")
                elif fetched:
                    await phase.progress(20, "The installer fetched its answer file.")
                else:
                    await phase.progress(5 + min(10, waited // 10), f"Waiting for the installer to boot ({waited} s).")
            polls += 1
            await asyncio.sleep(POLL_S)

    @contextlib.asynccontextmanager
    async def _build_slot(self, ctx: TaskContext) -> AsyncIterator[None]:
        """One of the ``provisioning.parallel_builds`` slots for phases 1-3, waited for as long as it takes."""
        slots, waiting = self.app.build_slots, False
        while not slots.acquire(blocking=False):
            if not waiting:
                waiting = True
                await ctx.progress(1, f"Waiting to build the image: {self.app.settings.provisioning.parallel_builds} "
                                      "deploys are building theirs (provisioning.parallel_builds).")
            await asyncio.sleep(BUILD_SLOT_POLL_S)
        try:
            yield
        finally:
            slots.release()

    async def _build(self, ctx: TaskContext, profile: Profile, plan_id: str,
                     checkpoint: dict[str, Any]) -> dict[str, Any]:
        """Phases 1-3, in a build slot; an interrupted earlier build's volume is thrown away first."""
        async with self._build_slot(ctx):
            return await self._build_in_slot(ctx, profile, plan_id, checkpoint)

    async def _build_in_slot(self, ctx: TaskContext, profile: Profile, plan_id: str,
                             checkpoint: dict[str, Any]) -> dict[str, Any]:
        store = self.app.images
        if checkpoint.get("volume"):
            await ctx.run_sync(self._delete_volume, checkpoint["volume"])
        golden_sha, golden_id, golden_size = await ctx.run_sync(self._golden_image, plan_id)
        volume_id = new_id()
        checkpoint = {"volume": volume_id}
        await ctx.save_checkpoint(checkpoint)
        async with ctx.phase("Create the OS volume", 10) as phase:
            await phase.run_with_progress(
                lambda report: store.create_volume(golden_sha, volume_id, on_progress=report), "Cloning",
                PROGRESS_INTERVAL_S)
            await ctx.run_sync(self._adopt_volume, profile, volume_id, golden_id, golden_size, ctx.owner, ctx.task_id)
        async with ctx.phase("Personalize", 40) as phase:
            plan = await ctx.run_sync(self._resolve, plan_id, profile)
            header = (f"Server profile {profile.name}: OS volume {volume_id}, build plan {plan.name}, by {ctx.owner} "
                      f"(task {ctx.task_id})\n")
            if plan.steps:
                await with_retries(phase, f"Build plan {plan.name}", lambda: phase.run_with_progress(
                    lambda report: personalize_volume(store, self.app.settings, volume_id, plan, header, report),
                    f"Running build plan {plan.name}", PROGRESS_INTERVAL_S), self.app.settings.provisioning)
            else:  # "deploy the golden image as is": no appliance to launch for nothing
                await ctx.run_sync(store.write_volume_log, volume_id, header + "The build plan has no steps.\n")
                await phase.progress(100, f"Build plan {plan.name} has no steps: the golden image as is.")
        async with ctx.phase("Export the image", 50) as phase:
            exported = await with_retries(phase, "The export", lambda: phase.run_with_progress(
                lambda report: store.export_volume(volume_id, "raw", report), "Flattening and checksumming",
                PROGRESS_INTERVAL_S), self.app.settings.provisioning)
        checkpoint["image"] = {"sha256": exported.sha256, "size": exported.size}
        await ctx.save_checkpoint(checkpoint)
        return checkpoint

    # --- database steps (worker threads) --------------------------------------------------------
    def _golden_image(self, plan_id: str) -> tuple[str, str, int]:
        with unit_of_work(self.app.session_factory) as db:
            plan = db.get(DeploymentPlan, plan_id)
            image = db.get(GoldenImage, plan.golden_image_id) if plan and plan.golden_image_id else None
            if plan is None or image is None:
                raise AgentWorkFailed(name=plan.name if plan else plan_id,
                                      reason="the deployment plan has no golden image to deploy")
            return image.sha256, image.id, image.virtual_size

    def _adopt_volume(self, profile: Profile, volume_id: str, golden_id: str, size: int, owner: str,
                      task_id: str) -> None:
        """The new volume becomes the profile's; the previous one goes (see the module docstring)."""
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerProfile, profile.id)
            if row is None:
                raise NotFound(kind="server profile", ident=profile.id)
            previous = row.os_volume_id
            db.add(OsVolume(id=volume_id, name=f"{row.name}-{volume_id[:8]}", golden_image_id=golden_id,
                            size=size, full_clone=False,
                            created_by=owner, task_id=task_id))
            db.flush()
            row.os_volume_id = volume_id
        if previous is not None and previous != volume_id:
            self._delete_volume(previous)

    def _resolve(self, plan_id: str, profile: Profile) -> Any:
        with unit_of_work(self.app.session_factory) as db:
            return resolve_deployment_plan(db, self.app.secrets, plan_id, profile.values, profile.sealed)

    def _runs_installer(self, plan_id: str) -> bool:
        with unit_of_work(self.app.session_factory) as db:
            plan = db.get(DeploymentPlan, plan_id)
            return plan is not None and plan.golden_image_id is None and bool(plan.installer)

    def _installer_service(self, db: Session) -> InstallerService:
        return InstallerService(db, self.app.secrets, self.app.settings, self.app.clock)

    def _open_installer(self, profile: Profile) -> InstallerSpec:
        """Check the media and the answer file, open the session, and let go of an earlier image deploy's
        OS volume (the installer overwrites the disk it was written to)."""
        with unit_of_work(self.app.session_factory) as db:
            installer = self._installer_service(db)
            spec = installer.check(profile.id)
            installer.open(str(profile.server_id), profile.id)
            row = db.get(ServerProfile, profile.id)
            previous = row.os_volume_id if row is not None else None
            if row is not None:
                row.os_volume_id = None
        if previous is not None:
            self._delete_volume(previous)
        return spec

    def _installer_state(self, server_id: str) -> tuple[bool, bool, str | None, str | None]:
        """(answer file fetched, start reported, outcome, detail) of the server's installer session."""
        with unit_of_work(self.app.session_factory) as db:
            row = self._installer_service(db).session(server_id)
            if row is None:
                raise InstallerFailed(name=server_id, reason="its installer session is gone")
            return row.fetched is not None, row.started is not None, row.outcome, row.detail

    def _close_installer(self, server_id: str) -> None:
        with unit_of_work(self.app.session_factory) as db:
            self._installer_service(db).close(server_id)

    def _fail_state(self, server_id: str, reason: str) -> None:
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerHardware, server_id)
            if row is not None and row.provision_state in (PS.DEPLOYING, PS.DEPLOY_WAIT):
                ProvisionService(db, self.app.clock).fire(server_id, Event.FAIL, error=reason)
            AgentService(db, self.app.clock).cancel_all(server_id, f"The deploy failed: {reason}")
            self._installer_service(db).close(server_id)

    def _mark_failed(self, profile_id: str, reason: str) -> None:
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerProfile, profile_id)
            if row is not None and row.state != "Deleting":  # a delete cancelled it: the delete goes on
                row.state, row.status, row.state_reason, row.modified = "Error", "Critical", reason, self.app.clock()


class ServerProfileDeleteTask(ProfileTask):
    kind: ClassVar[str] = TASK_DELETE
    resumable: ClassVar[bool] = True  # every step is safe to do again

    async def run(self, ctx: TaskContext) -> Outcome:
        profile = await ctx.run_sync(self._profile, str(ctx.args["id"]))
        ctx.set_result(profile_uri(profile.id), profile.name, CATEGORY)
        await self._wait_for_apply(ctx, profile)
        if profile.server_id is not None:
            await self._release(ctx, profile.server_id)
        if profile.volume_id is not None:
            await ctx.run_sync(self._delete_volume, profile.volume_id)
        await ctx.run_sync(self._forget, profile.id)
        await ctx.progress(100, f"Deleted server profile {profile.name}.")
        return Outcome(status=f"Deleted {profile.name}.")

    async def _wait_for_apply(self, ctx: TaskContext, profile: Profile) -> None:
        deadline = time.monotonic() + APPLY_STOP_WAIT_S
        while True:
            state = await ctx.run_sync(self._task_state, profile, ctx.task_id)
            if state is None or state not in ACTIVE_STATES:
                return
            if time.monotonic() > deadline:
                raise AgentWorkFailed(name=profile.name, reason="its apply task did not stop")
            await ctx.progress(2, "Waiting for the profile's deploy to stop.")
            await asyncio.sleep(0.5)

    def _task_state(self, profile: Profile, own_id: str) -> str | None:
        with unit_of_work(self.app.session_factory) as db:
            tasks = db.query(Task).filter(Task.kind == TASK_APPLY, Task.resource_uri == profile_uri(profile.id),
                                          Task.id != own_id)
            active = [t.state for t in tasks if t.state in ACTIVE_STATES]
            return active[0] if active else None

    async def _release(self, ctx: TaskContext, server_id: str) -> None:
        """Power off and give the server back: release → clean (erase by the agent) → available."""
        state, _ = await ctx.run_sync(self._provision_state, server_id)
        if state in (PS.AVAILABLE, PS.MANAGEABLE, PS.ENROLL, PS.MAINTENANCE, PS.RETIRED):
            return  # nothing was written to its disks by this profile
        managed = await ctx.run_sync(self._load, server_id, None)
        driver = self.driver(managed)
        if state in (PS.DEPLOYED, PS.DEPLOY_FAILED, PS.CAPTURE_FAILED):
            await ctx.run_sync(self._fire, server_id, Event.RELEASE)
            state = PS.RELEASING
        async with ctx.phase("Release the server", 30) as phase:
            if state == PS.RELEASING:
                await phase.progress(10, "Powering the server off.")
                await driver.set_power(PowerAction.OFF)
                await driver.set_boot_device(BootSetting(BootDevice.NONE, persistent=True))
                await self.record(server_id, power_state=PowerState.OFF.value, expected_power=PowerState.OFF.value)
                await ctx.run_sync(self._fire, server_id, Event.DONE, PS.RELEASING)
                state = PS.CLEANING
        work = AgentWork(self.app, driver, server_id, managed.name, PS.CLEAN_WAIT,
                         wait_ttls(self.app.settings.provisioning)[PS.CLEAN_WAIT])
        async with ctx.phase("Erase the disks", 95) as phase:
            if state == PS.CLEAN_FAILED:
                await ctx.run_sync(self._fire, server_id, Event.CLEAN)
                state = PS.CLEANING
            if state == PS.CLEANING:
                since = await work.boot_agent(phase)
                await ctx.run_sync(self._fire, server_id, Event.WAIT, PS.CLEANING)
                _, entered = await ctx.run_sync(self._provision_state, server_id)
                assert entered is not None
                try:
                    await work.wait_for_agent(phase, since, entered)
                    await work.run_command(phase, "erase", {}, entered)
                except ApplianceError as exc:
                    await ctx.run_sync(self._clean_failed, server_id, exc.message)
                    raise
                await ctx.run_sync(self._fire, server_id, Event.RESUME, PS.CLEAN_WAIT)
            await driver.set_power(PowerAction.OFF)
            await self.record(server_id, power_state=PowerState.OFF.value, expected_power=PowerState.OFF.value)
            await ctx.run_sync(self._fire, server_id, Event.DONE, PS.CLEANING)

    def _clean_failed(self, server_id: str, reason: str) -> None:
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerHardware, server_id)
            if row is not None and row.provision_state in (PS.CLEANING, PS.CLEAN_WAIT):
                ProvisionService(db, self.app.clock).fire(server_id, Event.FAIL, error=reason)

    def _forget(self, profile_id: str) -> None:
        with unit_of_work(self.app.session_factory) as db:
            row = db.get(ServerProfile, profile_id)
            if row is not None:
                db.delete(row)
