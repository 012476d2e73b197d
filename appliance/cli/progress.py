"""Live progress on stderr: one bar per task, polled from ``GET /rest/tasks/{id}``, and a bar for
downloads.

A task is finished once its ``taskState`` leaves the active states (the rule the HPE SDK's
TaskMonitor uses too); it succeeded unless it ended ``Error``, ``Terminated`` or ``Killed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Task as Bar
from rich.table import Column
from rich.text import Text

from appliance.cli.client import ApiClient, decode, segment
from appliance.cli.errors import EXIT_FAILED, EXIT_OK, CliError, render_error
from appliance.cli.output import note, print_json, stderr
from appliance.tasks.states import ACTIVE_STATES, FAILED_STATES

TASKS_PATH = "/rest/tasks/"
_STATE_STYLES = {"Completed": "green", "Warning": "yellow"} | {s.value: "red" for s in FAILED_STATES}


def task_id_of(text: str) -> str:
    """Accept an ID or a task URI (e.g. a ``Location`` header)."""
    text = text.strip()
    return text.rsplit(TASKS_PATH, 1)[-1] if TASKS_PATH in text else text


def is_active(task: dict[str, Any]) -> bool:
    return task.get("taskState") in ACTIVE_STATES


def has_failed(task: dict[str, Any]) -> bool:
    return task.get("taskState") in FAILED_STATES


class _StateColumn(ProgressColumn):
    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True, min_width=10))

    def render(self, task: Bar) -> Text:
        state = str(task.fields.get("state", ""))
        return Text(state, style=_STATE_STYLES.get(state, "cyan"))


class _PlainColumn(ProgressColumn):
    """A task field as plain text on one line (not markup: names and messages come from users).

    The column itself may shrink (rich narrows wrappable columns first), and the text is cut with
    an ellipsis, so a long status never squeezes the bar and the state out of a narrow terminal.
    """

    def __init__(self, name: str, *, max_width: int | None = None) -> None:
        self.name = name
        super().__init__(table_column=Column(no_wrap=False, max_width=max_width, overflow="ellipsis"))

    def render(self, task: Bar) -> Text:
        return Text(str(task.fields.get(self.name, "")), no_wrap=True, overflow="ellipsis")


def current_phase(task: dict[str, Any]) -> str:
    """What a task with phases (child tasks) is doing now: ``<phase>: <its status>`` for the
    running phase (or the last one, once none runs), else the task's own status."""
    children = [c for c in task.get("childTasks") or [] if isinstance(c, dict)]
    if not children or not is_active(task):
        return str(task.get("taskStatus") or "")
    running = [c for c in children if is_active(c)]
    phase = running[-1] if running else children[-1]
    status = str(phase.get("taskStatus") or "")
    return f"{phase.get('name')}: {status}" if status else str(phase.get("name") or "")


def watch_tasks(
    client: ApiClient,
    task_ids: Sequence[str],
    *,
    interval: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    console: Console | None = None,
    labels: Mapping[str, str] | None = None,
    status: Callable[[dict[str, Any]], str] | None = None,
) -> list[dict[str, Any]]:
    """Poll each task every ``interval`` seconds, drawing a bar per task, until all have finished.

    :param labels: the name to show for a task ID (default: the task's name).
    :param status: the status text to show for a task body (default: its ``taskStatus``;
        :func:`current_phase` shows the running phase of a task with child tasks).
    :returns: the last body read for each task, in the order given.
    :raises ApiError: if a task cannot be read (e.g. it does not exist).
    """
    ids = list(dict.fromkeys(task_id_of(t) for t in task_ids))
    names = {task_id_of(k): v for k, v in (labels or {}).items()}
    latest: dict[str, dict[str, Any]] = {}
    columns = (_PlainColumn("name", max_width=32), BarColumn(bar_width=24), TaskProgressColumn(), _StateColumn(),
               _PlainColumn("status"))
    with Progress(*columns, console=console or stderr(), refresh_per_second=4) as progress:
        bars = {task_id: progress.add_task(task_id, total=100, name=names.get(task_id) or task_id, state="",
                                           status="")
                for task_id in ids}
        pending = list(ids)
        while pending:
            for task_id in pending:
                task = client.get(f"{TASKS_PATH}{segment(task_id)}")
                latest[task_id] = task
                percent = task.get("percentComplete") or 0
                if task.get("taskState") in ("Completed", "Warning"):
                    percent = 100
                progress.update(bars[task_id], completed=percent,
                                name=names.get(task_id) or task.get("name") or task_id, state=task.get("taskState", ""),
                                status=status(task) if status else task.get("taskStatus") or "")
            pending = [task_id for task_id in pending if is_active(latest[task_id])]
            if pending:
                sleep(interval)
    return [latest[task_id] for task_id in ids]


def report_tasks(tasks: Sequence[dict[str, Any]], console: Console | None = None) -> int:
    """One line per finished task (failures on stderr, with the first task error); the exit code."""
    failed = False
    for task in tasks:
        label = f"{task.get('name', '')} ({task.get('id', '')})"
        if has_failed(task):
            failed = True
            errors = task.get("taskErrors") or []
            first = errors[0] if errors and isinstance(errors[0], dict) else {}
            message = first.get("message") or task.get("taskStatus") or "no error message"
            render_error(CliError(f"Task {label} ended {task.get('taskState')}: {message}",
                                  details=str(first.get("details") or ""),
                                  hints=[str(a) for a in first.get("recommendedActions") or []],
                                  code=first.get("errorCode")), console or stderr())
        else:
            status = task.get("taskStatus")
            note(f"Task {label} {task.get('taskState')}" + (f": {status}" if status else "."))
    return EXIT_FAILED if failed else EXIT_OK


def download_progress(console: Console | None = None) -> Progress:
    return Progress(
        TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(binary_units=True),
        TransferSpeedColumn(), TimeRemainingColumn(), console=console or stderr(),
    )


def start_task(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    """The task ID (from ``Location`` or the body) and body of a 202 answer."""
    task: dict[str, Any] = decode(response)
    task_id = task_id_of(response.headers.get("location") or str(task.get("uri") or task.get("id") or ""))
    if not task_id:
        raise CliError("The appliance accepted the request but named no task.")
    return task_id, task


def follow_task(client: ApiClient, response: httpx.Response, *, wait: bool, what: str,
           as_json: bool = False) -> dict[str, Any] | None:
    """Wait for the task with a progress bar and return its last body; without ``wait`` say how
    to follow it (or print it as JSON) and return ``None``.

    :raises typer.Exit: (1) once the task's error is printed, if it failed.
    """
    task_id, task = start_task(response)
    if not wait:
        if as_json:
            print_json(task)
        else:
            note(f"{what}: task {task_id}. Follow it with `ingot tasks watch {task_id}`.")
        return None
    (task,) = watch_tasks(client, [task_id])
    if has_failed(task):
        raise typer.Exit(report_tasks([task]))
    return task


def follow_created(client: ApiClient, response: httpx.Response, what: str, wait: bool,
                   as_json: bool) -> dict[str, Any] | None:
    """The 202 of a create: follow its task (see follow_task) and return the resource it made."""
    task = follow_task(client, response, wait=wait, what=f"Creating the {what}", as_json=as_json)
    if task is None:
        return None
    uri = (task.get("associatedResource") or {}).get("resourceUri")
    if not uri:
        raise CliError(f"Task {task.get('uri') or task.get('id')} finished but names no {what}.")
    resource: dict[str, Any] = client.get(uri)
    return resource
