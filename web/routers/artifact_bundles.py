"""``/rest/artifact-bundles``: upload a bundle zip (checked by a task), extract it (a task that
imports its artifacts), create one from chosen artifacts (a task), list, read, rename, download,
delete. The HPE SDK's ``artifact_bundles`` client works unchanged for these; its deployment-group
backups are not offered (Ingot has no deployment groups)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError

from appliance.db.session import unit_of_work
from appliance.errors import InvalidInput
from appliance.services.artifact_bundles import CATEGORY, PATH, ArtifactBundleService
from appliance.services.tasks import TaskService
from web.collection import QueryDep, envelope
from web.deps import AppDep, DbDep, Operator, ReadOnly
from web.etag import check_if_match, resource_response
from web.routers.common import accepted
from web.schemas.artifact_bundles import ArtifactBundleCreate, ArtifactBundleUpdate, artifact_bundle_public
from web.uploads import receive_file

router = APIRouter(tags=["artifact-bundles"])


def _service(db: DbDep, ctx: AppDep) -> ArtifactBundleService:
    return ArtifactBundleService(db, ctx.bundles_dir, ctx.clock, TaskService(db, ctx.clock, ctx.wakeup.notify))


def _flag(raw: str | None) -> bool:
    return (raw or "").strip().lower() == "true"


def _body(model: type[Any], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidInput(reason="; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                           for e in exc.errors())) from exc


@router.get(PATH)
def list_artifact_bundles(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    page = _service(db, ctx).list(params.query)
    return envelope(PATH, CATEGORY, "ArtifactsBundleCollection", page, artifact_bundle_public, params)


@router.post(PATH, status_code=202)
async def add_artifact_bundle(request: Request, ctx: AppDep, principal: Operator) -> Response:
    """A multipart upload of a bundle zip (part ``file``; the SDK's ``upload_bundle_from_file``),
    or JSON naming the artifacts of a new bundle (the SDK's ``create``). Both answer with a task."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        received = await receive_file(request, ctx.images.incoming_dir,
                                      max_bytes=ctx.settings.images.max_upload_bytes)

        def start_upload() -> Response:
            try:
                with unit_of_work(ctx.session_factory) as db:
                    return accepted(_service(db, ctx).start_upload(received.path, received.filename, principal.name))
            except BaseException:
                received.path.unlink(missing_ok=True)
                raise

        return await asyncio.to_thread(start_upload)
    body: ArtifactBundleCreate = _body(ArtifactBundleCreate, await request.body())

    def start_create() -> Response:
        with unit_of_work(ctx.session_factory) as db:
            return accepted(_service(db, ctx).start_create(body.selection(), principal.name))

    return await asyncio.to_thread(start_create)


@router.get(PATH + "/download/{bundle_id}")
def download_artifact_bundle(bundle_id: str, db: DbDep, ctx: AppDep, _: ReadOnly) -> FileResponse:
    service = _service(db, ctx)
    bundle = service.get(bundle_id)
    return FileResponse(service.file_path(bundle_id), media_type="application/zip", filename=f"{bundle.name}.zip",
                        headers={"X-Checksum-Sha256": bundle.sha256})


@router.get(PATH + "/{bundle_id}")
def get_artifact_bundle(bundle_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    return resource_response(request, artifact_bundle_public(_service(db, ctx).get(bundle_id)))


@router.put(PATH + "/{bundle_id}")
async def update_artifact_bundle(
    bundle_id: str, request: Request, ctx: AppDep, principal: Operator,
    extract: Annotated[str | None, Query(max_length=8)] = None,
    force_import: Annotated[str | None, Query(alias="forceImport", max_length=8)] = None,
) -> Response:
    """``?extract=true`` imports the bundle's artifacts (a task; the SDK's ``extract`` sends a
    null text/plain body). ``forceImport=true`` replaces artifacts of the same name whose content
    differs; without it they are a 409 conflict, listed. Otherwise: rename (name, description)."""
    raw = await request.body()

    def work() -> Response:
        with unit_of_work(ctx.session_factory) as db:
            service = _service(db, ctx)
            if _flag(extract):
                return accepted(service.start_extract(bundle_id, _flag(force_import), principal.name))
            check_if_match(request, service.get(bundle_id).etag)
            body: ArtifactBundleUpdate = _body(ArtifactBundleUpdate, raw)
            bundle = service.update(bundle_id, body.name, body.description or "")
            db.flush()
            db.refresh(bundle)
            return resource_response(request, artifact_bundle_public(bundle))

    return await asyncio.to_thread(work)


@router.delete(PATH + "/{bundle_id}", status_code=204)
def delete_artifact_bundle(bundle_id: str, db: DbDep, ctx: AppDep, _: Operator) -> Response:
    _service(db, ctx).delete(bundle_id)
    return Response(status_code=204)
