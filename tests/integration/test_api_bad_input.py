"""Bad input gets the right 4xx with a OneView error body, and nothing changes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from appliance.roles import Role

ERROR_KEYS = {"errorCode", "message", "details", "recommendedActions", "nestedErrors"}


def assert_error(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= ERROR_KEYS
    assert body["errorCode"] == code
    return body  # type: ignore[no-any-return]


def test_malformed_json(api: TestClient, admin: str) -> None:
    r = api.post("/rest/login-sessions", content=b'{"userName": "Administrator", "password": ',
                 headers={"Content-Type": "application/json"})
    assert_error(r, 400, "MALFORMED_JSON")


def test_unknown_fields_are_named(api: TestClient, admin_headers: dict[str, str]) -> None:
    r = api.post("/rest/users", headers=admin_headers,
                 json={"userName": "x1", "password": "Passw0rd-x1", "shoeSize": 44})
    body = assert_error(r, 400, "INVALID_INPUT")
    assert "shoeSize" in body["message"]
    assert body["nestedErrors"][0]["errorSource"] == "shoeSize"
    assert api.get("/rest/users", headers=admin_headers).json()["total"] == 1  # nothing created


def test_missing_and_wrongly_typed_fields(api: TestClient, admin_headers: dict[str, str]) -> None:
    body = assert_error(api.post("/rest/users", headers=admin_headers, json={"userName": "x2"}), 400, "INVALID_INPUT")
    assert "password is required" in body["message"]
    r = api.put("/rest/alerts/whatever", headers=admin_headers, json={"alertState": "Exploded"})
    assert_error(r, 400, "INVALID_INPUT")
    r = api.post("/rest/users", headers=admin_headers, json=["not", "an", "object"])
    assert_error(r, 400, "INVALID_INPUT")


def test_oversized_body_by_length(api: TestClient, admin_headers: dict[str, str], ctx) -> None:  # type: ignore[no-untyped-def]
    big = b'{"userName": "x", "password": "' + b"a" * (ctx.settings.api.max_body_bytes + 10) + b'"}'
    r = api.post("/rest/users", headers={**admin_headers, "Content-Type": "application/json"}, content=big)
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")


def test_oversized_body_chunked(api: TestClient, admin_headers: dict[str, str], ctx) -> None:  # type: ignore[no-untyped-def]
    limit = ctx.settings.api.max_body_bytes

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"userName": "x", "password": "'
        for _ in range(limit // 65536 + 2):
            yield b"a" * 65536
        yield b'"}'

    r = api.post("/rest/users", headers={**admin_headers, "Content-Type": "application/json"}, content=chunks())
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")


def test_bad_paging_and_filters(api: TestClient, admin_headers: dict[str, str]) -> None:
    assert_error(api.get("/rest/tasks?start=-1", headers=admin_headers), 400, "INVALID_INPUT")
    assert_error(api.get("/rest/tasks?count=abc", headers=admin_headers), 400, "INVALID_INPUT")
    body = assert_error(api.get("/rest/tasks", params={"filter": "colour='red'"}, headers=admin_headers),
                        400, "INVALID_FILTER")
    assert "taskState" in body["message"]  # lists the fields that can be filtered
    assert_error(api.get("/rest/tasks", params={"filter": "name=='a' OR 1=1"}, headers=admin_headers),
                 400, "INVALID_FILTER")
    assert_error(api.get("/rest/tasks", params={"sort": "name:sideways"}, headers=admin_headers),
                 400, "INVALID_FILTER")
    assert_error(api.get("/rest/tasks", params={"filter": "percentComplete>'lots'"}, headers=admin_headers),
                 400, "INVALID_FILTER")


def test_not_found_and_wrong_method(api: TestClient, admin_headers: dict[str, str]) -> None:
    assert_error(api.get("/rest/tasks/does-not-exist", headers=admin_headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.get("/rest/no-such-collection", headers=admin_headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.patch("/rest/version", headers=admin_headers), 405, "METHOD_NOT_ALLOWED")


def test_etags(api: TestClient, admin_headers: dict[str, str]) -> None:
    user = api.post("/rest/users", headers=admin_headers,
                    json={"userName": "etag1", "password": "Passw0rd-etag", "role": "Read only"})
    etag = user.json()["eTag"]
    assert user.headers["ETag"] == f'"{etag}"'
    assert api.get("/rest/users/etag1", headers={**admin_headers, "If-None-Match": f'"{etag}"'}).status_code == 304
    changed = api.put("/rest/users/etag1", headers={**admin_headers, "If-Match": f'"{etag}"'},
                      json={"fullName": "First change"})
    assert changed.status_code == 200 and changed.json()["eTag"] != etag
    stale = api.put("/rest/users/etag1", headers={**admin_headers, "If-Match": f'"{etag}"'},
                    json={"fullName": "Lost update"})
    assert_error(stale, 412, "ETAG_MISMATCH")
    assert api.get("/rest/users/etag1", headers=admin_headers).json()["fullName"] == "First change"
    star = api.put("/rest/users/etag1", headers={**admin_headers, "If-Match": "*"}, json={"fullName": "Any"})
    assert star.status_code == 200


@pytest.mark.parametrize("role, status", [(Role.READ_ONLY, 403), (Role.OPERATOR, 403)])
def test_insufficient_role(api: TestClient, make_user, role: Role, status: int) -> None:  # type: ignore[no-untyped-def]
    headers = make_user(role)
    body = assert_error(api.post("/rest/users", headers=headers,
                                 json={"userName": "nope", "password": "Passw0rd-nope"}), status,
                        "AUTHORIZATION_DENIED")
    assert "Infrastructure administrator" in body["message"]
    assert_error(api.get("/rest/audit-logs", headers=headers), 403, "AUTHORIZATION_DENIED")


def test_operator_may_operate_but_read_only_may_not(api: TestClient, make_user, ctx) -> None:  # type: ignore[no-untyped-def]
    from appliance.db.session import unit_of_work
    from appliance.services.alerts import AlertService

    with unit_of_work(ctx.session_factory) as db:
        alert_id = AlertService(db).raise_alert("Test.Alert", "Warning", "a test alert").id
    reader, operator = make_user(Role.READ_ONLY), make_user(Role.OPERATOR)
    clear = {"alertState": "Cleared"}
    assert_error(api.put(f"/rest/alerts/{alert_id}", headers=reader, json=clear), 403, "AUTHORIZATION_DENIED")
    assert api.put(f"/rest/alerts/{alert_id}", headers=operator, json=clear).json()["alertState"] == "Cleared"
    assert_error(api.delete(f"/rest/alerts/{alert_id}", headers=operator), 403, "AUTHORIZATION_DENIED")


def test_cookie_without_csrf_cannot_change_state(api: TestClient, admin_headers: dict[str, str]) -> None:
    api.cookies.set("ingot_session", admin_headers["auth"])
    try:
        assert api.get("/rest/tasks").status_code == 200  # reading with the cookie is fine
        r = api.post("/rest/backups", json={})
        assert_error(r, 401, "AUTHN_SESSION_INVALID")
    finally:
        api.cookies.clear()


def test_backup_rejects_parameters(api: TestClient, admin_headers: dict[str, str]) -> None:
    assert_error(api.post("/rest/backups", headers=admin_headers, json={"everything": True}), 400, "INVALID_INPUT")
