"""Capture from a running server (issue 8): the disk of a ``deployed`` server, streamed back by the
deploy agent, becomes a new golden image through a capture build plan.

Asked for by ``POST /rest/golden-images`` with ``imageCapture`` and ``serverHardwareUri`` (Ingot's
addition next to Image Streamer's ``osVolumeURI``): :func:`start_server_capture` fires ``capture``
(deployed → capturing) and queues the task ``golden-image-capture-server``, whose phases are:

1. **Boot the deploy agent**: one-time network boot, power cycle; ``wait`` (→ capture-wait).
2. **Read the disk**: the agent's ``read_disk`` streams the used part of the disk chosen by the
   server profile's root-device hints (up to the end of its last partition, all-zero ranges left
   out) to ``/agent/v1/nodes/{id}/disk/{command}`` (appliance/services/disk_uploads.py); the file
   that arrived must have the SHA-256 the agent computed as it read.
3. **Boot the operating system**: ``resume`` (→ capturing), boot from disk, power cycle, ``done``
   (→ deployed). The server is back at work before the image is made.
4. **Generalize and store**: the capture build plan runs on a copy of the disk (hostname,
   machine-id, SSH host keys, logs...), and the result is flattened into the image store as a new
   golden image, with the whole capture's log (golden_images.GoldenImageCaptureTask's path).

A failure before phase 3 fires ``fail`` (capture-failed, ``last_error``, the alert), ends the
agent's commands, and boots the server back into its own disk (best effort: it was only read).
The task is resumable: a restart during phases 1-2 reads the disk again; after phase 2 it goes on
from the received disk. The received disk lives in the image store's ``incoming/``, which a start
sweeps: if it is gone, the disk is read again while the server still waits in the agent, and the
capture fails (asking for a new one) once the server runs its own OS again.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.clock import Clock
from appliance.db.session import unit_of_work
from appliance.drivers.base import BmcDriver
from appliance.drivers.types import BootDevice, BootSetting, PowerAction, PowerState
from appliance.errors import ApplianceError, ImageToolFailed, NotFound
from appliance.models import ServerHardware, ServerProfile, Task
from appliance.services.agent_work import AgentWork, AgentWorkFailed
from appliance.services.agents import AgentService
from appliance.services.disk_uploads import DiskUpload
from appliance.services.golden_images import (
    CATEGORY,
    PROGRESS_INTERVAL_S,
    GoldenImageCaptureTask,
    GoldenImageService,
    capture_plan,
    log_stamp,
)
from appliance.services.provisioning import ProvisionService, wait_ttls
from appliance.services.server_hardware_tasks import ServerHardwareTask
from appliance.services.tasks import ResourceRef, TaskService
from appliance.states import Event, ProvisionState
from appliance.tasks.handlers import Outcome, TaskContext
from golden_images import qemu_img
from golden_images.store import Progress, sha256_of

PS = ProvisionState
TASK_SERVER_CAPTURE = "golden-image-capture-server"
BOOT_BACK_TIMEOUT_S = 60.0


def start_server_capture(db: Session, clock: Clock, tasks: TaskService, images: GoldenImageService, name: str,
                         description: str, server_id: str, build_plan_uri: str | None, compress: bool,
                         owner: str) -> Task:
    """Check the request, move the server to ``capturing`` and queue the capture.

    :raises NotFound: no such server. :raises InvalidTransition: it is not ``deployed`` (or a failed
        capture to retry). :raises InvalidInput: the name is taken, or the plan is not a capture plan.
    """
    images.ensure_name_free(name)
    if build_plan_uri:
        capture_plan(db, build_plan_uri)
    server = db.get(ServerHardware, server_id)
    if server is None:
        raise NotFound(kind="server hardware", ident=server_id)
    profile = db.scalars(select(ServerProfile).where(ServerProfile.server_hardware_id == server_id)).first()
    ProvisionService(db, clock).fire(server_id, Event.CAPTURE)
    return tasks.create(
        kind=TASK_SERVER_CAPTURE, name="Capture golden image", owner=owner,
        args={"name": name, "description": description, "serverId": server_id, "buildPlanUri": build_plan_uri,
              "compress": compress, "rootDeviceHints": dict(profile.root_device_hints) if profile else {}},
        resource=ResourceRef(uri=None, name=name, category=CATEGORY))


class ServerCaptureTask(ServerHardwareTask):
    kind: ClassVar[str] = TASK_SERVER_CAPTURE
    resumable: ClassVar[bool] = True  # see the module docstring

    async def run(self, ctx: TaskContext) -> Outcome:
        server_id, name = str(ctx.args["serverId"]), str(ctx.args["name"])
        managed = await ctx.run_sync(self._load, server_id, None)
        driver = self.driver(managed)
        images = GoldenImageCaptureTask(self.app)
        checkpoint = dict(ctx.checkpoint)
        log = [f"{log_stamp(self.app)} capture of the disk of server {managed.name} ({server_id}) by {ctx.owner} "
               f"(task {ctx.task_id})"]
        await ctx.progress(1, f"Capturing the disk of {managed.name} into golden image {name}.")
        try:
            if "disk" in checkpoint and not await ctx.run_sync(self._received, checkpoint):
                checkpoint = await self._lost(ctx, server_id, managed.name, checkpoint)
            if "disk" not in checkpoint:
                checkpoint = await self._read_disk(ctx, driver, server_id, managed.name, checkpoint)
            disk = checkpoint["disk"]
            log.append(f"{log_stamp(self.app)} read {disk['bytes']} bytes of {disk['device']} ({disk['layout']}, "
                       f"{disk['sent']} bytes sent), sha256 {disk['sha256']}")
            await self._boot_os(ctx, driver, server_id)
        except ApplianceError as exc:
            await asyncio.shield(self._fail(driver, server_id, exc.message))
            await ctx.run_sync(self._remove_upload, checkpoint)
            raise
        except asyncio.CancelledError:
            user = ctx.cancelled_by()  # None: a shutdown; the next run resumes from the checkpoint
            if user is not None:
                await asyncio.shield(self._fail(driver, server_id, f"Cancelled by {user}."))
                await asyncio.to_thread(self._remove_upload, checkpoint)
            raise
        upload = DiskUpload(self.app.images.incoming_dir, disk["command"])
        try:
            with self.app.images.workspace() as work:
                volume = work / "captured.qcow2"
                try:
                    await ctx.run_with_progress(lambda progress: qemu_img.convert(
                        upload.path, volume, src_format="raw", on_progress=progress), 70, 75,
                        "Converting the disk to qcow2", PROGRESS_INTERVAL_S)
                except qemu_img.QemuImgError as exc:
                    raise ImageToolFailed(reason=str(exc)) from exc
                plan = ctx.args.get("buildPlanUri") or None
                stored = await images.generalize_and_store(ctx, volume, f"the disk of {managed.name}", plan,
                                                           bool(ctx.args.get("compress")), log, 75, 97)
        finally:
            await ctx.run_sync(upload.remove)
        await images.record_image(ctx, stored, log, image_capture=True, build_plan_uri=ctx.args.get("buildPlanUri"))
        await ctx.progress(100, f"Golden image {name} captured from {managed.name} ({stored.size} bytes).")
        return Outcome(status=f"Golden image {name} captured from {managed.name}.")

    async def _read_disk(self, ctx: TaskContext, driver: BmcDriver, server_id: str, server_name: str,
                         checkpoint: dict[str, Any]) -> dict[str, Any]:
        """Phases 1 and 2; a resumed task ends its earlier agent command and reads again."""
        work = AgentWork(self.app, driver, server_id, server_name, PS.CAPTURE_WAIT,
                         wait_ttls(self.app.settings.provisioning)[PS.CAPTURE_WAIT])
        async with ctx.phase("Boot the deploy agent", 20) as phase:
            entered = await work.boot_and_wait(ctx, phase, checkpoint, PS.CAPTURING)
        async with ctx.phase("Read the disk", 60) as phase:
            await ctx.run_sync(self._remove_upload, checkpoint)
            await ctx.run_sync(self._cancel_commands, server_id, "A new read of the disk replaces this one.")
            params = {"rootDeviceHints": ctx.args.get("rootDeviceHints") or None, "whole": False}
            command_id = await work.queue("read_disk", params)
            checkpoint["command"] = command_id
            await ctx.save_checkpoint(checkpoint)
            result = await work.follow(phase, "read_disk", command_id, entered)
            upload = DiskUpload(self.app.images.incoming_dir, command_id)
            received = await phase.run_with_progress(lambda report: self._check(upload, result, server_name, report),
                                                     "Checking the SHA-256 of what arrived", PROGRESS_INTERVAL_S)
        checkpoint["disk"] = {"command": command_id, **received}
        await ctx.save_checkpoint(checkpoint)
        return checkpoint

    async def _lost(self, ctx: TaskContext, server_id: str, server_name: str,
                    checkpoint: dict[str, Any]) -> dict[str, Any]:
        """Resumed after a restart whose start-up sweep of ``incoming/`` took the received disk:
        read it again while the agent is still up, else say so (the server runs its OS again)."""
        state, _ = await ctx.run_sync(self._provision_state, server_id)
        if state != PS.CAPTURE_WAIT:
            raise AgentWorkFailed(name=server_name, reason="the disk read before the appliance restarted is gone; "
                                                           "capture the server again")
        checkpoint = {key: value for key, value in checkpoint.items() if key != "disk"}
        await ctx.save_checkpoint(checkpoint)
        return checkpoint

    async def _boot_os(self, ctx: TaskContext, driver: BmcDriver, server_id: str) -> None:
        async with ctx.phase("Boot the operating system", 70) as phase:
            state, _ = await ctx.run_sync(self._provision_state, server_id)
            if state == PS.CAPTURE_WAIT:
                state = await ctx.run_sync(self._fire, server_id, Event.RESUME, PS.CAPTURE_WAIT)
            if state == PS.CAPTURING:
                await phase.progress(20, "Booting from the disk again; power cycling.")
                await driver.set_boot_device(BootSetting(BootDevice.DISK, persistent=True))
                await driver.set_power(PowerAction.CYCLE)
                await self.record(server_id, power_state=PowerState.ON.value, expected_power=PowerState.ON.value)
                await ctx.run_sync(self._fire, server_id, Event.DONE, PS.CAPTURING)
            elif state != PS.DEPLOYED:  # resumed after done: nothing left but the image
                raise AgentWorkFailed(name=server_id, reason=f"the server is {state}, not capturing")
            await phase.progress(100, "The server runs its own operating system again.")

    async def _fail(self, driver: BmcDriver, server_id: str, reason: str) -> None:
        """``fail`` the capture if it is still the server's work, end its agent commands, and boot it
        back into its own operating system (its disk was only read)."""
        moved = await asyncio.to_thread(self._fail_state, server_id, reason)
        if not moved:
            return
        try:
            await asyncio.wait_for(driver.set_boot_device(BootSetting(BootDevice.DISK, persistent=True)),
                                   BOOT_BACK_TIMEOUT_S)
            await asyncio.wait_for(driver.set_power(PowerAction.CYCLE), BOOT_BACK_TIMEOUT_S)
        except (ApplianceError, TimeoutError):
            pass  # a dead BMC is another failure; the capture's own error is the one to show

    # --- worker threads -----------------------------------------------------------------------------
    @staticmethod
    def _check(upload: DiskUpload, result: dict[str, Any], server_name: str, report: Progress) -> dict[str, Any]:
        """What arrived, checked against what the agent read: its length and its SHA-256."""
        status = upload.status()
        size, digest = result.get("bytes"), str(result.get("sha256") or "")
        if not status.complete or status.total != size or upload.path.stat().st_size != size:
            raise AgentWorkFailed(name=server_name, reason=(
                f"the agent read {size} bytes of the disk, but the upload is "
                f"{'complete' if status.complete else 'incomplete'} with {status.total}"))
        arrived = sha256_of(upload.path, report)
        if arrived != digest:
            raise AgentWorkFailed(name=server_name,
                                  reason=f"the disk arrived with SHA-256 {arrived}; the agent read {digest}")
        return {"bytes": size, "sha256": digest, "device": result.get("device"), "layout": result.get("layout"),
                "sent": result.get("sent")}

    def _fail_state(self, server_id: str, reason: str) -> bool:
        with unit_of_work(self.app.session_factory) as db:
            AgentService(db, self.app.clock).cancel_all(server_id, f"The capture failed: {reason}")
            row = db.get(ServerHardware, server_id)
            if row is None or row.provision_state not in (PS.CAPTURING, PS.CAPTURE_WAIT):
                return False
            ProvisionService(db, self.app.clock).fire(server_id, Event.FAIL, error=reason)
            return True

    def _cancel_commands(self, server_id: str, why: str) -> None:
        with unit_of_work(self.app.session_factory) as db:
            AgentService(db, self.app.clock).cancel_all(server_id, why)

    def _received(self, checkpoint: dict[str, Any]) -> bool:
        return DiskUpload(self.app.images.incoming_dir, str(checkpoint["disk"]["command"])).path.is_file()

    def _remove_upload(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("command"):
            DiskUpload(self.app.images.incoming_dir, str(checkpoint["command"])).remove()
