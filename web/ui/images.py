"""The "Images" page: the golden image library (sizes, formats, checksums, downloads, which OS
volumes use each), the OS volumes (clone an image into one, capture one into a new image, export
one as a raw or qcow2 file or over NBD), the recent image tasks with their progress bars, and an
upload form.

The upload goes from the browser straight to ``POST /rest/golden-images`` (multipart, session
cookie and CSRF header, as every change on these pages); ``static/images.js`` shows the bytes
sent with a progress bar, then the page lists the import task, whose bar ui.js keeps current.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from appliance.query import CollectionQuery, Condition, Op
from appliance.roles import Role
from appliance.services.golden_images import TASK_CAPTURE, TASK_FETCH, TASK_IMPORT, TASK_VERIFY, GoldenImageService
from appliance.services.os_volumes import TASK_CREATE, TASK_EXPORT, OsVolumeService
from appliance.services.tasks import TaskService
from golden_images.store import EXPORT_FORMATS
from web.ui.routes import UiRoute, view

router = APIRouter(route_class=UiRoute, include_in_schema=False)
LISTED = 500  # a library is tens of images; past this the page says how many it left out
RECENT_TASKS = 8


@router.get("/ui/images")
def images_page(request: Request) -> Response:
    with view(request, Role.READ_ONLY) as v:
        tasks = TaskService(v.db, v.ctx.clock)
        service = GoldenImageService(v.db, v.ctx.images, v.ctx.clock, tasks)
        images = service.list(CollectionQuery(count=LISTED))
        volumes = OsVolumeService(v.db, v.ctx.images, v.ctx.clock, tasks).list(CollectionQuery(count=LISTED))
        users: dict[str, list[str]] = {}
        for volume in volumes.members:
            users.setdefault(volume.golden_image_id, []).append(volume.name)
        store, nbd = v.ctx.images, v.ctx.nbd
        exports = {volume.id: [fmt for fmt in EXPORT_FORMATS if store.exported(volume.id, fmt) is not None]
                   for volume in volumes.members}
        nbd_uris = {volume.id: export.uri for volume in volumes.members if (export := nbd.get(volume.id))}
        recent = sorted((task for kind in (TASK_IMPORT, TASK_FETCH, TASK_CAPTURE, TASK_CREATE, TASK_VERIFY, TASK_EXPORT)
                         for task in tasks.list(CollectionQuery(
                             count=RECENT_TASKS, conditions=(Condition("kind", Op.EQ, kind),))).members),
                        key=lambda task: task.created, reverse=True)[:RECENT_TASKS]
        return v.render("images.html", "images", title="Golden images", images=images.members,
                        image_total=images.total, volumes=volumes.members, volume_total=volumes.total,
                        users=users, image_names={i.id: i.name for i in images.members},
                        exports=exports, nbd_uris=nbd_uris,
                        tasks=recent, can_edit=v.may(Role.OPERATOR),
                        free_bytes=service.store.free_bytes(),
                        max_upload=v.ctx.settings.images.max_upload_bytes,
                        import_dirs=[str(d) for d in v.ctx.settings.images.import_dirs])
