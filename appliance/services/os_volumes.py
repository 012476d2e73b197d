"""OS volumes (Image Streamer ``/rest/os-volumes``): a server's disk cloned from a golden image.

A linked clone is a qcow2 overlay on the image's file, made in constant time whatever the image's
size; a full clone is an independent copy (a task with progress, as it reads the whole image).
Both are made by the ``os-volume-create`` task so that every volume is created the same way; the
row appears once the file is in place. Deploy (server profiles) will create them the same way.

Export for deploy, two ways: ``os-volume-export`` flattens the volume into a raw or qcow2 file
with its sha256 (served with Range support, so an agent can resume), and an NBD export serves
the live volume read-write to one client (the network-booted mode). A volume exported over NBD
is being written by its server, so it cannot be deleted, captured or flattened meanwhile.
"""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.db.base import new_id
from appliance.db.session import SessionFactory, unit_of_work
from appliance.errors import AlreadyExists, Conflict, ImageToolFailed, InvalidInput, NotFound
from appliance.models import OsVolume, ServerProfile, Task
from appliance.query import CollectionQuery
from appliance.repositories.base import Page
from appliance.repositories.golden_images import GoldenImageRepository
from appliance.repositories.os_volumes import OsVolumeRepository
from appliance.services.tasks import ResourceRef, TaskService
from appliance.tasks.handlers import Outcome, TaskContext, TaskHandler
from golden_images import qemu_img
from golden_images.nbd import NbdError, NbdExport, NbdExports
from golden_images.store import EXPORT_FORMATS, ExportedVolume, ImageStore

CATEGORY = "os-volumes"
TASK_CREATE = "os-volume-create"
TASK_EXPORT = "os-volume-export"
PROGRESS_INTERVAL_S = 0.5


def os_volume_uri(volume_id: str) -> str:
    return f"/rest/os-volumes/{volume_id}"


def refuse_while_on_nbd(nbd: NbdExports | None, volume: OsVolume, doing: str) -> None:
    """409 when the volume is exported over NBD: its server may be writing it."""
    export = nbd.get(volume.id) if nbd is not None else None
    if export is not None:
        raise Conflict(reason=f"the OS volume {volume.name} is exported over NBD ({export.uri}) and may be "
                              f"written by its server; end the export before you {doing} it")


def volume_name(session_factory: SessionFactory, volume_id: str) -> str:
    """The name of an OS volume, for a task's messages (NotFound if it is gone)."""
    with unit_of_work(session_factory) as db:
        volume = OsVolumeRepository(db).get(volume_id)
        if volume is None:
            raise NotFound(kind="OS volume", ident=volume_id)
        return volume.name


class OsVolumeService:
    def __init__(self, db: Session, store: ImageStore, clock: Clock = system_clock,
                 tasks: TaskService | None = None, nbd: NbdExports | None = None) -> None:
        self.db = db
        self.volumes = OsVolumeRepository(db)
        self.images = GoldenImageRepository(db)
        self.store = store
        self.clock = clock
        self.tasks = tasks or TaskService(db, clock)
        self.nbd = nbd

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
        refuse_while_on_nbd(self.nbd, volume, "delete")
        owner = self.db.scalars(select(ServerProfile).where(ServerProfile.os_volume_id == volume.id)).first()
        if owner is not None:
            raise Conflict(reason=f"the OS volume {volume.name} belongs to the server profile {owner.name}; it goes "
                                  "when the profile is deleted")
        self.volumes.delete(volume)
        self.store.delete_volume(volume.id)

    # -- export as a file ----------------------------------------------------------------------

    @staticmethod
    def _format(fmt: str) -> str:
        if fmt not in EXPORT_FORMATS:
            raise InvalidInput(reason=f"an OS volume is exported as {' or '.join(EXPORT_FORMATS)}, not {fmt!r}")
        return fmt

    def start_export(self, volume_id: str, fmt: str, owner: str) -> Task:
        """Queue the flattening of the volume into a downloadable ``fmt`` file with its checksum."""
        volume = self.get(volume_id)
        refuse_while_on_nbd(self.nbd, volume, "export")
        return self.tasks.create(
            kind=TASK_EXPORT, name="Export OS volume", owner=owner,
            args={"volumeId": volume.id, "format": self._format(fmt)},
            resource=ResourceRef(uri=os_volume_uri(volume.id), name=volume.name, category=CATEGORY),
        )

    def export_file(self, volume_id: str, fmt: str) -> ExportedVolume:
        """The volume's current export in ``fmt``; 404 when there is none (or it is stale)."""
        volume = self.get(volume_id)
        exported = self.store.exported(volume.id, self._format(fmt))
        if exported is None:
            raise NotFound(kind=f"current {fmt} export of OS volume", ident=volume.name,
                           recommended_actions=[f"Export it first: POST {os_volume_uri(volume.id)}/export "
                                                f"with {{\"format\": \"{fmt}\"}}, then download it when the task "
                                                "completes. An export is discarded once the volume is written."])
        return exported

    # -- NBD -----------------------------------------------------------------------------------

    def _exports(self) -> NbdExports:
        if self.nbd is None:
            raise ImageToolFailed(reason="NBD exports are not available in this process")
        return self.nbd

    def nbd_export(self, volume_id: str) -> NbdExport:
        volume = self.get(volume_id)
        export = self._exports().get(volume.id)
        if export is None:
            raise NotFound(kind="NBD export of OS volume", ident=volume.name)
        return export

    def start_nbd(self, volume_id: str) -> NbdExport:
        """Export the volume read-write over NBD to one client (409 if it already is)."""
        volume = self.get(volume_id)
        exports = self._exports()
        if exports.get(volume.id) is not None:
            raise Conflict(reason=f"the OS volume {volume.name} is already exported over NBD")
        try:
            # Named by id: a volume's name may hold characters an nbd:// URI cannot carry.
            return exports.start(volume.id, self.store.volume_path(volume.id), volume.id)
        except NbdError as exc:
            raise ImageToolFailed(reason=str(exc)) from exc

    def stop_nbd(self, volume_id: str) -> None:
        volume = self.get(volume_id)
        if not self._exports().stop(volume.id):
            raise NotFound(kind="NBD export of OS volume", ident=volume.name)


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


class OsVolumeExportTask(TaskHandler):
    """Flatten an OS volume into a raw or qcow2 file with its sha256, for download."""

    kind: ClassVar[str] = TASK_EXPORT
    resumable: ClassVar[bool] = True  # starting over is always correct: the file is published whole

    async def run(self, ctx: TaskContext) -> Outcome:
        volume_id, fmt = str(ctx.args["volumeId"]), str(ctx.args["format"])
        name = await ctx.run_sync(volume_name, self.app.session_factory, volume_id)
        await ctx.progress(1, f"Exporting OS volume {name} as {fmt}.")
        try:
            exported = await ctx.run_with_progress(
                lambda progress: self.app.images.export_volume(volume_id, fmt, progress),
                1, 99, "Flattening and checksumming", PROGRESS_INTERVAL_S)
        except qemu_img.QemuImgError as exc:
            raise ImageToolFailed(reason=str(exc)) from exc
        ctx.set_result(os_volume_uri(volume_id), name, CATEGORY)
        await ctx.progress(100, f"OS volume {name} exported as {fmt} ({exported.size} bytes, "
                                f"sha256 {exported.sha256[:12]}...).")
        return Outcome(status=f"OS volume {name} exported as {fmt}.")
