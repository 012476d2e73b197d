"""The web UI's server side through the ASGI app: sign-in, cookies, redirects, CSRF, roles, pages."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.roles import Role
from appliance.services.alerts import AlertService
from appliance.services.tasks import TaskService
from tests.support.live import ADMIN_PASSWORD
from web.deps import UI_COOKIE

ADMIN_PAGES = ("/ui/activity", "/ui/users", "/ui/backups")
READ_PAGES = ("/ui/", "/ui/tasks", "/ui/alerts")


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} field in the page"
    return match.group(1)


def _meta_csrf(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match, "no csrf-token meta tag"
    return match.group(1)


def ui_login(client: TestClient, user: str = "Administrator", password: str = ADMIN_PASSWORD,
             next_url: str | None = None) -> Response:
    page = client.get("/ui/login")
    assert page.status_code == 200
    data = {"user_name": user, "password": password, "csrf": _field(page.text, "csrf")}
    if next_url is not None:
        data["next"] = next_url
    return client.post("/ui/login", data=data, follow_redirects=False)


def _signed_in(client: TestClient) -> str:
    """Log in as Administrator; returns the session's CSRF token (from the page's meta tag)."""
    assert ui_login(client).status_code == 303
    page = client.get("/ui/")
    assert page.status_code == 200
    return _meta_csrf(page.text)


def _user_name(api: TestClient, headers: dict[str, str]) -> str:
    sessions = api.get("/rest/login-sessions", headers=headers).json()["members"]
    return str(sessions[0]["userName"])


def _make_task(ctx: AppContext, name: str = "Example task") -> str:
    with unit_of_work(ctx.session_factory) as db:
        return TaskService(db, ctx.clock).create(kind="test-slow", name=name, owner="Administrator").id


# --- sign in -------------------------------------------------------------------------------------
def test_login_page_has_form_and_security_headers(api: TestClient) -> None:
    r = api.get("/ui/login")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/ui/login"' in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "same-origin"


def test_wrong_password_rerenders_form_with_401(api: TestClient, admin: str) -> None:
    r = ui_login(api, password="not-the-password")
    assert r.status_code == 401
    assert "Invalid user name or password." in r.text
    assert 'action="/ui/login"' in r.text
    assert 'value="Administrator"' in r.text  # the user name is kept, the password is not
    assert not any(c.startswith(f"{UI_COOKIE}=") for c in r.headers.get_list("set-cookie"))
    assert api.get("/ui/", follow_redirects=False).status_code == 303


def test_login_sets_strict_session_cookie(api: TestClient, admin: str) -> None:
    r = ui_login(api)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(f"{UI_COOKIE}="))
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes
    page = api.get("/ui/")
    assert page.status_code == 200
    assert 'data-testid="signed-in-user">Administrator<' in page.text
    assert "Infrastructure administrator" in page.text


def test_login_form_without_its_token_is_refused(api: TestClient, admin: str) -> None:
    api.get("/ui/login")
    r = api.post("/ui/login", data={"user_name": "Administrator", "password": ADMIN_PASSWORD, "csrf": "forged"},
                 follow_redirects=False)
    assert r.status_code == 403
    assert not any(c.startswith(f"{UI_COOKIE}=") for c in r.headers.get_list("set-cookie"))


def test_login_is_audited(api: TestClient, admin: str) -> None:
    _signed_in(api)
    page = api.get("/ui/activity")
    assert page.status_code == 200
    assert "POST /ui/login" in page.text
    assert "login (web UI)" in page.text


# --- redirects -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [*READ_PAGES, *ADMIN_PAGES, "/ui/tasks/some-id", "/ui/no-such-page",
                                  "/ui/tasks?state=Running"])
def test_pages_redirect_to_login_when_signed_out(api: TestClient, path: str) -> None:
    r = api.get(path, follow_redirects=False)
    assert r.status_code == 303
    location = urlsplit(r.headers["location"])
    assert location.path == "/ui/login"
    assert parse_qs(location.query)["next"] == [path]
    assert r.headers["x-frame-options"] == "DENY"


def test_bare_ui_and_root_lead_to_the_dashboard(api: TestClient) -> None:
    assert api.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
    assert api.get("/", follow_redirects=False).headers["location"] == "/ui/"


def test_invalid_cookie_redirects_to_login(api: TestClient, admin: str) -> None:
    api.cookies.set(UI_COOKIE, "not-a-session", domain="testserver", path="/")
    r = api.get("/ui/tasks", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/ui/login?")


@pytest.mark.parametrize("target", [
    "https://evil.example/", "//evil.example/x", "/\\evil.example", "/ui/../../rest/tasks", "javascript:alert(1)",
    "/rest/tasks", "/ui//evil.example", "https://testserver/ui/tasks", "/ui/\r\nSet-Cookie:x=y",
])
def test_next_cannot_leave_the_ui(api: TestClient, admin: str, target: str) -> None:
    r = ui_login(api, next_url=target)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/"


def test_next_inside_the_ui_is_followed(api: TestClient, admin: str) -> None:
    form = api.get("/ui/login", params={"next": "/ui/tasks?state=Running"})
    assert _field(form.text, "next") == "/ui/tasks?state=Running"
    r = ui_login(api, next_url="/ui/tasks?state=Running")
    assert r.headers["location"] == "/ui/tasks?state=Running"


def test_login_form_drops_a_foreign_next(api: TestClient) -> None:
    form = api.get("/ui/login", params={"next": "https://evil.example/"})
    assert _field(form.text, "next") == "/ui/"


def test_login_page_when_signed_in_goes_on(api: TestClient, admin: str) -> None:
    _signed_in(api)
    r = api.get("/ui/login", params={"next": "/ui/alerts"}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/alerts"


# --- CSRF ----------------------------------------------------------------------------------------
def test_logout_needs_the_csrf_token(api: TestClient, admin: str) -> None:
    csrf = _signed_in(api)
    for data in ({}, {"csrf": "wrong"}):
        r = api.post("/ui/logout", data=data, follow_redirects=False)
        assert r.status_code == 403
        assert "CSRF" in r.text
    assert api.get("/ui/", follow_redirects=False).status_code == 200  # still signed in

    r = api.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login"
    cleared = next(c for c in r.headers.get_list("set-cookie") if c.startswith(f"{UI_COOKIE}="))
    assert "max-age=0" in cleared.lower()
    api.cookies.clear()
    assert api.get("/ui/", follow_redirects=False).status_code == 303


def test_logout_ends_the_session_on_the_server(api: TestClient, admin: str) -> None:
    csrf = _signed_in(api)
    cookie = api.cookies.get(UI_COOKIE)
    assert api.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    api.cookies.set(UI_COOKIE, str(cookie), domain="testserver", path="/")  # replaying the old cookie
    assert api.get("/ui/", follow_redirects=False).status_code == 303


def test_rest_writes_with_the_cookie_need_the_csrf_header(api: TestClient, ctx: AppContext, admin: str) -> None:
    with unit_of_work(ctx.session_factory) as db:
        alert_id = AlertService(db, ctx.clock).raise_alert("Ingot.Test", "Warning", "test alert").id
    csrf = _signed_in(api)
    body = {"alertState": "Cleared"}
    assert api.get("/rest/alerts", headers={"X-API-Version": "4600"}).status_code == 200  # reads need no token
    assert api.put(f"/rest/alerts/{alert_id}", json=body, headers={"X-API-Version": "4600"}).status_code == 401
    r = api.put(f"/rest/alerts/{alert_id}", json=body, headers={"X-API-Version": "4600", "X-CSRF-Token": csrf})
    assert r.status_code == 200
    assert r.json()["alertState"] == "Cleared"


# --- roles ---------------------------------------------------------------------------------------
def test_read_only_user_cannot_open_admin_pages(api: TestClient, make_user) -> None:  # type: ignore[no-untyped-def]
    name = _user_name(api, make_user(Role.READ_ONLY))
    assert ui_login(api, name, "Passw0rd-" + name).status_code == 303
    for path in ADMIN_PAGES:
        r = api.get(path, follow_redirects=False)
        assert r.status_code == 403, path
        assert "Insufficient role" in r.text
        assert "Read only" in r.text
        assert r.headers["x-frame-options"] == "DENY"
    for path in READ_PAGES:
        assert api.get(path, follow_redirects=False).status_code == 200, path
    csrf = _meta_csrf(api.get("/ui/").text)
    r = api.post("/ui/users", data={"csrf": csrf, "user_name": "sneaky", "password": "Passw0rd-x"},
                 follow_redirects=False)
    assert r.status_code == 403


def test_read_only_user_sees_no_action_buttons(api: TestClient, ctx: AppContext, make_user) -> None:  # type: ignore[no-untyped-def]
    _make_task(ctx)
    with unit_of_work(ctx.session_factory) as db:
        AlertService(db, ctx.clock).raise_alert("Ingot.Test", "Critical", "disk on fire")
    name = _user_name(api, make_user(Role.READ_ONLY))
    ui_login(api, name, "Passw0rd-" + name)
    assert "data-cancel-task" not in api.get("/ui/tasks").text
    alerts = api.get("/ui/alerts").text
    assert "disk on fire" in alerts
    assert "data-clear-alert" not in alerts


# --- pages ---------------------------------------------------------------------------------------
def test_dashboard_counts(api: TestClient, ctx: AppContext, admin: str) -> None:
    first, second = _make_task(ctx, "First task"), _make_task(ctx, "Second task")
    with unit_of_work(ctx.session_factory) as db:
        alerts = AlertService(db, ctx.clock)
        alerts.raise_alert("Ingot.Test.One", "Warning", "a warning")
        alerts.raise_alert("Ingot.Test.Two", "Critical", "a critical one")
        alerts.raise_alert("Ingot.Test.Three", "Critical", "another critical one")
    _signed_in(api)
    page = api.get("/ui/").text

    def count(key: str) -> int:
        match = re.search(rf'data-count="{re.escape(key)}">(\d+)<', page)
        assert match, f"no count {key}"
        return int(match.group(1))

    assert count("tasks:total") == 2
    assert count("tasks:New") == 2
    assert count("tasks:active") == 2
    assert count("alerts:Critical") == 2
    assert count("alerts:Warning") == 1
    assert count("users") == 1
    for task_id in (first, second):
        assert f'role="progressbar" data-task-id="{task_id}"' in page
    assert 'aria-valuenow="0"' in page and "0 %" in page
    assert "a critical one" in page


def test_pages_render_with_nothing_in_them(api: TestClient, admin: str) -> None:
    _signed_in(api)
    expected = {
        "/ui/": "No tasks yet.",
        "/ui/tasks": "No tasks yet.",
        "/ui/alerts": "No alerts.",
        "/ui/backups": "No backups yet.",
        "/ui/users": "Administrator",
        "/ui/activity": "POST /ui/login",
    }
    for path, text in expected.items():
        r = api.get(path)
        assert r.status_code == 200, path
        assert text in r.text, path
        for label in ("Dashboard", "Tasks", "Alerts", "Activity", "Backups", "Users"):
            assert f">{label}</a>" in r.text
        assert '<meta name="csrf-token"' in r.text
        # CSP forbids inline script and style, so the pages must not rely on them.
        assert not re.search(r"<script(?![^>]*\ssrc=)", r.text), path
        assert " style=" not in r.text and "<style" not in r.text, path


def test_task_list_filter_and_detail(api: TestClient, ctx: AppContext, admin: str) -> None:
    task_id = _make_task(ctx, "Visible task")
    _signed_in(api)
    filtered = api.get("/ui/tasks", params={"state": "New"}).text
    assert "Visible task" in filtered
    assert "data-newest" not in filtered  # only the unfiltered first page watches for new tasks
    assert f'data-newest="{task_id}"' in api.get("/ui/tasks").text
    assert "No tasks in state Completed." in api.get("/ui/tasks", params={"state": "Completed"}).text
    bad = api.get("/ui/tasks", params={"state": "Bogus"})
    assert bad.status_code == 400
    assert "state must be one of" in bad.text
    assert 'data-cancel-task="' + task_id in api.get("/ui/tasks").text

    detail = api.get(f"/ui/tasks/{task_id}")
    assert detail.status_code == 200
    assert "Visible task" in detail.text
    assert f'data-task-id="{task_id}"' in detail.text
    assert "Queued." in detail.text  # the first progress update
    missing = api.get("/ui/tasks/no-such-task")
    assert missing.status_code == 404
    assert "was not found" in missing.text
    assert missing.headers["content-type"].startswith("text/html")


def test_unknown_ui_page_is_a_404_page(api: TestClient, admin: str) -> None:
    _signed_in(api)
    r = api.get("/ui/no-such-page")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")


def test_user_input_is_escaped(api: TestClient, ctx: AppContext, admin: str) -> None:
    with unit_of_work(ctx.session_factory) as db:
        AlertService(db, ctx.clock).raise_alert("Ingot.Test", "Warning", "<script>alert(1)</script>")
    _signed_in(api)
    for path in ("/ui/", "/ui/alerts"):
        text = api.get(path).text
        assert "<script>alert(1)</script>" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_admin_creates_and_deletes_a_user(api: TestClient, admin: str) -> None:
    csrf = _signed_in(api)
    form = {"csrf": csrf, "user_name": "operator1", "password": "Passw0rd-op", "role": "Operator",
            "full_name": "Op One", "email": "op@example.com"}
    r = api.post("/ui/users", data=form, follow_redirects=False)
    assert r.status_code == 303
    page = api.get(r.headers["location"]).text
    assert "User operator1 was created." in page
    assert 'data-user="operator1"' in page

    again = api.post("/ui/users", data=form, follow_redirects=False)
    assert again.status_code == 409
    assert "already exists" in again.text
    assert 'value="Op One"' in again.text  # the form keeps what was typed

    assert api.post("/ui/users", data={**form, "csrf": "nope", "user_name": "x"}).status_code == 403
    bad_role = api.post("/ui/users", data={**form, "user_name": "x", "role": "God"})
    assert bad_role.status_code == 400

    r = api.post("/ui/users/operator1/delete", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    page = api.get(r.headers["location"]).text
    assert "User operator1 was deleted." in page
    assert 'data-user="operator1"' not in page
    assert api.post("/ui/users/Administrator/delete", data={"csrf": csrf}).status_code == 400


def test_static_assets(api: TestClient) -> None:
    js = api.get("/ui/static/ui.js")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert "X-CSRF-Token" in js.text and "X-API-Version" in js.text
    assert js.headers["x-frame-options"] == "DENY"
    css = api.get("/ui/static/ui.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")


def test_oversized_form_gets_a_413_page(api: TestClient, admin: str) -> None:
    r = api.post("/ui/login", data={"user_name": "x" * (2 * 1024 * 1024), "password": "y"})
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["x-frame-options"] == "DENY"
