"""OS volumes (Image Streamer ``/rest/os-volumes``): a server's disk cloned from a golden image.

A linked clone is a qcow2 overlay on the image's file, made in constant time whatever the image's
size; a full clone is an independent copy (a task with progress, as it reads the whole image).
Both are made by the ``os-volume-create`` task so that every volume is created the same way; the
row appears once the file is in place. Deploy (server profiles) will create them the same way.
"""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.db.base import new_id
from appliance.db.session import unit_of_work
from appliance.errors import AlreadyExists, ImageToolFailed, InvalidInput, NotFound
from appliance.models import OsVolume, Task
from appliance.query import CollectionQuery
from appliance.repositories.base import Page
from appliance.repositories.golden_images import GoldenImageRepository
from appliance.repositories.os_volumes import OsVolumeRepository
from appliance.services.tasks import ResourceRef, TaskService
from appliance.tasks.handlers import Outcome, TaskContext, TaskHandler
from golden_images import qemu_img
from golden_images.store import ImageStore

CATEGORY = "os-volumes"
TASK_CREATE = "os-volume-create"
PROGRESS_INTERVAL_S = 0.5


def os_volume_uri(volume_id: str) -> str:
    return f"/rest/os-volumes/{volume_id}"


class OsVolumeService:
    def __init__(self, db: Session, store: ImageStore, clock: Clock = system_clock,
                 tasks: TaskService | None = None) -> None:
        self.volumes = OsVolumeRepository(db)
        self.images = GoldenImageRepository(db)
        self.store = store
        self.clock = clock
        self.tasks = tasks or TaskService(db, clock)

    def list(self, query: CollectionQuery) -> Page[OsVolume]:
        return self.volumes.page(query)

    def get(self, volume_id: str) -> OsVolume:
        volume = self.volumes.get(volume_id)
        if volume is None:
            raise NotFound(kind="OS volume", ident=volume_id)
        return volume

    def start_create(self, name: str, golden_image_id: str, size: int | None, full: bool, owner: str) -> Task:
        if not name.strip():
            raise InvalidInput(reason="an OS volume needs a name")
        if self.volumes.by_name(name) is not None:
            raise AlreadyExists(kind="OS volume", name=name)
        image = self.images.get(golden_image_id)
        if image is None:
            raise NotFound(kind="golden image", ident=golden_image_id)
        if size is not None and size < image.virtual_size:
            raise InvalidInput(reason=f"an OS volume cannot be smaller than its golden image "
                                      f"({image.virtual_size} bytes)")
        return self.tasks.create(
            kind=TASK_CREATE, name="Create OS volume", owner=owner,
            args={"name": name, "goldenImageId": image.id, "size": size, "full": full},
            resource=ResourceRef(uri=None, name=name, category=CATEGORY),
        )

    def delete(self, volume_id: str) -> None:
        volume = self.get(volume_id)
        self.volumes.delete(volume)
        self.store.delete_volume(volume.id)


class OsVolumeCreateTask(TaskHandler):
    kind: ClassVar[str] = TASK_CREATE
    resumable: ClassVar[bool] = True  # starting again is always correct: nothing is published half-made

    async def run(self, ctx: TaskContext) -> Outcome:
        store = self.app.images
        name, full = str(ctx.args["name"]), bool(ctx.args.get("full"))
        size = ctx.args.get("size")

        def image() -> tuple[str, int]:
            with unit_of_work(self.app.session_factory) as db:
                found = GoldenImageRepository(db).get(str(ctx.args["goldenImageId"]))
                if found is None:
                    raise NotFound(kind="golden image", ident=str(ctx.args["goldenImageId"]))
                return found.sha256, found.virtual_size

        sha256, image_size = await ctx.run_sync(image)
        volume_id = new_id()
        await ctx.progress(1, "Making a full copy of the golden image." if full else "Making a linked clone.")
        try:
            await ctx.run_with_progress(lambda progress: store.create_volume(
                sha256, volume_id, full=full, size=int(size) if size is not None else None, on_progress=progress),
                1, 98, "Copying" if full else "Cloning", PROGRESS_INTERVAL_S)
        except qemu_img.QemuImgError as exc:
            raise ImageToolFailed(reason=str(exc)) from exc
        except (ValueError, FileNotFoundError) as exc:
            raise InvalidInput(reason=str(exc)) from exc
        virtual = int(size) if size is not None else image_size  # create_volume never shrinks

        def record() -> None:
            with unit_of_work(self.app.session_factory) as db:
                volumes = OsVolumeRepository(db)
                if volumes.by_name(name) is not None:
                    raise AlreadyExists(kind="OS volume", name=name)
                volumes.add(OsVolume(id=volume_id, name=name, golden_image_id=str(ctx.args["goldenImageId"]),
                                     size=virtual, full_clone=full, created_by=ctx.owner, task_id=ctx.task_id))

        try:
            await ctx.run_sync(record)
        except BaseException:
            await ctx.run_sync(store.delete_volume, volume_id)
            raise
        ctx.set_result(os_volume_uri(volume_id), name, CATEGORY)
        await ctx.progress(100, f"OS volume {name} created ({'full copy' if full else 'linked clone'}).")
        return Outcome(status=f"OS volume {name} created.")
