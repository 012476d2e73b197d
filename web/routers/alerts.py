"""``/rest/alerts``: list, read, change state (clear/lock/reactivate), delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from appliance.services.alerts import AlertService
from web.collection import QueryDep, envelope
from web.deps import Admin, AppDep, DbDep, Operator, ReadOnly
from web.etag import check_if_match, resource_response
from web.schemas.alerts import AlertUpdate, alert_public

router = APIRouter(tags=["alerts"])


@router.get("/rest/alerts")
def list_alerts(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    page = AlertService(db, ctx.clock).list(params.query)
    return envelope("/rest/alerts", "alerts", "AlertResourceCollectionV3", page, alert_public, params)


@router.get("/rest/alerts/{alert_id}")
def get_alert(alert_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    return resource_response(request, alert_public(AlertService(db, ctx.clock).get(alert_id)))


@router.put("/rest/alerts/{alert_id}")
def update_alert(alert_id: str, body: AlertUpdate, request: Request, db: DbDep, ctx: AppDep,
                 principal: Operator) -> Response:
    svc = AlertService(db, ctx.clock)
    check_if_match(request, svc.get(alert_id).etag)
    alert = svc.set_state(alert_id, body.alert_state, principal.name)
    db.flush()
    db.refresh(alert)
    return resource_response(request, alert_public(alert))


@router.delete("/rest/alerts/{alert_id}", status_code=204)
def delete_alert(alert_id: str, request: Request, db: DbDep, ctx: AppDep, _: Admin) -> Response:
    svc = AlertService(db, ctx.clock)
    check_if_match(request, svc.get(alert_id).etag)
    svc.delete(alert_id)
    return Response(status_code=204)
