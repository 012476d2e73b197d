"""``/rest/os-volumes``: list and read (as Image Streamer), plus Ingot's create (a task: linked
clone in constant time, or a full copy), delete, export as a raw or qcow2 file (a task, then a
download with Range support and its sha256 in ``X-Checksum-Sha256``), export over NBD, and
personalize with a deployment plan (a task running its build plan; the run's log at
``/rest/os-volumes/archive/{id}``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from appliance.services.os_volumes import CATEGORY, OsVolumeService
from appliance.services.personalize import PersonalizeService
from appliance.services.tasks import TaskService
from web.collection import QueryDep, envelope
from web.deps import AppDep, DbDep, Operator, ReadOnly
from web.etag import resource_response
from web.routers.common import accepted
from web.schemas.os_volumes import (
    OsVolumeCreate,
    OsVolumeExport,
    OsVolumePersonalize,
    nbd_export_public,
    os_volume_public,
)

router = APIRouter(tags=["os-volumes"])
PATH = "/rest/os-volumes"


def _service(db: DbDep, ctx: AppDep) -> OsVolumeService:
    return OsVolumeService(db, ctx.images, ctx.clock, TaskService(db, ctx.clock, ctx.wakeup.notify), ctx.nbd)


@router.get(PATH)
def list_os_volumes(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    page = _service(db, ctx).list(params.query)
    return envelope(PATH, CATEGORY, "OeVolumeCollection", page,
                    lambda volume: os_volume_public(volume, ctx.nbd.get(volume.id)), params)


@router.post(PATH, status_code=202)
def create_os_volume(body: OsVolumeCreate, db: DbDep, ctx: AppDep, principal: Operator) -> Response:
    task = _service(db, ctx).start_create(body.name, body.golden_image_id(), body.size, body.full_clone,
                                          principal.name)
    return accepted(task)


@router.get(PATH + "/archive/{volume_id}")
def os_volume_log(volume_id: str, db: DbDep, ctx: AppDep, _: ReadOnly) -> PlainTextResponse:
    """The log of the last build plan run on the volume, passwords masked (Image Streamer's archive)."""
    service = PersonalizeService(db, ctx.images, ctx.secrets, ctx.clock, nbd=ctx.nbd)
    return PlainTextResponse(service.log_text(volume_id))


@router.post(PATH + "/{volume_id}/personalize", status_code=202)
def personalize_os_volume(volume_id: str, body: OsVolumePersonalize, db: DbDep, ctx: AppDep,
                          principal: Operator) -> Response:
    """Ingot's: run a deployment plan's build plan on the volume (a task); values are checked first."""
    service = PersonalizeService(db, ctx.images, ctx.secrets, ctx.clock,
                                 TaskService(db, ctx.clock, ctx.wakeup.notify), ctx.nbd)
    return accepted(service.start(volume_id, body.deployment_plan_uri, body.attributes(), principal.name))


@router.get(PATH + "/{volume_id}")
def get_os_volume(volume_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    return resource_response(request, os_volume_public(_service(db, ctx).get(volume_id), ctx.nbd.get(volume_id)))


@router.delete(PATH + "/{volume_id}", status_code=204)
def delete_os_volume(volume_id: str, db: DbDep, ctx: AppDep, _: Operator) -> Response:
    _service(db, ctx).delete(volume_id)
    return Response(status_code=204)


@router.post(PATH + "/{volume_id}/export", status_code=202)
def export_os_volume(volume_id: str, body: OsVolumeExport, db: DbDep, ctx: AppDep, principal: Operator) -> Response:
    """Ingot's: flatten the volume into a raw or qcow2 file and checksum it (a task)."""
    return accepted(_service(db, ctx).start_export(volume_id, body.format, principal.name))


@router.api_route(PATH + "/{volume_id}/export/{fmt}", methods=["GET", "HEAD"])
def download_os_volume(volume_id: str, fmt: str, db: DbDep, ctx: AppDep, _: ReadOnly) -> FileResponse:
    """The volume's current export: Range requests resume or split a download; the checksum is of
    the whole file."""
    service = _service(db, ctx)
    volume = service.get(volume_id)
    exported = service.export_file(volume_id, fmt)
    return FileResponse(exported.path, media_type="application/octet-stream", filename=f"{volume.name}.{fmt}",
                        headers={"X-Checksum-Sha256": exported.sha256})


@router.post(PATH + "/{volume_id}/nbd", status_code=201)
def start_nbd_export(volume_id: str, db: DbDep, ctx: AppDep, _: Operator) -> JSONResponse:
    """Ingot's: serve the live volume over NBD, read-write, to one client at a time."""
    export = _service(db, ctx).start_nbd(volume_id)
    return JSONResponse(nbd_export_public(export), status_code=201)


@router.get(PATH + "/{volume_id}/nbd")
def get_nbd_export(volume_id: str, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    return nbd_export_public(_service(db, ctx).nbd_export(volume_id))


@router.delete(PATH + "/{volume_id}/nbd", status_code=204)
def stop_nbd_export(volume_id: str, db: DbDep, ctx: AppDep, _: Operator) -> Response:
    _service(db, ctx).stop_nbd(volume_id)
    return Response(status_code=204)
