"""Golden images (Image Streamer ``/rest/golden-images``): the library's rows over the image store.

An upload arrives as a file in the store's ``incoming/`` directory (web/uploads.py streams it
there); importing it - probe, judge, convert, checksum, publish - is a task, because a large image
takes minutes. The row appears only when its file is published, so a listed golden image always
has its file; a refused or interrupted import leaves neither (the upload is deleted by the task,
or by the start-up sweep of ``incoming/`` when the appliance died first).

An image can also be imported from an HTTP(S) URL or from a file on the appliance under an
allowed directory (``golden-image-fetch``: download, or read in place, then the same import).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.db.session import unit_of_work
from appliance.errors import (
    AlreadyExists,
    Conflict,
    ImageCorrupt,
    ImageSourceFailed,
    ImageToolFailed,
    InvalidImage,
    InvalidInput,
    NotFound,
)
from appliance.models import BuildPlan, GoldenImage, Task
from appliance.query import CollectionQuery
from appliance.repositories.base import Page
from appliance.repositories.build_plans import BuildPlanRepository
from appliance.repositories.deployment_plans import DeploymentPlanRepository
from appliance.repositories.golden_images import GoldenImageRepository
from appliance.repositories.os_volumes import OsVolumeRepository
from appliance.services.alerts import AlertService
from appliance.services.build_plans import build_plan_id_from_uri
from appliance.services.os_volumes import refuse_while_on_nbd, volume_name
from appliance.services.personalize import LAUNCH_ESTIMATE_S, ResolvedPlan, plan_failed, resolve_build_plan
from appliance.services.tasks import ResourceRef, TaskService
from appliance.tasks.handlers import Outcome, TaskContext, TaskHandler
from golden_images import assess, fetch, qemu_img
from golden_images.nbd import NbdExports
from golden_images.store import ImageStore, Progress, StoredImage, sha256_of
from plans.guestfish import PlanFailed, run_plan

if TYPE_CHECKING:
    from appliance.context import AppContext

CATEGORY = "golden-images"
TASK_IMPORT = "golden-image-import"
TASK_FETCH = "golden-image-fetch"
TASK_CAPTURE = "golden-image-capture"
TASK_VERIFY = "golden-image-verify"
ALERT_CORRUPT = "Ingot.Images.ChecksumMismatch"
# File name extensions that say what the uploader claims the image is; other names claim nothing.
CLAIMING_EXTENSIONS = frozenset({"qcow2", "qcow", "raw", "img", "vmdk", "vhd", "vpc", "vhdx"})
PROGRESS_INTERVAL_S = 0.5
_SHA256 = re.compile(r"[0-9a-f]{64}")


def golden_image_uri(image_id: str) -> str:
    return f"/rest/golden-images/{image_id}"


def claimed_format(filename: str) -> str | None:
    """The format an upload's file name claims (``disk.vmdk`` claims vmdk), or None."""
    _, dot, extension = filename.rpartition(".")
    if not dot or extension.lower() not in CLAIMING_EXTENSIONS:
        return None
    return assess.normalise_claim(extension)


def reconcile_store(store: ImageStore, db: Session) -> list[str]:
    """At start, before any task runs: empty incoming/ (uploads and conversions a crash left) and
    remove volume, export and golden files no row names (made just before a crash, ahead of their
    row, or left by a delete that did not finish)."""
    removed = store.sweep()
    volumes = OsVolumeRepository(db).ids()
    for volume_id in store.volume_ids() - volumes:  # made just before a crash
        store.delete_volume(volume_id)
        removed.append(f"volumes/{volume_id}")
    for volume_id in store.exported_volume_ids() - volumes:  # exports of volumes deleted just before a crash
        store.delete_exports(volume_id)
        removed.append(f"exports/{volume_id}.*")
    known = GoldenImageRepository(db).checksums()
    for sha256 in store.golden_checksums() - known:
        store.delete_golden(sha256)
        removed.append(f"golden/{sha256}")
    return removed


ALERT_LOW_SPACE = "Ingot.Images.LowSpace"


def check_store_space(store: ImageStore, low_space_percent: float, db: Session,
                      clock: Clock = system_clock) -> float:
    """Raise the low-space alert while less than ``low_space_percent`` of the store's file system
    is free, clear it once there is room again; returns the percent free."""
    usage = shutil.disk_usage(store.root)
    percent = 100.0 * usage.free / usage.total if usage.total else 0.0
    alerts = AlertService(db, clock)
    if percent < low_space_percent:
        alerts.raise_alert(
            alert_type=ALERT_LOW_SPACE, severity="Warning",
            description=f"The image store has {usage.free} bytes free ({percent:.1f} % of its file system); uploads, "
                        "clones and captures may fail.",
            corrective_action="Delete golden images or OS volumes that are no longer needed, or grow the file "
                              "system of INGOT_IMAGES__ROOT.",
            resource_uri="/rest/golden-images", resource_name="Image store", resource_category=CATEGORY,
        )
    else:
        alerts.clear_condition(ALERT_LOW_SPACE, "/rest/golden-images")
    return percent


def capture_plan(db: Session, uri: str) -> BuildPlan:
    """The capture build plan ``uri`` names (400 when there is none, or it is a deploy plan)."""
    try:
        build_plan = BuildPlanRepository(db).get(build_plan_id_from_uri(uri))
    except InvalidInput as exc:
        raise InvalidInput(reason=f"buildPlanUri: {exc.message}", nested=[("buildPlanUri", exc.message)]) from None
    if build_plan is None:
        raise InvalidInput(reason=f"buildPlanUri: the build plan {uri} does not exist",
                           nested=[("buildPlanUri", "no such build plan")])
    if build_plan.plan_type != "capture":
        raise InvalidInput(reason=f"buildPlanUri: {build_plan.name} is a {build_plan.plan_type} build plan; a capture "
                                  "needs a capture build plan", nested=[("buildPlanUri", "not a capture build plan")])
    return build_plan


class GoldenImageService:
    def __init__(self, db: Session, store: ImageStore, clock: Clock = system_clock,
                 tasks: TaskService | None = None, nbd: NbdExports | None = None) -> None:
        self.images = GoldenImageRepository(db)
        self.store = store
        self.clock = clock
        self.tasks = tasks or TaskService(db, clock)
        self.nbd = nbd

    def list(self, query: CollectionQuery) -> Page[GoldenImage]:
        return self.images.page(query)

    def get(self, image_id: str) -> GoldenImage:
        image = self.images.get(image_id)
        if image is None:
            raise NotFound(kind="golden image", ident=image_id)
        return image

    def ensure_name_free(self, name: str, keep: str | None = None) -> None:
        if not name.strip():
            raise InvalidInput(reason="a golden image needs a name")
        existing = self.images.by_name(name)
        if existing is not None and existing.id != keep:
            raise AlreadyExists(kind="golden image", name=name)

    def start_import(self, upload: Path, filename: str, name: str, description: str, owner: str) -> Task:
        """Queue the import of an upload that web/uploads.py has put in the store's incoming/."""
        self.ensure_name_free(name)
        return self.tasks.create(
            kind=TASK_IMPORT, name="Add golden image", owner=owner,
            args={"upload": upload.name, "filename": filename, "name": name, "description": description},
            resource=ResourceRef(uri=None, name=name, category=CATEGORY),
        )

    def start_fetch(self, name: str, description: str, *, url: str | None, path: str | None, sha256: str | None,
                    import_dirs: Sequence[Path], owner: str) -> Task:
        """Queue the import of an image from an HTTP(S) URL or a file on the appliance; ``sha256``,
        when given, must match the source file before anything else is done with it."""
        self.ensure_name_free(name)
        if (url is None) == (path is None):
            raise InvalidInput(reason="name the image's source: a URL or a path on the appliance, not both")
        if sha256 is not None and not _SHA256.fullmatch(sha256.lower()):
            raise InvalidInput(reason="the checksum must be a SHA-256 in hex (64 characters)")
        try:
            source = fetch.check_url(url) if url is not None else str(fetch.resolve_local(str(path), import_dirs))
        except fetch.SourceRefused as exc:
            raise InvalidInput(reason=exc.reason) from exc
        return self.tasks.create(
            kind=TASK_FETCH, name="Import golden image", owner=owner,
            args={"url" if url is not None else "path": source, "sha256": sha256.lower() if sha256 else None,
                  "name": name, "description": description},
            resource=ResourceRef(uri=None, name=name, category=CATEGORY),
        )

    def start_capture(self, name: str, description: str, os_volume_id: str, build_plan_uri: str | None,
                      compress: bool, owner: str) -> Task:
        """Queue the capture of a new golden image from an OS volume."""
        self.ensure_name_free(name)
        volume = OsVolumeRepository(self.images.db).get(os_volume_id)
        if volume is None:
            raise NotFound(kind="OS volume", ident=os_volume_id)
        refuse_while_on_nbd(self.nbd, volume, "capture")
        if build_plan_uri:
            capture_plan(self.images.db, build_plan_uri)
        return self.tasks.create(
            kind=TASK_CAPTURE, name="Capture golden image", owner=owner,
            args={"name": name, "description": description, "osVolumeId": os_volume_id,
                  "buildPlanUri": build_plan_uri, "compress": compress},
            resource=ResourceRef(uri=None, name=name, category=CATEGORY),
        )

    def start_verify(self, image_id: str, owner: str) -> Task:
        """Queue a full read of the image's file against its checksum."""
        image = self.get(image_id)
        return self.tasks.create(
            kind=TASK_VERIFY, name="Verify golden image", owner=owner, args={"imageId": image.id},
            resource=ResourceRef(uri=golden_image_uri(image.id), name=image.name, category=CATEGORY),
        )

    def log_path(self, image_id: str) -> Path:
        path = self.store.log_path(self.get(image_id).id)
        if not path.is_file():
            raise NotFound(kind="log of golden image", ident=image_id)
        return path

    def update(self, image_id: str, name: str, description: str) -> GoldenImage:
        image = self.get(image_id)
        self.ensure_name_free(name, keep=image.id)
        image.name, image.description, image.modified = name, description, self.clock()
        return image

    def file_path(self, image_id: str) -> Path:
        path = self.store.golden_path(self.get(image_id).sha256)
        if not path.is_file():
            raise NotFound(kind="golden image file", ident=path.name)
        return path

    def delete(self, image_id: str) -> None:
        """Remove the row; the file goes with the last row that names it (the same image can be
        in the library under two names). Refused (409, naming them) while OS volumes use it."""
        image = self.get(image_id)
        users = OsVolumeRepository(self.images.db).names_on_image(image.id)
        if users:
            raise Conflict(reason=f"the golden image {image.name} is in use by the OS volumes {', '.join(users)}")
        plans = DeploymentPlanRepository(self.images.db).names_using_golden_image(image.id)
        if plans:
            raise Conflict(reason=f"the golden image {image.name} is in use by the deployment plans "
                                  f"{', '.join(plans)}")
        sha256 = image.sha256
        self.images.delete(image)
        self.store.delete_log(image.id)
        if self.images.count_with_checksum(sha256) == 0:
            self.store.delete_golden(sha256)


def record_golden_image(app: AppContext, stored: StoredImage, name: str, description: str, owner: str,
                        task_id: str | None, log: list[str], **fields: Any) -> str:
    """The library's row for an image the store has just published, with the import's log kept
    beside it; returns its id. (Shared by the image tasks and artifact-bundle extraction.)"""
    with unit_of_work(app.session_factory) as db:
        images = GoldenImageRepository(db)
        if images.by_name(name) is not None:
            raise AlreadyExists(kind="golden image", name=name)
        row = images.add(GoldenImage(
            name=name, description=description, sha256=stored.sha256, size=stored.size,
            virtual_size=stored.virtual_size, source_format=stored.source_format, created_by=owner,
            task_id=task_id, **fields))
        log.append(f"{log_stamp(app)} golden image {name} ({row.id}): sha256 {stored.sha256}, "
                   f"{stored.size} bytes, virtual size {stored.virtual_size} bytes")
        app.images.write_log(row.id, "\n".join(log) + "\n")
        return row.id


def log_stamp(app: AppContext) -> str:
    """A log line's time, from the appliance's clock."""
    return app.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _ImageTask(TaskHandler):
    """What import and capture share: a store call in a worker thread with its percent reported,
    the new row (with its log kept in the store), and the clean-up when the row cannot be made."""

    async def watch_store(self, ctx: TaskContext, work: Callable[[Progress], StoredImage], start: int, end: int,
                     doing: str) -> StoredImage:
        """``work`` with its percent reported; the store's refusals and failures as domain errors.
        If the task is cancelled (shutdown), the worker thread runs to the end of its qemu-img and
        removes its own work directory; a file it still publishes has no row, and the next start
        removes it (reconcile_store)."""
        try:
            return await ctx.run_with_progress(work, start, end, doing, PROGRESS_INTERVAL_S)
        except assess.ImageRefused as exc:
            raise InvalidImage(reason=exc.reason) from exc
        except qemu_img.QemuImgError as exc:
            raise ImageToolFailed(reason=str(exc)) from exc

    async def record_image(self, ctx: TaskContext, stored: StoredImage, log: list[str], **fields: Any) -> str:
        name = str(ctx.args["name"])
        try:
            image_id = await ctx.run_sync(lambda: record_golden_image(
                self.app, stored, name, str(ctx.args.get("description") or ""), ctx.owner, ctx.task_id, log,
                **fields))
        except BaseException:
            await ctx.run_sync(self._forget_unused, stored)
            raise
        ctx.set_result(golden_image_uri(image_id), name, CATEGORY)
        return image_id

    def _stamp(self) -> str:
        return log_stamp(self.app)

    def _forget_unused(self, stored: StoredImage) -> None:
        with unit_of_work(self.app.session_factory) as db:
            if GoldenImageRepository(db).count_with_checksum(stored.sha256) == 0:
                self.app.images.delete_golden(stored.sha256)


class GoldenImageImportTask(_ImageTask):
    kind: ClassVar[str] = TASK_IMPORT
    resumable: ClassVar[bool] = False  # the upload does not outlive the process that received it

    async def run(self, ctx: TaskContext) -> Outcome:
        store = self.app.images
        upload = store.incoming_dir / Path(str(ctx.args["upload"])).name
        name, filename = str(ctx.args["name"]), str(ctx.args.get("filename") or "")
        log = [f"{self._stamp()} import of {filename or 'an upload'} by {ctx.owner} (task {ctx.task_id})"]
        try:
            if not await ctx.run_sync(upload.is_file):
                raise InvalidInput(reason="the uploaded file is gone (the appliance restarted); upload it again")
            try:
                claim = claimed_format(filename)
            except assess.ImageRefused as exc:
                raise InvalidImage(reason=exc.reason) from exc
            await ctx.progress(1, f"Checking {filename or 'the upload'}.")
            limit = self.app.settings.images.max_virtual_size
            stored = await self.watch_store(ctx, lambda progress: store.ingest(
                upload, claimed=claim, on_progress=progress, max_bundle_bytes=limit), 2, 95, "Converting to qcow2")
        finally:
            await ctx.run_sync(lambda: upload.unlink(missing_ok=True))
        log.append(f"{self._stamp()} probed as {stored.source_format}, converted to qcow2")
        await self.record_image(ctx, stored, log, original_filename=filename)
        await ctx.progress(100, f"Golden image {name} added ({stored.size} bytes, sha256 {stored.sha256[:12]}...).")
        return Outcome(status=f"Golden image {name} added.")


class GoldenImageFetchTask(_ImageTask):
    """Import from a URL (downloaded into incoming/, 1-40 %) or an allowed local file (read in
    place), then probe, convert, checksum and publish as an upload is."""

    kind: ClassVar[str] = TASK_FETCH
    resumable: ClassVar[bool] = True  # the source is still there: starting over is always correct

    async def run(self, ctx: TaskContext) -> Outcome:
        store, settings = self.app.images, self.app.settings.images
        name, url, local = str(ctx.args["name"]), ctx.args.get("url"), ctx.args.get("path")
        expected = ctx.args.get("sha256")
        origin = str(url or local)
        log = [f"{self._stamp()} import of {origin} by {ctx.owner} (task {ctx.task_id})"]
        with store.workspace() as work:
            if url is not None:
                await ctx.progress(1, f"Downloading {url}.")
                try:
                    fetched = await ctx.run_with_progress(lambda progress: fetch.fetch(
                        str(url), work / "download", max_bytes=settings.max_upload_bytes,
                        timeout=settings.fetch_timeout_s, verify_tls=settings.fetch_verify_tls,
                        on_progress=progress), 1, 40, "Downloading", PROGRESS_INTERVAL_S)
                except fetch.FetchFailed as exc:
                    raise ImageSourceFailed(source=url, reason=str(exc)) from exc
                source, digest, filename = fetched.path, fetched.sha256, fetch.url_file_name(str(url))
                log.append(f"{self._stamp()} downloaded {fetched.size} bytes, sha256 {digest}")
            else:
                try:  # checked again: the file or a link on its path may have changed since
                    source = await ctx.run_sync(fetch.resolve_local, str(local), settings.import_dirs)
                except fetch.SourceRefused as exc:
                    raise InvalidInput(reason=exc.reason) from exc
                filename = source.name
                digest = None
                if expected:
                    digest = await ctx.run_with_progress(
                        lambda progress: sha256_of(source, progress), 1, 40, "Checking the checksum",
                        PROGRESS_INTERVAL_S)
            if expected and digest != expected:
                raise InvalidImage(reason=f"the source's SHA-256 is {digest}, not the {expected} given")
            try:
                claim = claimed_format(filename)
            except assess.ImageRefused as exc:
                raise InvalidImage(reason=exc.reason) from exc
            stored = await self.watch_store(ctx, lambda progress: store.ingest(
                source, claimed=claim, on_progress=progress, max_bundle_bytes=settings.max_virtual_size),
                41, 95, "Converting to qcow2")
        log.append(f"{self._stamp()} probed as {stored.source_format}, converted to qcow2")
        await self.record_image(ctx, stored, log, original_filename=filename)
        await ctx.progress(100, f"Golden image {name} imported from {origin} ({stored.size} bytes).")
        return Outcome(status=f"Golden image {name} imported.")


class GoldenImageCaptureTask(_ImageTask):
    kind: ClassVar[str] = TASK_CAPTURE
    resumable: ClassVar[bool] = True  # starting over is always correct: nothing is published half-made

    def _plan(self, uri: str) -> ResolvedPlan:
        """The capture plan's scripts, tokens filled from the build plan's own defaults."""
        with unit_of_work(self.app.session_factory) as db:
            return resolve_build_plan(db, self.app.secrets, capture_plan(db, uri))

    async def run(self, ctx: TaskContext) -> Outcome:
        name, volume_id = str(ctx.args["name"]), str(ctx.args["osVolumeId"])
        plan = ctx.args.get("buildPlanUri") or None
        source = await ctx.run_sync(volume_name, self.app.session_factory, volume_id)
        log = [f"{self._stamp()} capture of OS volume {source} ({volume_id}) by {ctx.owner} (task {ctx.task_id})"]
        stored = await self.generalize_and_store(ctx, self.app.images.volume_path(volume_id), f"OS volume {source}",
                                                 plan, bool(ctx.args.get("compress")), log, 1, 95)
        await self.record_image(ctx, stored, log, image_capture=True, os_volume_uri=f"/rest/os-volumes/{volume_id}",
                           build_plan_uri=plan)
        await ctx.progress(100, f"Golden image {name} captured ({stored.size} bytes).")
        return Outcome(status=f"Golden image {name} captured from {source}.")

    async def generalize_and_store(self, ctx: TaskContext, volume: Path, source: str, plan: str | None,
                                   compress: bool, log: list[str], start: int, end: int) -> StoredImage:
        """The qcow2 ``volume`` (left as it is) through the capture build plan ``plan``, flattened
        into the image store; the task's percent goes from ``start`` to ``end``."""
        store = self.app.images
        resolved = await ctx.run_sync(self._plan, plan) if plan else None
        doing = "Flattening" + (" and compressing" if compress else "")
        middle = start + (end - start) // 3
        if resolved is None or not resolved.steps:
            log.append(f"{self._stamp()} capture build plan: {resolved.name if resolved else 'none'}; no plan steps, "
                       "so the volume is captured as it is")
            await ctx.progress(start, f"Capturing {source}.")
            stored = await self.watch_store(ctx, lambda progress: store.capture(
                volume, compress=compress, on_progress=progress), start + 1, end, doing)
        else:
            log.append(f"{self._stamp()} capture build plan {resolved.name}: {len(resolved.steps)} scripts, run on a "
                       "temporary overlay of the volume")
            with store.workspace() as work:
                # The plan generalizes (strips identity, resets state): that must not happen to the
                # OS volume itself, which may still be a server's disk. So the scripts write a
                # throw-away qcow2 overlay on the volume, and that chain is what is flattened.
                overlay = work / "capture-overlay.qcow2"
                size = int((await ctx.run_sync(qemu_img.info, volume, "qcow2"))["virtual-size"])
                await ctx.run_sync(qemu_img.create_overlay, str(volume.resolve()), overlay, size)
                await ctx.progress(start + 1, f"Running capture build plan {resolved.name} ({len(resolved.steps)} "
                                              f"scripts) on a copy-on-write overlay of {source}: launching the "
                                              f"guestfish appliance first (about {LAUNCH_ESTIMATE_S} s under TCG).")
                settings = self.app.settings
                try:
                    run = await ctx.run_with_progress(lambda report: run_plan(
                        overlay, resolved.steps, work_dir=settings.home / "guestfish", secrets=resolved.secrets,
                        allow_shell=settings.images.plan_shell_escapes, timeout=settings.images.plan_timeout_s,
                        on_progress=report), start + 1, middle, f"Running capture build plan {resolved.name}",
                        PROGRESS_INTERVAL_S)
                except PlanFailed as failed:
                    raise plan_failed(resolved.name, failed) from None
                log.extend(run.log.rstrip("\n").splitlines())
                await ctx.progress(middle, f"Capture build plan {resolved.name} done in {run.seconds:.1f} s.")
                stored = await self.watch_store(ctx, lambda progress: store.capture(
                    overlay, compress=compress, on_progress=progress), middle, end, doing)
        log.append(f"{self._stamp()} flattened{' and compressed' if compress else ''} into qcow2")
        return stored


class GoldenImageVerifyTask(TaskHandler):
    """Read a golden image's file in full and compare it with its checksum; a mismatch fails the
    task and raises a critical alert on the image (cleared by a later verify that passes)."""

    kind: ClassVar[str] = TASK_VERIFY
    resumable: ClassVar[bool] = True  # reading again from the start is always correct

    async def run(self, ctx: TaskContext) -> Outcome:
        image_id = str(ctx.args["imageId"])

        def load() -> tuple[str, str]:
            with unit_of_work(self.app.session_factory) as db:
                image = GoldenImageRepository(db).get(image_id)
                if image is None:
                    raise NotFound(kind="golden image", ident=image_id)
                return image.name, image.sha256

        name, sha256 = await ctx.run_sync(load)
        store = self.app.images
        try:
            intact = await ctx.run_with_progress(lambda progress: store.verify(sha256, progress), 1, 99,
                                                 "Reading", PROGRESS_INTERVAL_S)
        except FileNotFoundError:
            intact = False
        uri = golden_image_uri(image_id)

        def record() -> None:
            with unit_of_work(self.app.session_factory) as db:
                alerts = AlertService(db, self.app.clock)
                if intact:
                    alerts.clear_condition(ALERT_CORRUPT, uri)
                else:
                    alerts.raise_alert(
                        alert_type=ALERT_CORRUPT, severity="Critical",
                        description=f"The file of golden image {name} does not match its SHA-256 checksum "
                                    "(or is missing): it has changed on disk since it was stored.",
                        corrective_action="Do not deploy from it. Delete it and upload or capture it again, "
                                          "and check the disk of the image store.",
                        resource_uri=uri, resource_name=name, resource_category=CATEGORY)

        await ctx.run_sync(record)
        ctx.set_result(uri, name, CATEGORY)
        if not intact:
            raise ImageCorrupt(name=name, sha256=sha256)
        await ctx.progress(100, f"Golden image {name} matches its checksum.")
        return Outcome(status=f"Golden image {name} matches its checksum {sha256[:12]}...")
