"""``/rest/os-volumes``: list and read (as Image Streamer), plus Ingot's create (a task: linked
clone in constant time, or a full copy) and delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from appliance.services.os_volumes import CATEGORY, OsVolumeService
from appliance.services.tasks import TaskService
from web.collection import QueryDep, envelope
from web.deps import AppDep, DbDep, Operator, ReadOnly
from web.etag import resource_response
from web.routers.common import accepted
from web.schemas.os_volumes import OsVolumeCreate, os_volume_public

router = APIRouter(tags=["os-volumes"])
PATH = "/rest/os-volumes"


def _service(db: DbDep, ctx: AppDep) -> OsVolumeService:
    return OsVolumeService(db, ctx.images, ctx.clock, TaskService(db, ctx.clock, ctx.wakeup.notify))


@router.get(PATH)
def list_os_volumes(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    page = _service(db, ctx).list(params.query)
    return envelope(PATH, CATEGORY, "OeVolumeCollection", page, os_volume_public, params)


@router.post(PATH, status_code=202)
def create_os_volume(body: OsVolumeCreate, db: DbDep, ctx: AppDep, principal: Operator) -> Response:
    task = _service(db, ctx).start_create(body.name, body.golden_image_id(), body.size, body.full_clone,
                                          principal.name)
    return accepted(task)


@router.get(PATH + "/{volume_id}")
def get_os_volume(volume_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    return resource_response(request, os_volume_public(_service(db, ctx).get(volume_id)))


@router.delete(PATH + "/{volume_id}", status_code=204)
def delete_os_volume(volume_id: str, db: DbDep, ctx: AppDep, _: Operator) -> Response:
    _service(db, ctx).delete(volume_id)
    return Response(status_code=204)
