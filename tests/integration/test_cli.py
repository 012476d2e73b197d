"""The ``ingot`` client commands as a user runs them: a subprocess against a live appliance.

Each test gets its own appliance (``live``) and its own session file under tmp_path
(``INGOT_CLI_CONFIG``); the process environment's other INGOT_* variables are dropped.
"""

from __future__ import annotations

import json
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.db.session import make_engine, make_session_factory, unit_of_work
from appliance.services.tasks import TaskService
from tests.support.cli import Cli
from tests.support.live import ADMIN_PASSWORD, LiveAppliance

pytestmark = [pytest.mark.slow, pytest.mark.one_backend]

READER_PASSWORD = "Reader-pass-1"


def queue_task(live: LiveAppliance, kind: str, **args: object) -> str:
    """Insert a task straight into the appliance's database; its runner picks it up."""
    engine = make_engine(live.database_url or f"sqlite:///{live.home / 'ingot.db'}")
    try:
        with unit_of_work(make_session_factory(engine)) as db:
            return TaskService(db).create(kind=kind, name=f"{kind} task", owner="Administrator", args=args).id
    finally:
        engine.dispose()


def wait_for(cli: Cli, task_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = cli.json("tasks", "show", task_id)
        if until(task):
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} never reached the expected state: {task}")
        time.sleep(0.1)


def assert_no_secret(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr


def test_login_wrong_password_then_ok_with_a_private_session_file(cli: Cli) -> None:
    wrong = cli.login(password="not-the-password")
    assert wrong.returncode == 3
    assert "Invalid user name or password" in wrong.stderr
    assert wrong.stdout == ""
    assert not cli.config.exists()
    assert_no_secret(wrong, "not-the-password")

    unverified = cli("login", "--host", cli.live.url, "--password-stdin", input=ADMIN_PASSWORD + "\n")
    assert unverified.returncode == 1
    assert "TLS verification" in unverified.stderr and "--ca-cert" in unverified.stderr
    assert not cli.config.exists()

    ok = cli.login()
    assert ok.returncode == 0, ok.stderr
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config.parent.stat().st_mode) == 0o700
    stored = json.loads(cli.config.read_text())
    assert stored["url"] == cli.live.url and stored["caCert"] == str(cli.ca_cert) and stored["verify"] is True
    assert_no_secret(ok, ADMIN_PASSWORD, stored["sessionID"])

    insecure = cli("login", "--host", cli.live.url, "--password-stdin", "--insecure", input=ADMIN_PASSWORD + "\n")
    assert insecure.returncode == 0, insecure.stderr
    assert json.loads(cli.config.read_text())["verify"] is False


def test_tasks_list_json_is_the_api_collection(admin_cli: Cli) -> None:
    task_id = queue_task(admin_cli.live, "test-slow", steps=1, delay=0.01)
    result = admin_cli("tasks", "list", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    assert body["type"] == "TaskResourceCollectionV2"
    assert task_id in [t["id"] for t in body["members"]]
    assert body["count"] == len(body["members"]) >= 1

    one = admin_cli.json("tasks", "list", "--count", "1")
    assert len(one["members"]) == 1
    bad = admin_cli("tasks", "list", "--state", "Sleeping")
    assert bad.returncode == 2 and "Unknown task state" in bad.stderr


def test_backup_create_wait_and_download(admin_cli: Cli, tmp_path: Path) -> None:
    backup = admin_cli.json("backups", "create", "--wait")
    assert backup["type"] == "BackupFileV200"
    assert backup["downloadUri"] == f"/rest/backups/archive/{backup['id']}"

    target = tmp_path / "downloads" / "backup.tar.gz"
    target.parent.mkdir()
    result = admin_cli("backups", "download", backup["id"], "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert target.stat().st_size == backup["fileSize"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["backup.tar.gz"]  # no temp file left behind
    with tarfile.open(target, "r:gz") as tar:
        names = tar.getnames()
        manifest = tar.extractfile("manifest.json")
        assert manifest is not None
        assert json.load(manifest)["format"] == "ingot-backup/1"
    assert "tables/users.jsonl" in names

    again = admin_cli("backups", "download", backup["id"], "-o", str(target))
    assert again.returncode == 2 and "exists" in again.stderr
    assert backup["id"] in [b["id"] for b in admin_cli.json("backups", "list")["members"]]


def test_tasks_watch_a_slow_task_succeeds(admin_cli: Cli) -> None:
    task_id = queue_task(admin_cli.live, "test-slow", steps=4, delay=0.3)
    result = admin_cli("tasks", "watch", task_id)
    assert result.returncode == 0, result.stderr
    assert f"({task_id}) Completed" in result.stdout
    task = admin_cli.json("tasks", "show", task_id)
    assert (task["taskState"], task["percentComplete"]) == ("Completed", 100)


def test_tasks_watch_a_failing_task_exits_1_with_its_error(admin_cli: Cli) -> None:
    task_id = queue_task(admin_cli.live, "test-fail")
    result = admin_cli("tasks", "watch", task_id)
    assert result.returncode == 1
    assert "the test asked for a failure" in result.stderr
    assert f"({task_id}) ended Error" in result.stderr


def test_tasks_watch_without_ids_follows_the_active_tasks(admin_cli: Cli) -> None:
    ids = [queue_task(admin_cli.live, "test-slow", steps=3, delay=0.2) for _ in range(2)]
    wait_for(admin_cli, ids[0], lambda t: t["taskState"] != "New")
    result = admin_cli("tasks", "watch")
    assert result.returncode == 0, result.stderr
    for task_id in ids:
        assert admin_cli.json("tasks", "show", task_id)["taskState"] == "Completed"
    idle = admin_cli("tasks", "watch")
    assert idle.returncode == 0 and "No active tasks" in idle.stdout


def test_tasks_cancel_a_running_task(admin_cli: Cli) -> None:
    task_id = queue_task(admin_cli.live, "test-slow", steps=100, delay=0.3)
    wait_for(admin_cli, task_id, lambda t: t["taskState"] == "Running")
    result = admin_cli("tasks", "cancel", task_id)
    assert result.returncode == 0, result.stderr
    assert "Cancellation requested" in result.stdout
    watched = admin_cli("tasks", "watch", task_id)
    assert watched.returncode == 1
    assert "Cancelled by Administrator" in watched.stderr
    assert admin_cli.json("tasks", "show", task_id)["taskState"] == "Terminated"
    again = admin_cli("tasks", "cancel", task_id)
    assert again.returncode == 1 and "cannot be cancelled" in again.stderr


def test_users_add_login_and_permission_denied(admin_cli: Cli, tmp_path: Path) -> None:
    added = admin_cli("users", "add", "reader", "--role", "read-only", "--password-stdin", input=READER_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert_no_secret(added, READER_PASSWORD)
    users = {u["userName"]: u["role"] for u in admin_cli.json("users", "list")["members"]}
    assert users["reader"] == "Read only"

    weak = admin_cli("users", "add", "weak", "--role", "operator", "--password-stdin", input="short\n")
    assert weak.returncode == 2 and "PASSWORD_POLICY" in weak.stderr
    unknown = admin_cli("users", "add", "x", "--role", "boss", "--password-stdin", input=READER_PASSWORD + "\n")
    assert unknown.returncode == 2 and "Unknown role" in unknown.stderr

    reader_config = tmp_path / "reader" / "session.json"
    login = admin_cli.login("reader", READER_PASSWORD, config=reader_config)
    assert login.returncode == 0, login.stderr
    denied = admin_cli("backups", "create", config=reader_config)
    assert denied.returncode == 3
    assert "may not perform this action" in denied.stderr and "Read only" in denied.stderr
    assert admin_cli("tasks", "list", config=reader_config).returncode == 0  # reading is allowed

    promoted = admin_cli("users", "set-role", "reader", "admin")
    assert promoted.returncode == 0, promoted.stderr
    assert admin_cli("backups", "create", "--no-wait", config=reader_config).returncode == 0
    removed = admin_cli("users", "remove", "reader")
    assert removed.returncode == 0, removed.stderr
    assert "reader" not in {u["userName"] for u in admin_cli.json("users", "list")["members"]}


def test_tokens_for_automation(admin_cli: Cli, tmp_path: Path) -> None:
    created = admin_cli("tokens", "create", "ci", "--days", "7")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("ingot_") and "\n" not in token
    listed = admin_cli("tokens", "list")
    assert listed.returncode == 0 and "ci" in listed.stdout and token not in listed.stdout

    env = {"INGOT_TOKEN": token, "INGOT_URL": admin_cli.live.url, "INGOT_CA_CERT": str(admin_cli.ca_cert)}
    nowhere = tmp_path / "no-session.json"  # the token alone is enough
    body = admin_cli.json("tasks", "list", env=env, config=nowhere)
    assert body["category"] == "tasks"
    assert not nowhere.exists()

    token_id = admin_cli.json("tokens", "list")["members"][0]["id"]
    assert admin_cli("tokens", "revoke", token_id).returncode == 0
    rejected = admin_cli("tasks", "list", env=env, config=nowhere)
    assert rejected.returncode == 3
    assert "INGOT_TOKEN was not accepted" in rejected.stderr


def test_logout_then_not_logged_in(admin_cli: Cli) -> None:
    session_id = json.loads(admin_cli.config.read_text())["sessionID"]
    result = admin_cli("logout")
    assert result.returncode == 0, result.stderr
    assert not admin_cli.config.exists()
    with admin_cli.live.client(session_id) as client:
        assert client.get("/rest/tasks").status_code == 401  # ended on the appliance too

    after = admin_cli("tasks", "list")
    assert after.returncode == 3
    assert "not logged in" in after.stderr.lower()
    assert "ingot login" in after.stderr
    assert admin_cli("logout").returncode == 0  # nothing to do is not an error
