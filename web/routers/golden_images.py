"""``/rest/golden-images``: upload (streamed to the image store, imported by a task), list, read,
rename, download the qcow2, delete. The HPE SDK's ``golden_images`` client works unchanged."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.errors import InvalidInput, StoreFull
from appliance.services.golden_images import CATEGORY, GoldenImageService
from appliance.services.server_capture import start_server_capture
from appliance.services.tasks import TaskService
from web.collection import QueryDep, envelope
from web.deps import AppDep, DbDep, Operator, ReadOnly
from web.etag import check_if_match, resource_response
from web.routers.common import accepted
from web.schemas.golden_images import GoldenImageCreate, GoldenImageUpdate, golden_image_public
from web.uploads import receive_file

router = APIRouter(tags=["golden-images"])
PATH = "/rest/golden-images"


def _service(db: DbDep, ctx: AppDep) -> GoldenImageService:
    return GoldenImageService(db, ctx.images, ctx.clock, TaskService(db, ctx.clock, ctx.wakeup.notify))


@router.get(PATH)
def list_golden_images(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    page = _service(db, ctx).list(params.query)
    return envelope(PATH, CATEGORY, "GoldenImageCollection", page, golden_image_public, params)


@router.post(PATH, status_code=202)
async def upload_golden_image(
    request: Request, ctx: AppDep, principal: Operator,
    name: Annotated[str, Query(max_length=255)] = "",
    description: Annotated[str, Query(max_length=4096)] = "",
) -> Response:
    """The HPE SDK's ``upload``: one multipart part ``file``, ``name`` and ``description`` in the
    query. The body streams into the store's incoming/ and an import task takes it from there."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _create_from_json(request, ctx, principal.name)

    def check_name() -> None:
        with unit_of_work(ctx.session_factory) as db:
            GoldenImageService(db, ctx.images, ctx.clock).ensure_name_free(name)

    await asyncio.to_thread(check_name)  # before a long upload, not only after it
    store = ctx.images
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) <= ctx.settings.images.max_upload_bytes:  # (over it: 413, below)
        # The upload, then its qcow2 conversion beside it: room for both, or refuse now.
        needed, free = 2 * int(length), await asyncio.to_thread(store.free_bytes)
        if needed > free:
            raise StoreFull(free=free, needed=needed)
    received = await receive_file(request, store.incoming_dir, max_bytes=ctx.settings.images.max_upload_bytes)

    def start() -> Response:
        try:
            with unit_of_work(ctx.session_factory) as db:
                tasks = TaskService(db, ctx.clock, ctx.wakeup.notify)
                task = GoldenImageService(db, ctx.images, ctx.clock, tasks).start_import(
                    received.path, received.filename, name, description, principal.name)
                return accepted(task)  # rendered while the task's session is open
        except BaseException:
            received.path.unlink(missing_ok=True)
            raise

    return await asyncio.to_thread(start)


async def _create_from_json(request: Request, ctx: AppContext, owner: str) -> Response:
    """The SDK's ``golden_images.create`` with ``imageCapture``: a new golden image from an OS
    volume; or Ingot's import from a URL or a file on the appliance."""
    try:
        body = GoldenImageCreate.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InvalidInput(reason="; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                           for e in exc.errors())) from exc
    imports = body.source_url is not None or body.source_path is not None
    if body.capture() == imports:
        raise InvalidInput(reason="POST /rest/golden-images adds an image by one of: a multipart/form-data upload "
                                  "(part 'file'), capture (imageCapture true, with osVolumeURI or "
                                  "serverHardwareUri), or import (sourceUrl or sourcePath)")
    if body.os_volume_uri and body.server_hardware_uri:
        raise InvalidInput(reason="capture from an OS volume (osVolumeURI) or from a server (serverHardwareUri), "
                                  "not both")

    def start() -> Response:
        with unit_of_work(ctx.session_factory) as db:
            tasks = TaskService(db, ctx.clock, ctx.wakeup.notify)
            service = GoldenImageService(db, ctx.images, ctx.clock, tasks, ctx.nbd)
            if imports:
                task = service.start_fetch(body.name, body.description or "", url=body.source_url,
                                           path=body.source_path, sha256=body.source_checksum,
                                           import_dirs=ctx.settings.images.import_dirs, owner=owner)
            elif body.server_hardware_uri:
                task = start_server_capture(db, ctx.clock, tasks, service, body.name, body.description or "",
                                            body.server_hardware_id(), body.build_plan_uri, body.compress, owner)
            else:
                task = service.start_capture(body.name, body.description or "", body.os_volume_id(),
                                             body.build_plan_uri, body.compress, owner)
            return accepted(task)

    return await asyncio.to_thread(start)


@router.get(PATH + "/archive/{image_id}")
def golden_image_log(image_id: str, db: DbDep, ctx: AppDep, _: ReadOnly) -> FileResponse:
    """What the import or capture that made the image did (Image Streamer's capture-log archive)."""
    return FileResponse(_service(db, ctx).log_path(image_id), media_type="text/plain; charset=utf-8",
                        filename=f"{image_id}.log")


@router.get(PATH + "/{image_id}")
def get_golden_image(image_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    return resource_response(request, golden_image_public(_service(db, ctx).get(image_id)))


@router.put(PATH + "/{image_id}")
def update_golden_image(image_id: str, body: GoldenImageUpdate, request: Request, db: DbDep, ctx: AppDep,
                        _: Operator) -> Response:
    service = _service(db, ctx)
    check_if_match(request, service.get(image_id).etag)
    image = service.update(image_id, body.name, body.description or "")
    db.flush()
    db.refresh(image)
    return resource_response(request, golden_image_public(image))


@router.post(PATH + "/{image_id}/verify", status_code=202)
def verify_golden_image(image_id: str, db: DbDep, ctx: AppDep, principal: Operator) -> Response:
    """Ingot's: read the image's file in full against its checksum (a task; a mismatch fails it and
    raises a critical alert on the image)."""
    return accepted(_service(db, ctx).start_verify(image_id, principal.name))


@router.get(PATH + "/download/{image_id}")
def download_golden_image(image_id: str, db: DbDep, ctx: AppDep, _: ReadOnly) -> FileResponse:
    service = _service(db, ctx)
    image = service.get(image_id)
    return FileResponse(service.file_path(image_id), media_type="application/octet-stream",
                        filename=f"{image.name}.qcow2", headers={"X-Checksum-Sha256": image.sha256})


@router.delete(PATH + "/{image_id}", status_code=204)
def delete_golden_image(image_id: str, db: DbDep, ctx: AppDep, _: Operator) -> Response:
    _service(db, ctx).delete(image_id)
    return Response(status_code=204)
