"""Watching tasks (against a scripted API, with no real waiting) and fitting tables to the terminal."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from rich.console import Console

from appliance.cli.client import ApiClient
from appliance.cli.errors import EXIT_FAILED, EXIT_OK
from appliance.cli.output import Column, fitting_columns, size
from appliance.cli.progress import report_tasks, task_id_of, watch_tasks
from appliance.cli.session import Target, TlsSettings

TARGET = Target(url="https://appliance:8443", credential="sid", tls=TlsSettings(), via="session")


def task(tid: str, state: str, percent: int, **extra: Any) -> dict[str, Any]:
    return {"id": tid, "name": f"task {tid}", "taskState": state, "percentComplete": percent,
            "taskStatus": f"{state} at {percent}", "taskErrors": [], **extra}


FAILURE = {"errorCode": "RESOURCE_CONFLICT", "message": "the disk is full",
           "recommendedActions": ["Free some space."]}


class ScriptedApi:
    """Each GET /rest/tasks/{id} returns the next scripted body for that task (the last repeats)."""

    def __init__(self, script: dict[str, list[dict[str, Any]]]) -> None:
        self.script = {tid: iter(bodies) for tid, bodies in script.items()}
        self.last: dict[str, dict[str, Any]] = {}
        self.polls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        tid = request.url.path.rsplit("/", 1)[-1]
        if tid not in self.script:
            body = {"errorCode": "RESOURCE_NOT_FOUND", "message": f"The task {tid} was not found."}
            return httpx.Response(404, json=body)
        self.polls.append(tid)
        self.last[tid] = next(self.script[tid], self.last.get(tid, {}))
        return httpx.Response(200, json=self.last[tid])


@pytest.fixture
def console() -> Console:
    return Console(file=io.StringIO(), width=120, color_system=None)


def run_watch(api: ScriptedApi, ids: list[str], console: Console) -> tuple[list[dict[str, Any]], list[float]]:
    sleeps: list[float] = []
    with ApiClient(TARGET, transport=httpx.MockTransport(api)) as client:
        tasks = watch_tasks(client, ids, interval=0.5, sleep=sleeps.append, console=console)
    return tasks, sleeps


def test_watch_polls_until_every_task_has_finished(console: Console) -> None:
    api = ScriptedApi({
        "a": [task("a", "Running", 30), task("a", "Running", 60), task("a", "Completed", 100)],
        "b": [task("b", "New", 0), task("b", "Error", 40, taskErrors=[FAILURE])],
    })
    tasks, sleeps = run_watch(api, ["a", "/rest/tasks/b", "a"], console)
    assert [t["taskState"] for t in tasks] == ["Completed", "Error"]  # duplicates and URIs folded
    assert sleeps == [0.5, 0.5]
    assert api.polls == ["a", "b", "a", "b", "a"]  # a finished task is not polled again
    assert "Completed" in console.file.getvalue()  # type: ignore[attr-defined]


def test_report_exit_codes_and_failure_messages(console: Console, capsys: pytest.CaptureFixture[str]) -> None:
    ok = [task("a", "Completed", 100), task("w", "Warning", 100)]
    assert report_tasks(ok, console) == EXIT_OK
    assert "Task task a (a) Completed: Completed at 100" in capsys.readouterr().out
    for state in ("Error", "Terminated", "Killed"):
        failed = task("b", state, 40, taskErrors=[FAILURE])
        assert report_tasks([*ok, failed], console) == EXIT_FAILED
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "error: Task task b (b) ended Killed: the disk is full [RESOURCE_CONFLICT]" in text
    assert "hint: Free some space." in text


def test_watching_a_missing_task_is_an_api_error(console: Console) -> None:
    from appliance.cli.errors import ApiError

    with pytest.raises(ApiError) as caught:
        run_watch(ScriptedApi({}), ["nope"], console)
    assert caught.value.status == 404


def test_task_id_of() -> None:
    assert task_id_of("abc") == "abc"
    assert task_id_of(" /rest/tasks/abc ") == "abc"
    assert task_id_of("https://appliance:8443/rest/tasks/abc") == "abc"


# --- tables ----------------------------------------------------------------------------------------
COLUMNS = (
    Column("ID", "id", no_wrap=True),
    Column("Name", "name"),
    Column("Owner", "owner", drop=2),
    Column("Created", "created", no_wrap=True, drop=1),
    Column("Status", "status", drop=3),
)
CELLS = [["0" * 36, "name", "Administrator", "2026-01-01 12:00:00", "a long status line " * 3]]


@pytest.mark.parametrize(("width", "shown"), [
    (200, [0, 1, 2, 3, 4]),
    (93, [0, 1, 2, 3, 4]),  # unwrapped columns at full width, wrapped ones at 12 characters or fewer
    (92, [0, 1, 2, 3]),  # Status goes first
    (70, [0, 1, 3]),  # then Owner
    (60, [0, 1]),  # then Created
    (10, [0, 1]),  # the rest always stays
])
def test_columns_are_dropped_in_order_on_narrow_terminals(width: int, shown: list[int]) -> None:
    assert fitting_columns(COLUMNS, CELLS, width) == shown


def test_size() -> None:
    assert [size(n) for n in (0, 1023, 1024, 5 * 1024 * 1024, None)] == ["0 B", "1023 B", "1.0 KiB", "5.0 MiB", ""]
