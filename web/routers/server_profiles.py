"""``/rest/server-profiles`` (OneView): create, list, read, update, delete. Create, update and
delete answer 202 with a task (the deploy, a redeploy, the release), as OneView does and HPE's
SDK expects; the delete task is named ``Delete``. ``PATCH`` with the PowerShell library's
``/osDeploymentSettings/reapplyState`` = ``ApplyPending`` redeploys with the current values."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.errors import InvalidInput
from appliance.services.server_profiles import CATEGORY, ServerProfileService
from appliance.services.tasks import TaskService
from web.collection import QueryDep, envelope
from web.deps import AppDep, DbDep, Operator, ReadOnly
from web.etag import check_if_match, resource_response
from web.routers.common import accepted
from web.schemas.server_profiles import profile_spec, server_profile_public

router = APIRouter(tags=["server-profiles"])
PATH = "/rest/server-profiles"


def _service(db: Session, ctx: AppContext) -> ServerProfileService:
    return ServerProfileService(db, ctx.secrets, ctx.clock, TaskService(db, ctx.clock, ctx.wakeup.notify))


async def _body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(reason="the body is not JSON") from None


async def _in_transaction(ctx: AppContext, work: Callable[[ServerProfileService], Response]) -> Response:
    """The routes that read a raw body are async; their database work runs in a worker thread, in
    its own transaction (committed before the 202 goes out), never on the event loop."""

    def run() -> Response:
        with unit_of_work(ctx.session_factory) as db:
            return work(_service(db, ctx))

    return await asyncio.to_thread(run)


@router.get(PATH)
def list_server_profiles(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    return envelope(PATH, CATEGORY, "ServerProfileListV12", _service(db, ctx).list(params.query),
                    server_profile_public, params)


@router.post(PATH, status_code=202)
async def create_server_profile(request: Request, ctx: AppDep, principal: Operator) -> Response:
    spec = profile_spec(await _body(request))
    return await _in_transaction(ctx, lambda service: accepted(service.start_create(spec, principal.name)[1]))


@router.get(PATH + "/{profile_id}")
def get_server_profile(profile_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    return resource_response(request, server_profile_public(_service(db, ctx).get(profile_id)))


@router.put(PATH + "/{profile_id}", status_code=202)
async def update_server_profile(profile_id: str, request: Request, ctx: AppDep, principal: Operator) -> Response:
    spec = profile_spec(await _body(request))

    def work(service: ServerProfileService) -> Response:
        check_if_match(request, service.get(profile_id).etag)
        return accepted(service.start_update(profile_id, spec, principal.name))

    return await _in_transaction(ctx, work)


@router.patch(PATH + "/{profile_id}", status_code=202)
async def patch_server_profile(profile_id: str, request: Request, ctx: AppDep, principal: Operator) -> Response:
    """Only the redeploy request: ``[{"op": "replace", "path": "/osDeploymentSettings/reapplyState",
    "value": "ApplyPending"}]``."""
    operations = await _body(request)
    wanted = [{"op": "replace", "path": "/osDeploymentSettings/reapplyState", "value": "ApplyPending"}]
    if operations != wanted:
        raise InvalidInput(reason=f"the only patch a server profile takes is {json.dumps(wanted)}")

    def work(service: ServerProfileService) -> Response:
        check_if_match(request, service.get(profile_id).etag)
        return accepted(service.start_reapply(profile_id, principal.name))

    return await _in_transaction(ctx, work)


@router.delete(PATH + "/{profile_id}", status_code=202)
def delete_server_profile(profile_id: str, db: DbDep, ctx: AppDep, principal: Operator) -> Response:
    return accepted(_service(db, ctx).start_delete(profile_id, principal.name))
