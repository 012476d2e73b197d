"""HPE's own SDK (hpeoneview 8.0.0), unchanged, against a real ``ingot serve`` process."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from hpeOneView.exceptions import HPEOneViewException, HPEOneViewTaskError
from hpeOneView.oneview_client import OneViewClient
from hpeOneView.resources.task_monitor import TaskMonitor

from appliance.db.session import make_engine, make_session_factory, unit_of_work
from appliance.services.tasks import TaskService
from tests.support.live import ADMIN_PASSWORD, LiveAppliance

pytestmark = pytest.mark.slow


def sdk_client(live: LiveAppliance, password: str = ADMIN_PASSWORD) -> OneViewClient:
    return OneViewClient({"ip": live.host, "credentials": {"userName": "Administrator", "password": password}})


def queue_task(live: LiveAppliance, kind: str, **args: object) -> str:
    engine = make_engine(live.database_url or f"sqlite:///{live.home / 'ingot.db'}")
    try:
        with unit_of_work(make_session_factory(engine)) as db:
            return TaskService(db).create(kind=kind, name=f"SDK {kind}", owner="Administrator", args=args).id
    finally:
        engine.dispose()


def test_sdk_login_version_tasks_logout(live: LiveAppliance, tmp_path: Path) -> None:
    ov = sdk_client(live)
    connection = ov.connection
    assert connection._apiVersion == 4600  # discovered from /rest/version

    # An async call (202 + Location) that the SDK's own TaskMonitor polls to completion, then
    # fetches the associated resource.
    backup = ov.backups.create()
    assert backup["category"] == "backups"
    assert backup["uri"].startswith("/rest/backups/")
    assert ov.backups.download(backup["downloadUri"], str(tmp_path / "backup.tar.gz")) is True
    with tarfile.open(tmp_path / "backup.tar.gz") as tar:
        assert "manifest.json" in tar.getnames()

    # A task that needs several polls, watched through TaskMonitor directly.
    task_id = queue_task(live, "test-slow", steps=3, delay=0.4)
    task = ov.tasks.get_by_uri(f"/rest/tasks/{task_id}").data
    assert task["taskState"] in ("New", "Running")
    monitor = TaskMonitor(connection)
    monitor.wait_for_task(task, timeout=60)
    done = ov.tasks.get_by_uri(f"/rest/tasks/{task_id}").data
    assert (done["taskState"], done["percentComplete"]) == ("Completed", 100)

    # Listing, with paging and a filter the SDK builds itself.
    tasks = ov.tasks.get_all()
    assert {t["uri"] for t in tasks} >= {f"/rest/tasks/{task_id}", backup["taskUri"]}
    assert len(ov.tasks.get_all(start=0, count=1)) == 1
    completed = ov.tasks.get_all(filter="taskState='Completed'")
    assert completed and all(t["taskState"] == "Completed" for t in completed)

    connection.logout()
    with pytest.raises(HPEOneViewException) as refused:
        ov.tasks.get_all()
    assert refused.value.oneview_response["errorCode"] == "AUTHN_SESSION_INVALID"


def test_sdk_failed_task_raises_task_error(live: LiveAppliance) -> None:
    ov = sdk_client(live)
    task_id = queue_task(live, "test-fail")
    task = ov.tasks.get_by_uri(f"/rest/tasks/{task_id}").data
    with pytest.raises(HPEOneViewTaskError) as failed:
        TaskMonitor(ov.connection).wait_for_task(task, timeout=60)
    assert "the test asked for a failure" in failed.value.msg
    ov.connection.logout()


def test_sdk_wrong_password_gets_401_body(live: LiveAppliance) -> None:
    with pytest.raises(HPEOneViewException) as refused:
        sdk_client(live, password="not-the-password")
    body = refused.value.oneview_response
    assert body["errorCode"] == "AUTHN_AUTH_FAIL"
    assert body["message"] == "Invalid user name or password."
    assert set(body) >= {"errorCode", "message", "details", "recommendedActions", "nestedErrors"}
