"""``/rest/tasks``: list, read (with child tasks and progress), cancel."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import Field

from appliance.services.tasks import TaskService
from web.collection import QueryDep, envelope
from web.deps import AppDep, DbDep, Operator, ReadOnly
from web.etag import check_if_match, resource_response
from web.schemas.common import Strict
from web.schemas.tasks import task_public

router = APIRouter(tags=["tasks"])


class TaskUpdate(Strict):
    """OneView cancels a task with ``PUT {"taskState": "Cancelling"}``."""

    task_state: Literal["Cancelling"] = Field(alias="taskState")


@router.get("/rest/tasks")
def list_tasks(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    page = TaskService(db, ctx.clock).list(params.query)
    return envelope("/rest/tasks", "tasks", "TaskResourceCollectionV2", page, task_public, params)


@router.get("/rest/tasks/{task_id}")
def get_task(task_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    svc = TaskService(db, ctx.clock)
    task = svc.get(task_id)
    return resource_response(request, task_public(task, svc.children(task.id)))


@router.put("/rest/tasks/{task_id}")
def cancel_task(task_id: str, body: TaskUpdate, request: Request, db: DbDep, ctx: AppDep,
                principal: Operator) -> Response:
    svc = TaskService(db, ctx.clock, ctx.wakeup.notify)
    check_if_match(request, svc.get(task_id).etag)
    task = svc.cancel(task_id, principal.name)
    db.flush()
    db.refresh(task)
    return resource_response(request, task_public(task, svc.children(task.id)))
