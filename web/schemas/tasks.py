"""Task resources as the HPE SDK's TaskMonitor reads them (TaskResourceV2)."""

from __future__ import annotations

from typing import Any

from appliance.models import Task
from web.schemas.common import resource_header, ts


def task_uri(task_id: str) -> str:
    return f"/rest/tasks/{task_id}"


def task_public(task: Task, children: list[Task] | None = None) -> dict[str, Any]:
    body = resource_header(
        "TaskResourceV2", "tasks", task_uri(task.id), task.id, task.name, task.etag,
        task.created, task.modified, state=None,
        status="OK" if task.state not in ("Error", "Terminated", "Killed") else "Critical",
    )
    body.update({
        "taskState": task.state,
        "taskStatus": task.status,
        "stateReason": task.state_reason,
        "percentComplete": task.percent_complete,
        "computedPercentComplete": task.percent_complete,
        "owner": task.owner,
        "userInitiated": task.task_type == "User",
        "taskType": task.task_type,
        "kind": task.kind,
        "taskErrors": task.errors or [],
        "data": task.data or {},
        "progressUpdates": [
            {"id": p.seq, "timestamp": ts(p.timestamp), "statusUpdate": p.status_update}
            for p in task.progress
        ],
        "associatedResource": {
            "resourceUri": task.resource_uri,
            "resourceName": task.resource_name,
            "resourceCategory": task.resource_category,
            "associationType": "MANAGED_BY",
        },
        "parentTaskUri": task_uri(task.parent_id) if task.parent_id else None,
        "startTime": ts(task.started),
        "completedTime": ts(task.completed),
        "expectedDuration": 0,
        "isCancellable": task.parent_id is None and task.state in ("New", "Running", "Pending", "Starting"),
    })
    if children is not None:
        body["childTasks"] = [
            {"uri": task_uri(c.id), "name": c.name, "taskState": c.state, "percentComplete": c.percent_complete,
             "taskStatus": c.status}
            for c in children
        ]
    return body
