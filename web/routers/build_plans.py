"""``/rest/build-plans``: create, list, read, replace and delete OS build plans, synchronously
(201 / 200 / 204). The HPE SDK's ``build_plans`` client works unchanged."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from appliance.models import BuildPlan
from appliance.services.build_plans import CATEGORY, PATH, BuildPlanService
from web.collection import QueryDep, envelope
from web.deps import AppDep, DbDep, Operator, ReadOnly
from web.etag import check_if_match, resource_response
from web.schemas.build_plans import BuildPlanCreate, BuildPlanUpdate, build_plan_public

router = APIRouter(tags=["build-plans"])


def _service(db: DbDep, ctx: AppDep) -> BuildPlanService:
    return BuildPlanService(db, ctx.secrets, ctx.clock)


def _rendered(service: BuildPlanService, db: DbDep, request: Request, plan: BuildPlan,
              status_code: int = 200) -> Response:
    db.flush()
    db.refresh(plan)  # the version the database bumped makes the eTag
    return resource_response(request, build_plan_public(plan, service.script_names(plan)), status_code)


@router.get(PATH)
def list_build_plans(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    service = _service(db, ctx)
    return envelope(PATH, CATEGORY, "OeBuildPlanCollectionV5", service.list(params.query),
                    lambda plan: build_plan_public(plan, service.script_names(plan)), params)


@router.post(PATH, status_code=201)
def create_build_plan(body: BuildPlanCreate, request: Request, db: DbDep, ctx: AppDep,
                      principal: Operator) -> Response:
    service = _service(db, ctx)
    return _rendered(service, db, request, service.create(body.draft(), principal.name), 201)


@router.get(PATH + "/{plan_id}")
def get_build_plan(plan_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    service = _service(db, ctx)
    plan = service.get(plan_id)
    return resource_response(request, build_plan_public(plan, service.script_names(plan)))


@router.put(PATH + "/{plan_id}")
def update_build_plan(plan_id: str, body: BuildPlanUpdate, request: Request, db: DbDep, ctx: AppDep,
                      _: Operator) -> Response:
    service = _service(db, ctx)
    check_if_match(request, service.get(plan_id).etag)
    return _rendered(service, db, request, service.update(plan_id, body.draft()))


@router.delete(PATH + "/{plan_id}", status_code=204)
def delete_build_plan(plan_id: str, db: DbDep, ctx: AppDep, _: Operator) -> Response:
    _service(db, ctx).delete(plan_id)
    return Response(status_code=204)
