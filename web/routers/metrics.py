"""``/metrics`` for Prometheus. Needs credentials like everything else: Prometheus sends an API
token as ``authorization: Bearer ...`` (its ``authorization.credentials`` setting)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from web.deps import ReadOnly
from web.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics")
def metrics(request: Request, _: ReadOnly) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
