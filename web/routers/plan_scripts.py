"""``/rest/plan-scripts``: create, list, read, replace and delete plan scripts, plus the SDK's
``retrieve_differences`` and ``get_usedby_and_readonly``. All synchronous (201 / 200 / 204), as
Image Streamer answers plan-script calls; the HPE SDK's ``plan_scripts`` client works unchanged."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response

from appliance.errors import InvalidInput
from appliance.services.plan_scripts import CATEGORY, PATH, PlanScriptService
from web.collection import QueryDep, envelope
from web.deps import AppDep, DbDep, Operator, ReadOnly
from web.etag import check_if_match, resource_response
from web.schemas.plan_scripts import PlanScriptCreate, PlanScriptUpdate, plan_script_public, used_by_public

router = APIRouter(tags=["plan-scripts"])


def _service(db: DbDep, ctx: AppDep) -> PlanScriptService:
    return PlanScriptService(db, ctx.clock)


def _rendered(db: DbDep, request: Request, script: Any, status_code: int = 200) -> Response:
    db.flush()
    db.refresh(script)  # the version the database bumped makes the eTag
    return resource_response(request, plan_script_public(script), status_code)


@router.get(PATH)
def list_plan_scripts(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    page = _service(db, ctx).list(params.query)
    return envelope(PATH, CATEGORY, "PlanScriptCollection", page, plan_script_public, params)


@router.post(PATH, status_code=201)
def create_plan_script(body: PlanScriptCreate, request: Request, db: DbDep, ctx: AppDep,
                       principal: Operator) -> Response:
    script = _service(db, ctx).create(body.draft(), principal.name)
    return _rendered(db, request, script, 201)


@router.post(PATH + "/differences/{script_id}")
def plan_script_differences(script_id: str, db: DbDep, ctx: AppDep, _: ReadOnly,
                            content: Annotated[Any, Body()] = None) -> dict[str, Any]:
    """The SDK's ``retrieve_differences``: the body is the new content as a JSON string (an object
    with ``content`` is accepted too)."""
    if isinstance(content, dict):
        content = content.get("content")
    if not isinstance(content, str):
        raise InvalidInput(reason="send the new content as a JSON string, or as {\"content\": \"...\"}")
    return _service(db, ctx).differences(script_id, content)


@router.get(PATH + "/{script_id}/usedby/readonly")
def plan_script_used_by(script_id: str, db: DbDep, ctx: AppDep, _: ReadOnly) -> list[dict[str, Any]]:
    return used_by_public(_service(db, ctx).used_by(script_id))


@router.get(PATH + "/{script_id}")
def get_plan_script(script_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    return resource_response(request, plan_script_public(_service(db, ctx).get(script_id)))


@router.put(PATH + "/{script_id}")
def update_plan_script(script_id: str, body: PlanScriptUpdate, request: Request, db: DbDep, ctx: AppDep,
                       _: Operator) -> Response:
    service = _service(db, ctx)
    check_if_match(request, service.get(script_id).etag)
    return _rendered(db, request, service.update(script_id, body.draft()))


@router.delete(PATH + "/{script_id}", status_code=204)
def delete_plan_script(script_id: str, db: DbDep, ctx: AppDep, _: Operator) -> Response:
    _service(db, ctx).delete(script_id)
    return Response(status_code=204)
