"""Golden images (Image Streamer ``/rest/golden-images``): the library's rows over the image store.

An upload arrives as a file in the store's ``incoming/`` directory (web/uploads.py streams it
there); importing it - probe, judge, convert, checksum, publish - is a task, because a large image
takes minutes. The row appears only when its file is published, so a listed golden image always
has its file; a refused or interrupted import leaves neither (the upload is deleted by the task,
or by the start-up sweep of ``incoming/`` when the appliance died first).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.config import Settings
from appliance.db.session import unit_of_work
from appliance.errors import AlreadyExists, ImageToolFailed, InvalidImage, InvalidInput, NotFound
from appliance.models import GoldenImage, Task
from appliance.query import CollectionQuery
from appliance.repositories.base import Page
from appliance.repositories.golden_images import GoldenImageRepository
from appliance.services.tasks import ResourceRef, TaskService
from appliance.tasks.handlers import Outcome, TaskContext, TaskHandler
from golden_images import assess, qemu_img
from golden_images.store import ImageStore, StoredImage

CATEGORY = "golden-images"
TASK_IMPORT = "golden-image-import"
# File name extensions that say what the uploader claims the image is; other names claim nothing.
CLAIMING_EXTENSIONS = frozenset({"qcow2", "qcow", "raw", "img", "vmdk", "vhd", "vpc", "vhdx"})
PROGRESS_INTERVAL_S = 0.5


def golden_image_uri(image_id: str) -> str:
    return f"/rest/golden-images/{image_id}"


def image_store(settings: Settings) -> ImageStore:
    return ImageStore(settings.images.root or settings.home / "images",
                      max_virtual_size=settings.images.max_virtual_size)


def claimed_format(filename: str) -> str | None:
    """The format an upload's file name claims (``disk.vmdk`` claims vmdk), or None."""
    _, dot, extension = filename.rpartition(".")
    if not dot or extension.lower() not in CLAIMING_EXTENSIONS:
        return None
    return assess.normalise_claim(extension)


def reconcile_store(settings: Settings, db: Session) -> list[str]:
    """At start, before any task runs: empty incoming/ (uploads and conversions a crash left) and
    remove golden files no row names (published just before a crash, ahead of their row)."""
    store = image_store(settings)
    removed = store.sweep()
    known = GoldenImageRepository(db).checksums()
    for sha256 in store.golden_checksums() - known:
        store.delete_golden(sha256)
        removed.append(f"golden/{sha256}")
    return removed


class GoldenImageService:
    def __init__(self, db: Session, settings: Settings, clock: Clock = system_clock,
                 tasks: TaskService | None = None) -> None:
        self.images = GoldenImageRepository(db)
        self.settings = settings
        self.clock = clock
        self.tasks = tasks or TaskService(db, clock)

    @property
    def store(self) -> ImageStore:
        return image_store(self.settings)

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
        in the library under two names). OS volumes will hold it too (409 while they do)."""
        image = self.get(image_id)
        sha256 = image.sha256
        self.images.delete(image)
        if self.images.count_with_checksum(sha256) == 0:
            self.store.delete_golden(sha256)


class GoldenImageImportTask(TaskHandler):
    kind: ClassVar[str] = TASK_IMPORT
    resumable: ClassVar[bool] = False  # the upload does not outlive the process that received it

    async def run(self, ctx: TaskContext) -> Outcome:
        store = image_store(self.app.settings)
        upload = store.incoming_dir / Path(str(ctx.args["upload"])).name
        name, filename = str(ctx.args["name"]), str(ctx.args.get("filename") or "")
        try:
            if not await ctx.run_sync(upload.is_file):
                raise InvalidInput(reason="the uploaded file is gone (the appliance restarted); upload it again")
            try:
                claim = claimed_format(filename)
            except assess.ImageRefused as exc:
                raise InvalidImage(reason=exc.reason) from exc
            await ctx.progress(1, f"Checking {filename or 'the upload'}.")
            stored = await self._ingest(ctx, store, upload, claim)
        finally:
            await ctx.run_sync(lambda: upload.unlink(missing_ok=True))

        def record() -> str:
            with unit_of_work(self.app.session_factory) as db:
                images = GoldenImageRepository(db)
                if images.by_name(name) is not None:
                    raise AlreadyExists(kind="golden image", name=name)
                row = images.add(GoldenImage(
                    name=name, description=str(ctx.args.get("description") or ""), sha256=stored.sha256,
                    size=stored.size, virtual_size=stored.virtual_size, source_format=stored.source_format,
                    original_filename=filename, created_by=ctx.owner, task_id=ctx.task_id,
                ))
                return row.id

        try:
            image_id = await ctx.run_sync(record)
        except AlreadyExists:
            await ctx.run_sync(self._forget_unused, stored)
            raise
        ctx.set_result(golden_image_uri(image_id), name, CATEGORY)
        await ctx.progress(100, f"Golden image {name} added ({stored.size} bytes, sha256 {stored.sha256[:12]}...).")
        return Outcome(status=f"Golden image {name} added.")

    async def _ingest(self, ctx: TaskContext, store: ImageStore, upload: Path, claim: str | None) -> StoredImage:
        """store.ingest in a worker thread, its conversion percent reported as the task's (2-95)."""
        latest = [0.0]  # written by qemu-img's output reader thread, read here
        job = asyncio.ensure_future(ctx.run_sync(lambda: store.ingest(
            upload, claimed=claim, on_progress=lambda percent: latest.__setitem__(0, percent),
            max_bundle_bytes=self.app.settings.images.max_virtual_size)))
        try:
            while not job.done():
                await asyncio.wait([job], timeout=PROGRESS_INTERVAL_S)
                await ctx.progress(2 + int(latest[0] * 0.93), f"Converting to qcow2: {latest[0]:.0f}%.")
            return job.result()
        except assess.ImageRefused as exc:
            raise InvalidImage(reason=exc.reason) from exc
        except qemu_img.QemuImgError as exc:
            raise ImageToolFailed(reason=str(exc)) from exc
        # Cancelled (shutdown): the worker thread runs on to the end of its qemu-img and removes its
        # own work directory; a file it still publishes has no row, and the next start removes it
        # (reconcile_store).

    def _forget_unused(self, stored: StoredImage) -> None:
        with unit_of_work(self.app.session_factory) as db:
            if GoldenImageRepository(db).count_with_checksum(stored.sha256) == 0:
                image_store(self.app.settings).delete_golden(stored.sha256)
