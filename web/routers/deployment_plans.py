"""``/rest/deployment-plans`` (Image Streamer: create, list, read, replace, delete, plus ``osdp``
and ``usedby``) and OneView's read-only ``/rest/os-deployment-plans/`` view of the same rows
(the SDK's URI has a trailing slash). Synchronous (201 / 200 / 204): the HPE SDK accepts either
that or a task; its ``deployment_plans`` and ``os_deployment_plans`` clients work unchanged."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from appliance.models import DeploymentPlan
from appliance.services.deployment_plans import (
    CATEGORY,
    OSDP_CATEGORY,
    OSDP_PATH,
    PATH,
    DeploymentPlanService,
    deployment_plan_uri,
)
from appliance.services.server_profiles import profile_uri
from web.collection import QueryDep, envelope
from web.deps import AppDep, DbDep, Operator, ReadOnly
from web.etag import check_if_match, resource_response
from web.schemas.deployment_plans import (
    DeploymentPlanCreate,
    DeploymentPlanUpdate,
    deployment_plan_public,
    osdp_public,
)

router = APIRouter(tags=["deployment-plans"])


def _service(db: DbDep, ctx: AppDep) -> DeploymentPlanService:
    return DeploymentPlanService(db, ctx.secrets, ctx.clock)


def _public(service: DeploymentPlanService, plan: DeploymentPlan) -> dict[str, Any]:
    build_plan = service.build_plan(plan)
    return deployment_plan_public(plan, build_plan, service.attributes(plan, build_plan))


def _osdp(service: DeploymentPlanService, plan: DeploymentPlan, request: Request, ctx: AppDep) -> dict[str, Any]:
    # The Image Streamer side is this same appliance, at the address the client used.
    address = request.headers.get("host") or request.url.netloc
    return osdp_public(plan, service.attributes(plan), service.golden_image(plan), ctx.node_name, address)


def _rendered(service: DeploymentPlanService, db: DbDep, request: Request, plan: DeploymentPlan,
              status_code: int = 200) -> Response:
    db.flush()
    db.refresh(plan)  # the version the database bumped makes the eTag
    return resource_response(request, _public(service, plan), status_code)


@router.get(PATH)
def list_deployment_plans(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    service = _service(db, ctx)
    return envelope(PATH, CATEGORY, "OEDeploymentPlanCollectionV5", service.list(params.query),
                    lambda plan: _public(service, plan), params)


@router.post(PATH, status_code=201)
def create_deployment_plan(body: DeploymentPlanCreate, request: Request, db: DbDep, ctx: AppDep,
                           principal: Operator) -> Response:
    service = _service(db, ctx)
    return _rendered(service, db, request, service.create(body.draft(), principal.name), 201)


@router.get(PATH + "/{plan_id}")
def get_deployment_plan(plan_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    service = _service(db, ctx)
    return resource_response(request, _public(service, service.get(plan_id)))


@router.put(PATH + "/{plan_id}")
def update_deployment_plan(plan_id: str, body: DeploymentPlanUpdate, request: Request, db: DbDep, ctx: AppDep,
                           _: Operator) -> Response:
    service = _service(db, ctx)
    check_if_match(request, service.get(plan_id).etag)
    return _rendered(service, db, request, service.update(plan_id, body.draft()))


@router.delete(PATH + "/{plan_id}", status_code=204)
def delete_deployment_plan(plan_id: str, db: DbDep, ctx: AppDep, _: Operator) -> Response:
    _service(db, ctx).delete(plan_id)
    return Response(status_code=204)


@router.get(PATH + "/{plan_id}/osdp")
def get_deployment_plan_osdp(plan_id: str, request: Request, db: DbDep, ctx: AppDep,
                             _: ReadOnly) -> dict[str, Any]:
    """The SDK's ``get_osdp()``: the plan as OneView shows it."""
    service = _service(db, ctx)
    return _osdp(service, service.get(plan_id), request, ctx)


@router.get(PATH + "/{plan_id}/usedby")
def get_deployment_plan_used_by(plan_id: str, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    """The SDK's ``get_usedby()``: the server profiles deploying with the plan."""
    service = _service(db, ctx)
    plan = service.get(plan_id)
    return {"uri": deployment_plan_uri(plan.id) + "/usedby", "name": plan.name,
            "serverProfiles": [{"name": p.name, "uri": profile_uri(p.id)} for p in service.used_by(plan.id)],
            "serverProfileTemplates": []}


@router.get(OSDP_PATH)
@router.get(OSDP_PATH + "/")
def list_os_deployment_plans(params: QueryDep, request: Request, db: DbDep, ctx: AppDep,
                             _: ReadOnly) -> dict[str, Any]:
    service = _service(db, ctx)
    return envelope(OSDP_PATH + "/", OSDP_CATEGORY, "OsdpList", service.list(params.query),
                    lambda plan: _osdp(service, plan, request, ctx), params)


@router.get(OSDP_PATH + "/{plan_id}")
def get_os_deployment_plan(plan_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    service = _service(db, ctx)
    return resource_response(request, _osdp(service, service.get(plan_id), request, ctx))
