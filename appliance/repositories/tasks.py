"""Queries for tasks, including the lease operations the runner relies on.

Claiming and renewing are compare-and-set UPDATEs (``WHERE id = ? AND version = ?`` / ``WHERE
lease_owner = ?``), which behave the same on SQLite and PostgreSQL and need no row locks held
across the work.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from appliance.models import Task, TaskProgress
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged
from appliance.tasks.states import ACTIVE_STATES, TaskState

TASK_FIELDS = {
    "name": Field(Task.name, case_insensitive=True),
    "taskState": Field(Task.state),
    "taskStatus": Field(Task.status, case_insensitive=True),
    "owner": Field(Task.owner, case_insensitive=True),
    "taskType": Field(Task.task_type),
    "percentComplete": Field(Task.percent_complete, Kind.INT),
    "created": Field(Task.created, Kind.TIME),
    "modified": Field(Task.modified, Kind.TIME),
    "associatedResource.resourceUri": Field(Task.resource_uri),
    "associatedResource.resourceName": Field(Task.resource_name, case_insensitive=True),
    "associatedResource.resourceCategory": Field(Task.resource_category),
    "kind": Field(Task.kind),
}


class TaskRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def page(self, query: CollectionQuery) -> Page[Task]:
        return paged(self.db, select(Task), query, TASK_FIELDS, (Task.created.desc(), Task.id))

    def get(self, task_id: str) -> Task | None:
        return self.db.get(Task, task_id)

    def children(self, task_id: str) -> list[Task]:
        stmt = select(Task).where(Task.parent_id == task_id).order_by(Task.created, Task.id)
        return list(self.db.scalars(stmt))

    def add(self, task: Task) -> Task:
        self.db.add(task)
        self.db.flush()
        return task

    def active_of_kind(self, kind: str) -> list[Task]:
        stmt = select(Task).where(Task.kind == kind, Task.state.in_(ACTIVE_STATES), Task.parent_id.is_(None))
        return list(self.db.scalars(stmt))

    def count_by_state(self) -> dict[str, int]:
        rows = self.db.execute(select(Task.state, func.count()).group_by(Task.state))
        return {state: int(n) for state, n in rows}

    def add_progress(self, task: Task, message: str, now: datetime) -> None:
        seq = self.db.scalar(select(func.coalesce(func.max(TaskProgress.seq), 0)).where(
            TaskProgress.task_id == task.id)) or 0
        self.db.add(TaskProgress(task_id=task.id, seq=seq + 1, timestamp=now, status_update=message))
        self.db.flush()

    # --- runner side ---------------------------------------------------------------------------
    def claimable(self, node: str, owner: str, now: datetime, limit: int) -> list[Task]:
        """Top-level tasks nobody works on: new ones, and running ones whose runner is gone —
        either its lease expired, or it was an earlier process on this very node."""
        stmt = (
            select(Task)
            .where(
                Task.inline.is_(False),
                or_(
                    Task.state == TaskState.NEW,
                    and_(
                        Task.state.in_([s.value for s in ACTIVE_STATES if s is not TaskState.NEW]),
                        or_(
                            Task.lease_owner.is_(None),
                            Task.lease_expires < now,
                            and_(Task.lease_owner.like(f"{node}:%"), Task.lease_owner != owner),
                        ),
                    ),
                ),
            )
            .order_by(Task.created, Task.id)
            .limit(limit)
        )
        return list(self.db.scalars(stmt))

    def try_claim(self, task: Task, owner: str, expires: datetime, values: dict[str, Any]) -> bool:
        result = self.db.execute(
            update(Task)
            .where(Task.id == task.id, Task.version == task.version)
            .values(lease_owner=owner, lease_expires=expires, **values)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount) == 1  # type: ignore[attr-defined]

    def renew(self, owner: str, task_ids: Iterable[str], expires: datetime) -> set[str]:
        """Extend our leases; returns the ids we still hold (a missing one was taken from us)."""
        ids = list(task_ids)
        if not ids:
            return set()
        self.db.execute(
            update(Task)
            .where(Task.id.in_(ids), Task.lease_owner == owner)
            .values(lease_expires=expires)
            .execution_options(synchronize_session=False)
        )
        held = select(Task.id).where(Task.id.in_(ids), Task.lease_owner == owner)
        return set(self.db.scalars(held))

    def cancel_requested(self, task_ids: Iterable[str]) -> dict[str, str]:
        stmt = select(Task.id, Task.cancel_requested_by).where(
            Task.id.in_(list(task_ids)), Task.cancel_requested_by.is_not(None)
        )
        return {task_id: str(user) for task_id, user in self.db.execute(stmt)}
