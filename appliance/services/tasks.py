"""Tasks as the API sees them: create, read, list, cancel. The runner's side is in
appliance/tasks/runner.py; both write through TaskRepository."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.errors import ApplianceError, InvalidTaskState, NotFound, TaskCancelled
from appliance.models import Task
from appliance.query import CollectionQuery
from appliance.repositories.base import Page
from appliance.repositories.tasks import TaskRepository
from appliance.tasks.states import ACTIVE_STATES, TaskState


@dataclass(frozen=True)
class ResourceRef:
    """The resource a task works on (OneView ``associatedResource``)."""

    uri: str | None
    name: str | None
    category: str | None


def error_entry(error: ApplianceError) -> dict[str, Any]:
    """A OneView ``taskErrors`` entry."""
    return {
        "errorCode": error.error_code,
        "message": error.message,
        "details": error.details,
        "recommendedActions": error.recommended_actions,
        "nestedErrors": [],
        "errorSource": None,
        "data": {},
    }


class TaskService:
    def __init__(self, db: Session, clock: Clock = system_clock, notify: Callable[[], None] | None = None) -> None:
        self.db = db
        self.tasks = TaskRepository(db)
        self.clock = clock
        self._notify = notify

    def create(
        self,
        kind: str,
        name: str,
        owner: str,
        args: dict[str, Any] | None = None,
        resource: ResourceRef | None = None,
        task_type: str = "User",
    ) -> Task:
        """Queue a task for the runner; it starts once this transaction commits."""
        now = self.clock()
        task = Task(
            kind=kind,
            name=name,
            owner=owner,
            args=args or {},
            task_type=task_type,
            state=TaskState.NEW,
            status="Queued.",
            created=now,
            modified=now,
            resource_uri=resource.uri if resource else None,
            resource_name=resource.name if resource else None,
            resource_category=resource.category if resource else None,
        )
        self.tasks.add(task)
        self.tasks.add_progress(task, "Queued.", now)
        self._notify_after_commit()
        return task

    def get(self, task_id: str) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise NotFound(kind="task", ident=task_id)
        return task

    def children(self, task_id: str) -> list[Task]:
        return self.tasks.children(task_id)

    def list(self, query: CollectionQuery) -> Page[Task]:
        return self.tasks.page(query)

    def cancel(self, task_id: str, user: str) -> Task:
        """Ask for a task to stop. A queued task ends at once; a running one when its runner sees
        the request (within a heartbeat); a finished one cannot be cancelled."""
        task = self.get(task_id)
        if task.state not in ACTIVE_STATES or task.inline:
            raise InvalidTaskState(task=task.name, state=task.state, action="cancelled")
        now = self.clock()
        if task.state == TaskState.NEW:
            task.state = TaskState.TERMINATED
            task.status = f"Cancelled by {user}."
            task.completed = now
            task.errors = [error_entry(TaskCancelled(user=user))]
            self.tasks.add_progress(task, f"Cancelled by {user} before it started.", now)
        else:
            task.cancel_requested_by = user
            task.state = TaskState.STOPPING
            self.tasks.add_progress(task, f"Cancellation requested by {user}.", now)
            self._notify_after_commit()
        task.modified = now
        return task

    def counts(self) -> dict[str, int]:
        return self.tasks.count_by_state()

    def _notify_after_commit(self) -> None:
        if self._notify is not None:
            notify = self._notify
            event.listen(self.db, "after_commit", lambda _session: notify(), once=True)
