"""``/rest/audit-logs``: every state-changing call, for administrators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from appliance.services.audit import AuditService
from web.collection import QueryDep, envelope
from web.deps import Admin, AppDep, DbDep
from web.schemas.audit import audit_public

router = APIRouter(tags=["audit"])


@router.get("/rest/audit-logs")
def list_audit(params: QueryDep, db: DbDep, ctx: AppDep, _: Admin) -> dict[str, Any]:
    page = AuditService(db, ctx.clock).list(params.query)
    return envelope("/rest/audit-logs", "audit-logs", "AuditLogCollection", page, audit_public, params)


@router.get("/rest/audit-logs/{entry_id}")
def get_audit(entry_id: str, db: DbDep, ctx: AppDep, _: Admin) -> dict[str, Any]:
    return audit_public(AuditService(db, ctx.clock).get(entry_id))
