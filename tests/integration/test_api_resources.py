"""Collections (paging, filter, sort), users and tokens, alerts, the audit log and metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.services.alerts import AlertService
from appliance.services.tasks import TaskService
from tests.conftest import login


def _tasks(ctx: AppContext, names: list[str]) -> None:
    with unit_of_work(ctx.session_factory) as db:
        for name in names:
            TaskService(db).create(kind="test-slow", name=name, owner="Administrator")


def test_paging_follows_next_page_until_null(api: TestClient, admin_headers: dict[str, str], ctx: AppContext) -> None:
    _tasks(ctx, [f"task-{i}" for i in range(7)])
    seen, uri = [], "/rest/tasks?start=0&count=3"
    pages = 0
    while uri:
        page = api.get(uri, headers=admin_headers).json()
        assert page["total"] == 7 and page["category"] == "tasks"
        seen += [m["name"] for m in page["members"]]
        uri, pages = page["nextPageUri"], pages + 1
    assert pages == 3 and sorted(seen) == sorted(f"task-{i}" for i in range(7))
    last = api.get("/rest/tasks?start=6&count=3", headers=admin_headers).json()
    assert last["nextPageUri"] is None and last["prevPageUri"] == "/rest/tasks?start=3&count=3"
    everything = api.get("/rest/tasks?start=0&count=-1", headers=admin_headers).json()
    assert everything["count"] == 7 and everything["nextPageUri"] is None


def test_filter_forms_and_sort(api: TestClient, admin_headers: dict[str, str], ctx: AppContext) -> None:
    _tasks(ctx, ["alpha", "Beta", "gamma"])

    def names(**params: object) -> list[str]:
        page = api.get("/rest/tasks", params=params, headers=admin_headers).json()
        return [m["name"] for m in page["members"]]

    assert names(filter="\"name='beta'\"") == ["Beta"]  # the SDK's get_by form, case-insensitive
    assert names(filter="name=alpha") == ["alpha"]
    assert names(filter="name matches 'a%'", sort="name:ascending") == ["alpha"]
    assert names(filter="name<>'alpha'", sort="name:descending") == ["gamma", "Beta"]
    assert names(filter=["taskState='New'", "name='gamma'"]) == ["gamma"]  # several filters: AND
    assert names(filter="taskState='New' AND name='Beta'") == ["Beta"]
    assert names(filter="percentComplete>=50") == []
    assert names(filter="associatedResource.resourceUri=null", sort="name:asc") == ["Beta", "alpha", "gamma"]


def test_user_lifecycle_and_last_admin(api: TestClient, admin_headers: dict[str, str]) -> None:
    created = api.post("/rest/users", headers=admin_headers, json={
        "userName": "alice", "password": "Alice-pass-1", "fullName": "Alice",
        "permissions": [{"roleName": "Operator", "scopeUri": None}]})
    assert created.status_code == 201
    body = created.json()
    assert body["permissions"] == [{"roleName": "Operator", "scopeUri": None}]
    assert "password" not in str(body).lower().replace("passwordchanged", "")
    dup = api.post("/rest/users", headers=admin_headers, json={"userName": "ALICE", "password": "Alice-pass-2"})
    assert dup.status_code == 409 and dup.json()["errorCode"] == "DUPLICATE_NAME"
    weak = api.post("/rest/users", headers=admin_headers, json={"userName": "bob", "password": "short"})
    assert weak.status_code == 400 and weak.json()["errorCode"] == "PASSWORD_POLICY"

    alice = login(api, "alice", "Alice-pass-1")
    # self-service password change needs the current password, and ends existing sessions
    wrong = api.put("/rest/users/alice", headers=alice, json={"password": "Alice-pass-9", "currentPassword": "x"})
    assert wrong.status_code == 401
    assert api.put("/rest/users/alice", headers=alice,
                   json={"password": "Alice-pass-9", "currentPassword": "Alice-pass-1"}).status_code == 200
    assert api.get("/rest/tasks", headers=alice).status_code == 401
    alice = login(api, "alice", "Alice-pass-9")
    assert api.put("/rest/users/alice", headers=alice, json={"role": "Infrastructure administrator"}).status_code == 403
    assert api.get("/rest/users/Administrator", headers=alice).status_code == 403

    # disabling ends sessions; the last administrator is protected
    assert api.put("/rest/users/alice", headers=admin_headers, json={"enabled": False}).status_code == 200
    assert api.get("/rest/tasks", headers=alice).status_code == 401
    for attempt in (api.delete("/rest/users/Administrator", headers=admin_headers),
                    api.put("/rest/users/Administrator", headers=admin_headers, json={"role": "Read only"})):
        assert attempt.status_code == 409 and attempt.json()["errorCode"] == "LAST_ADMINISTRATOR"
    assert api.delete("/rest/users/alice", headers=admin_headers).status_code == 204


def test_api_tokens(api: TestClient, admin_headers: dict[str, str]) -> None:
    made = api.post("/rest/api-tokens", headers=admin_headers, json={"name": "prometheus", "expiresInDays": 30})
    assert made.status_code == 201
    token, token_id = made.json()["token"], made.json()["id"]
    listed = api.get("/rest/api-tokens", headers=admin_headers).json()["members"]
    assert [t["name"] for t in listed] == ["prometheus"] and "token" not in listed[0]
    bearer = {"Authorization": f"Bearer {token}"}
    metrics = api.get("/metrics", headers=bearer)
    assert metrics.status_code == 200 and "ingot_http_requests_total" in metrics.text
    assert api.get("/rest/tasks", headers={"auth": token}).status_code == 200
    assert api.put("/rest/login-sessions", headers={"auth": token}).status_code == 401  # not a session
    assert api.delete(f"/rest/api-tokens/{token_id}", headers=admin_headers).status_code == 204
    assert api.get("/metrics", headers=bearer).status_code == 401
    assert api.get("/metrics").status_code == 401


def test_alerts(api: TestClient, admin_headers: dict[str, str], ctx: AppContext) -> None:
    with unit_of_work(ctx.session_factory) as db:
        svc = AlertService(db)
        svc.raise_alert("Test.Disk", "Critical", "disk full", "free space", resource_uri="/rest/x/1")
        svc.raise_alert("Test.Disk", "Critical", "disk still full", resource_uri="/rest/x/1")  # same: counted
        svc.raise_alert("Test.Other", "Warning", "something else")
    page = api.get("/rest/alerts", params={"filter": "severity='Critical'"}, headers=admin_headers).json()
    assert page["total"] == 1
    alert = page["members"][0]
    assert (alert["count"], alert["description"], alert["alertState"]) == (2, "disk still full", "Active")
    cleared = api.put(alert["uri"], headers=admin_headers, json={"alertState": "Cleared"}).json()
    assert cleared["alertState"] == "Cleared" and cleared["clearedByUser"] == "Administrator"
    active = api.get("/rest/alerts", params={"filter": "alertState='Active'"}, headers=admin_headers).json()
    assert [a["alertTypeID"] for a in active["members"]] == ["Test.Other"]


def test_audit_log_records_state_changes(api: TestClient, admin: str) -> None:
    api.post("/rest/login-sessions", json={"userName": "Administrator", "password": "wrong-password"})
    headers = login(api)
    api.post("/rest/backups", headers=headers, json={})
    api.post("/rest/users", headers=headers, json={"userName": "bad"})  # 400
    api.get("/rest/tasks", headers=headers)  # reads are not audited
    entries = api.get("/rest/audit-logs", params={"sort": "timestamp:ascending"}, headers=headers).json()["members"]
    summary = [(e["userName"], e["action"], e["statusCode"], e["result"]) for e in entries]
    assert summary == [
        ("Administrator", "POST /rest/login-sessions", 401, "Failure"),
        ("Administrator", "POST /rest/login-sessions", 200, "Success"),
        ("Administrator", "POST /rest/backups", 202, "Success"),
        ("Administrator", "POST /rest/users", 400, "Failure"),
    ]
    assert entries[2]["resourceUri"].startswith("/rest/tasks/")
    assert "wrong-password" not in str(entries)
