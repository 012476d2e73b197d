"""Public endpoints: API version discovery and a health probe."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

import appliance
from web.deps import AppDep, DbDep

router = APIRouter(tags=["version"])


@router.get("/rest/version")
def version(ctx: AppDep) -> dict[str, int]:
    return {"currentVersion": ctx.settings.api.current_version, "minimumVersion": ctx.settings.api.minimum_version}


@router.get("/rest/health")
def health(db: DbDep) -> dict[str, Any]:
    """Liveness for load balancers and the demo: no secrets, just whether the database answers."""
    db.execute(text("SELECT 1"))
    return {"status": "OK", "version": appliance.__version__}
