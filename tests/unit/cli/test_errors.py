"""How API errors and connection failures reach the user: message, hints, exit code."""

from __future__ import annotations

import io
import ssl
from typing import Any

import httpx
import pytest
from rich.console import Console

from appliance.cli.client import ApiClient, transport_error
from appliance.cli.errors import EXIT_AUTH, EXIT_FAILED, EXIT_USAGE, ApiError, CliError, render_error
from appliance.cli.session import Target, TlsSettings

FORBIDDEN: dict[str, Any] = {
    "errorCode": "AUTHORIZATION_DENIED",
    "message": "User bob with role Read only may not perform this action; it needs Infrastructure administrator.",
    "details": "",
    "recommendedActions": ["Ask an infrastructure administrator for a role with the needed rights."],
    "nestedErrors": [],
    "errorSource": None,
    "data": {},
}
INVALID: dict[str, Any] = {
    "errorCode": "INVALID_INPUT",
    "message": "The request is not valid: unknown field 'colour'",
    "details": "Fields are case-sensitive.",
    "recommendedActions": [],
    "nestedErrors": [{"errorCode": "INVALID_FIELD", "message": "unknown field 'colour'", "details": "colour"}],
}


def rendered(error: CliError) -> str:
    out = io.StringIO()
    render_error(error, Console(file=out, width=200, color_system=None))
    return out.getvalue()


@pytest.mark.parametrize(("status", "code"), [
    (400, EXIT_USAGE), (413, EXIT_USAGE), (422, EXIT_USAGE), (401, EXIT_AUTH), (403, EXIT_AUTH),
    (404, EXIT_FAILED), (409, EXIT_FAILED), (412, EXIT_FAILED), (500, EXIT_FAILED), (503, EXIT_FAILED),
])
def test_exit_code_by_status(status: int, code: int) -> None:
    assert ApiError.from_response(status, FORBIDDEN).exit_code == code


def test_oneview_error_body_is_rendered_in_full() -> None:
    error = ApiError.from_response(403, FORBIDDEN)
    assert (error.message, error.code, error.status) == (FORBIDDEN["message"], "AUTHORIZATION_DENIED", 403)
    text = rendered(error)
    assert text.splitlines() == [
        f"error: {FORBIDDEN['message']} [AUTHORIZATION_DENIED, HTTP 403]",
        "hint: Ask an infrastructure administrator for a role with the needed rights.",
    ]


def test_details_and_field_problems() -> None:
    text = rendered(ApiError.from_response(400, INVALID))
    assert text.splitlines() == [
        "error: The request is not valid: unknown field 'colour' [INVALID_INPUT, HTTP 400]",
        "  Fields are case-sensitive.",
        "  - unknown field 'colour'",
    ]


@pytest.mark.parametrize("body", [None, "<html>Bad gateway</html>", {}, {"message": ""}, []])
def test_a_body_that_is_not_a_oneview_error(body: Any) -> None:
    error = ApiError.from_response(502, body)
    assert error.message == "The appliance answered HTTP 502 Bad Gateway."
    assert error.exit_code == EXIT_FAILED
    assert ApiError.from_response(599, body, "").message == "The appliance answered HTTP 599."


def test_text_is_never_taken_for_markup() -> None:
    text = rendered(CliError("name [bold]x[/bold] rejected", hints=["use [red]"]))
    assert "name [bold]x[/bold] rejected" in text
    assert "hint: use [red]" in text


# --- connection problems -------------------------------------------------------------------------
SESSION = Target(url="https://appliance:8443", credential="sid", tls=TlsSettings(), via="session")
TOKEN = Target(url="https://appliance:8443", credential="ingot_x", tls=TlsSettings(), via="token")


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def test_tls_verification_failure_hints_at_ca_cert_or_insecure() -> None:
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    cause.verify_message = "self-signed certificate"
    exc = chained(httpx.ConnectError("failed"), cause)
    assert isinstance(exc, httpx.ConnectError)
    error = transport_error(exc, SESSION)
    assert error.message == "TLS verification of https://appliance:8443 failed: self-signed certificate."
    assert "--ca-cert" in error.hints[0] and "--insecure" in error.hints[0]
    assert error.exit_code == EXIT_FAILED
    token_hint = transport_error(exc, TOKEN).hints[0]
    assert "INGOT_CA_CERT" in token_hint and "INGOT_INSECURE=1" in token_hint


def test_unreachable_and_timeouts() -> None:
    refused = chained(httpx.ConnectError("[Errno 111] Connection refused"),
                      ConnectionRefusedError(111, "Connection refused"))
    assert isinstance(refused, httpx.ConnectError)
    error = transport_error(refused, SESSION)
    assert error.message == "Cannot reach the appliance at https://appliance:8443: Connection refused."
    assert "--host" in error.hints[0]
    timeout = transport_error(httpx.ReadTimeout("timed out"), SESSION)
    assert timeout.message == "The appliance at https://appliance:8443 did not answer in time (ReadTimeout)."


# --- the client over a mock transport ------------------------------------------------------------
def client_for(target: Target, handler: Any) -> ApiClient:
    return ApiClient(target, transport=httpx.MockTransport(handler))


def test_every_request_sends_the_api_version_and_auth_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"members": []})

    with client_for(SESSION, handler) as client:
        assert client.get("/rest/tasks", {"count": 5}) == {"members": []}
    assert seen[0].headers["X-API-Version"] == "4600"
    assert seen[0].headers["auth"] == "sid"
    assert seen[0].url.params["count"] == "5"


def test_an_expired_session_says_to_log_in_again() -> None:
    body = {"errorCode": "AUTHN_SESSION_INVALID", "message": "The session is missing, expired or has been revoked.",
            "recommendedActions": ["Log in again with POST /rest/login-sessions ..."]}
    with client_for(SESSION, lambda _: httpx.Response(401, json=body)) as client, \
            pytest.raises(ApiError) as caught:
        client.get("/rest/tasks")
    assert caught.value.exit_code == EXIT_AUTH
    assert caught.value.hints == ["Run `ingot login` to start a new session."]
    with client_for(TOKEN, lambda _: httpx.Response(401, json=body)) as client, pytest.raises(ApiError) as caught:
        client.get("/rest/tasks")
    assert "INGOT_TOKEN" in caught.value.hints[0]


def test_a_wrong_password_keeps_the_apis_advice() -> None:
    body = {"errorCode": "AUTHN_AUTH_FAIL", "message": "Invalid user name or password.",
            "recommendedActions": ["Check the user name and password and try again."]}
    anonymous = Target(url="https://appliance:8443", credential=None, tls=TlsSettings(), via="none")
    with client_for(anonymous, lambda _: httpx.Response(401, json=body)) as client, \
            pytest.raises(ApiError) as caught:
        client.post("/rest/login-sessions", {"userName": "a", "password": "b"})
    assert caught.value.hints == ["Check the user name and password and try again."]
    assert caught.value.exit_code == EXIT_AUTH


def test_a_missing_ca_file_is_a_usage_error(tmp_path: Any) -> None:
    target = Target(url="https://a", credential=None, tls=TlsSettings(ca_cert=str(tmp_path / "nope.pem")), via="none")
    with pytest.raises(CliError) as caught:
        ApiClient(target)
    assert caught.value.exit_code == EXIT_USAGE
    assert "nope.pem" in caught.value.message
