"""Login sessions, the auth header, API versions and roles over the REST API."""

from __future__ import annotations

from fastapi.testclient import TestClient

from appliance.roles import Role
from tests.conftest import FakeClock, login


def test_version_is_public(api: TestClient) -> None:
    r = api.get("/rest/version")
    assert r.status_code == 200
    assert r.json() == {"currentVersion": 4600, "minimumVersion": 120}


def test_login_logout_and_reuse(api: TestClient, admin: str) -> None:
    headers = login(api)
    assert api.put("/rest/login-sessions", headers=headers).json()["sessionID"] == headers["auth"]
    assert api.get("/rest/tasks", headers=headers).status_code == 200
    assert api.request("DELETE", "/rest/login-sessions", headers=headers, json={}).status_code == 204
    r = api.get("/rest/tasks", headers=headers)
    assert r.status_code == 401
    assert r.json()["errorCode"] == "AUTHN_SESSION_INVALID"


def test_user_name_is_case_insensitive(api: TestClient, admin: str) -> None:
    assert login(api, "administrator")["auth"]


def test_wrong_password_gets_oneview_error(api: TestClient, admin: str) -> None:
    r = api.post("/rest/login-sessions", json={"userName": "Administrator", "password": "nope-nope"})
    assert r.status_code == 401
    body = r.json()
    assert body["errorCode"] == "AUTHN_AUTH_FAIL"
    assert set(body) >= {"errorCode", "message", "details", "recommendedActions", "nestedErrors"}


def test_unknown_user_same_error_as_wrong_password(api: TestClient, admin: str) -> None:
    r = api.post("/rest/login-sessions", json={"userName": "nobody", "password": "whatever1"})
    assert r.status_code == 401
    assert r.json()["errorCode"] == "AUTHN_AUTH_FAIL"


def test_missing_session(api: TestClient) -> None:
    r = api.get("/rest/tasks")
    assert r.status_code == 401
    assert r.json()["errorCode"] == "AUTHN_SESSION_INVALID"


def test_session_expires_when_idle(ctx, admin: str) -> None:  # type: ignore[no-untyped-def]
    from web.app import create_app

    clock = FakeClock()
    ctx.clock = clock
    with TestClient(create_app(ctx), base_url="https://testserver") as client:
        headers = login(client)
        clock.advance(seconds=ctx.settings.sessions.idle_timeout_s - 5)
        assert client.get("/rest/tasks", headers=headers).status_code == 200  # use extends it
        clock.advance(seconds=ctx.settings.sessions.idle_timeout_s - 5)
        assert client.get("/rest/tasks", headers=headers).status_code == 200
        clock.advance(seconds=ctx.settings.sessions.idle_timeout_s + 1)
        r = client.get("/rest/tasks", headers=headers)
        assert r.status_code == 401
        assert r.json()["errorCode"] == "AUTHN_SESSION_INVALID"


def test_api_version_out_of_range(api: TestClient, admin_headers: dict[str, str]) -> None:
    for bad in ("99999", "1", "abc"):
        r = api.get("/rest/tasks", headers={**admin_headers, "X-API-Version": bad})
        assert r.status_code == 400
        assert r.json()["errorCode"] == "UNSUPPORTED_VERSION"
    assert api.get("/rest/tasks", headers={**admin_headers, "X-API-Version": "300"}).status_code == 200


def test_read_only_cannot_create_backup(api: TestClient, make_user) -> None:  # type: ignore[no-untyped-def]
    headers = make_user(Role.READ_ONLY)
    r = api.post("/rest/backups", headers=headers, json={})
    assert r.status_code == 403
    assert r.json()["errorCode"] == "AUTHORIZATION_DENIED"
    assert api.get("/rest/tasks", headers=headers).status_code == 200


def test_revoked_session_is_refused(api: TestClient, admin_headers: dict[str, str]) -> None:
    other = login(api)
    sessions = api.get("/rest/login-sessions", headers=admin_headers).json()["members"]
    assert len(sessions) == 2
    target = next(s for s in sessions if s["id"])["id"]
    assert api.delete(f"/rest/login-sessions/{target}", headers=admin_headers).status_code == 204
    statuses = {api.get("/rest/tasks", headers=h).status_code for h in (admin_headers, other)}
    assert statuses == {200, 401}


def test_housekeeping_purges_expired_sessions(ctx, admin: str) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from appliance.db.session import unit_of_work
    from appliance.models import LoginSession
    from appliance.periodics import purge_expired_sessions
    from appliance.services.auth import AuthService

    clock = FakeClock()
    ctx.clock = clock
    with unit_of_work(ctx.session_factory) as db:
        AuthService(db, ctx.settings.sessions, clock).login("Administrator", admin)
    clock.advance(seconds=10)
    assert purge_expired_sessions(ctx) == 0
    clock.advance(seconds=ctx.settings.sessions.idle_timeout_s)
    assert purge_expired_sessions(ctx) == 1
    with unit_of_work(ctx.session_factory) as db:
        assert db.scalar(select(func.count()).select_from(LoginSession)) == 0
