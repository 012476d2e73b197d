"""The "Images" page: the golden image library (sizes, formats, checksums, downloads), the recent
import tasks with their progress bars, and an upload form.

The upload goes from the browser straight to ``POST /rest/golden-images`` (multipart, session
cookie and CSRF header, as every change on these pages); ``static/images.js`` shows the bytes
sent with a progress bar, then the page lists the import task, whose bar ui.js keeps current.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from appliance.query import CollectionQuery, Condition, Op
from appliance.roles import Role
from appliance.services.golden_images import TASK_IMPORT, GoldenImageService
from appliance.services.tasks import TaskService
from web.ui.routes import UiRoute, view

router = APIRouter(route_class=UiRoute, include_in_schema=False)
LISTED = 500  # a library is tens of images; past this the page says how many it left out


@router.get("/ui/images")
def images_page(request: Request) -> Response:
    with view(request, Role.READ_ONLY) as v:
        tasks = TaskService(v.db, v.ctx.clock)
        service = GoldenImageService(v.db, v.ctx.settings, v.ctx.clock, tasks)
        images = service.list(CollectionQuery(count=LISTED))
        recent = tasks.list(CollectionQuery(count=5, conditions=(Condition("kind", Op.EQ, TASK_IMPORT),)))
        return v.render("images.html", "images", title="Golden images", images=images.members,
                        image_total=images.total, tasks=recent.members, can_edit=v.may(Role.OPERATOR),
                        free_bytes=service.store.free_bytes(),
                        max_upload=v.ctx.settings.images.max_upload_bytes)
