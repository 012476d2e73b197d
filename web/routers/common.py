"""Helpers shared by routers."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from appliance.models import Task
from web.schemas.tasks import task_public, task_uri


def accepted(task: Task) -> JSONResponse:
    """202 + ``Location: /rest/tasks/{id}`` + the task body: what the HPE SDK's TaskMonitor expects."""
    return JSONResponse(task_public(task), status_code=202, headers={"Location": task_uri(task.id)})
