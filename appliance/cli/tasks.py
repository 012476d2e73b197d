"""``ingot tasks``: list, show, watch (live progress bars) and cancel."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from appliance.cli.client import ApiClient, segment
from appliance.cli.errors import UsageError
from appliance.cli.output import (
    Column,
    JsonOption,
    note,
    print_collection,
    print_json,
    print_resource,
    print_table,
    when,
)
from appliance.cli.progress import report_tasks, task_id_of, watch_tasks
from appliance.tasks.states import FINISHED_STATES, TaskState

app = typer.Typer(help="Tasks: long-running operations and their progress.", no_args_is_help=True)

TASK_COLUMNS = (
    Column("ID", "id", no_wrap=True),
    Column("Name", "name"),
    Column("State", "taskState", no_wrap=True),
    Column("%", "percentComplete", justify="right"),
    Column("Owner", "owner", drop=2),
    Column("Created", lambda t: when(t.get("created")), no_wrap=True, drop=1),
    Column("Status", "taskStatus", drop=3),
)
TASK_FIELDS = (
    Column("ID", "id"),
    Column("Name", "name"),
    Column("State", "taskState"),
    Column("Status", "taskStatus"),
    Column("Progress", lambda t: f"{t.get('percentComplete', 0)}%"),
    Column("Owner", "owner"),
    Column("Kind", "kind"),
    Column("Resource", lambda t: t.get("associatedResource", {}).get("resourceUri")),
    Column("Created", lambda t: when(t.get("created"))),
    Column("Started", lambda t: when(t.get("startTime"))),
    Column("Completed", lambda t: when(t.get("completedTime"))),
    Column("Parent", "parentTaskUri"),
    Column("Error", lambda t: "; ".join(str(e.get("message")) for e in t.get("taskErrors") or [])),
    Column("Cancellable", "isCancellable"),
)
PROGRESS_COLUMNS = (
    Column("Time", lambda p: when(p.get("timestamp")), no_wrap=True),
    Column("Update", "statusUpdate"),
)
# Top-level tasks that have not finished; the filter grammar ANDs terms, so say what they are not.
ACTIVE_FILTER = " AND ".join(f"taskState<>'{state}'" for state in sorted(FINISHED_STATES))


def parse_state(text: str) -> str:
    """A task state, case-insensitively (``running`` → ``Running``)."""
    for state in TaskState:
        if state.value.lower() == text.strip().lower():
            return state.value
    raise UsageError(f"Unknown task state {text!r}.", hints=["Use one of: " + ", ".join(s.value for s in TaskState)])


@app.command("list")
def list_tasks(
    state: Annotated[str | None, typer.Option("--state", help="Only tasks in this state, e.g. Running.")] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List tasks, newest first."""
    params: dict[str, Any] = {"count": count, "sort": "created:descending"}
    if state:
        params["filter"] = f"taskState='{parse_state(state)}'"
    with ApiClient.connect() as client:
        body = client.get("/rest/tasks", params)
    print_collection(body, TASK_COLUMNS, as_json=as_json, empty="No tasks.")


@app.command()
def show(task_id: Annotated[str, typer.Argument(help="Task ID or URI.")], as_json: JsonOption = False) -> None:
    """Show one task with its progress updates."""
    with ApiClient.connect() as client:
        task = client.get(f"/rest/tasks/{segment(task_id_of(task_id))}")
    print_resource(task, TASK_FIELDS, as_json=as_json)
    if not as_json and task.get("progressUpdates"):
        note("")
        print_table(task["progressUpdates"], PROGRESS_COLUMNS, empty="")


@app.command()
def watch(
    task_ids: Annotated[list[str] | None, typer.Argument(
        help="Task IDs or URIs [default: every task that is still active].", show_default=False)] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls.")] = 1.0,
) -> None:
    """Show live progress until the tasks finish; exit 1 if any of them failed."""
    with ApiClient.connect() as client:
        ids = list(task_ids or [])
        if not ids:
            body = client.get("/rest/tasks", {"filter": ACTIVE_FILTER, "sort": "created:ascending"})
            ids = [t["id"] for t in body.get("members", []) if not t.get("parentTaskUri")]
            if not ids:
                note("No active tasks.")
                return
        tasks = watch_tasks(client, ids, interval=interval)
    code = report_tasks(tasks)
    if code:
        raise typer.Exit(code)


@app.command()
def cancel(task_id: Annotated[str, typer.Argument(help="Task ID or URI.")], as_json: JsonOption = False) -> None:
    """Ask a queued or running task to stop (it ends Terminated)."""
    with ApiClient.connect() as client:
        task = client.put(f"/rest/tasks/{segment(task_id_of(task_id))}", {"taskState": "Cancelling"})
    if as_json:
        print_json(task)
    else:
        note(f"Cancellation requested: task {task.get('name')} ({task.get('id')}) is {task.get('taskState')}.")
