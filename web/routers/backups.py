"""``/rest/backups``: create (as a task), list, read, download the archive, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import FileResponse

from appliance.errors import InvalidInput
from appliance.services.backups import BackupService
from appliance.services.tasks import TaskService
from web.collection import QueryDep, envelope
from web.deps import Admin, AppDep, DbDep
from web.etag import resource_response
from web.routers.common import accepted
from web.schemas.backups import backup_public

router = APIRouter(tags=["backups"])


def _service(db: DbDep, ctx: AppDep) -> BackupService:
    return BackupService(db, ctx.settings.home, ctx.clock, TaskService(db, ctx.clock, ctx.wakeup.notify))


@router.get("/rest/backups")
def list_backups(params: QueryDep, db: DbDep, ctx: AppDep, _: Admin) -> dict[str, Any]:
    page = _service(db, ctx).list(params.query)
    return envelope("/rest/backups", "backups", "BackupFileListV200", page, backup_public, params)


@router.post("/rest/backups", status_code=202)
def create_backup(db: DbDep, ctx: AppDep, principal: Admin,
                  body: Annotated[dict[str, Any] | None, Body()] = None) -> Response:
    if body:  # the SDK posts {}; parameters here would be a mistake worth reporting
        raise InvalidInput(reason="POST /rest/backups takes no parameters")
    task = _service(db, ctx).start(principal.name)
    return accepted(task)


@router.get("/rest/backups/{backup_id}")
def get_backup(backup_id: str, request: Request, db: DbDep, ctx: AppDep, _: Admin) -> Response:
    return resource_response(request, backup_public(_service(db, ctx).get(backup_id)))


@router.get("/rest/backups/archive/{backup_id}")
def download_backup(backup_id: str, db: DbDep, ctx: AppDep, _: Admin) -> FileResponse:
    path = _service(db, ctx).archive_path(backup_id)
    return FileResponse(path, media_type="application/gzip", filename=path.name)


@router.delete("/rest/backups/{backup_id}", status_code=204)
def delete_backup(backup_id: str, db: DbDep, ctx: AppDep, _: Admin) -> Response:
    _service(db, ctx).delete(backup_id)
    return Response(status_code=204)
