"""The HTTP client every command shares.

Each request carries ``X-API-Version`` and, when logged in, the OneView ``auth`` header. Error
responses become :class:`~appliance.cli.errors.ApiError`; connection problems (refused, timed out,
TLS verification failed) become a :class:`~appliance.cli.errors.CliError` with a hint, so no
command has to handle httpx exceptions itself.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

import appliance
from appliance.cli.errors import EXIT_USAGE, ApiError, CliError
from appliance.cli.session import Target, resolve_target

E = TypeVar("E", bound=BaseException)

API_VERSION = "4600"
SESSION_INVALID = "AUTHN_SESSION_INVALID"
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# Archives are streamed; a read may wait while the appliance reads the file from disk.
DOWNLOAD_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


class ApiClient:
    """A thin wrapper over :class:`httpx.Client` bound to one :class:`Target`."""

    def __init__(self, target: Target, *, timeout: httpx.Timeout = TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.target = target
        headers = {"X-API-Version": API_VERSION, "Accept": "application/json",
                   "User-Agent": f"ingot-cli/{appliance.__version__}"}
        if target.credential:
            headers["auth"] = target.credential
        try:
            verify = target.tls.verify()
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"Cannot load the CA certificate {target.tls.ca_cert}: {_reason(exc)}.",
                           exit_code=EXIT_USAGE) from None
        self.http = httpx.Client(base_url=target.url, headers=headers, verify=verify, timeout=timeout,
                                 transport=transport, follow_redirects=False)

    @classmethod
    def connect(cls) -> ApiClient:
        """A client for the stored session or ``INGOT_TOKEN``; raises ``NotLoggedIn`` if neither."""
        return cls(resolve_target())

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, json: Any = None, params: Any = None) -> httpx.Response:
        try:
            response = self.http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.target) from None
        if response.status_code >= 400:
            raise self._api_error(response)
        return response

    def send_body(self, method: str, path: str, content: Iterator[bytes], *, headers: dict[str, str],
                  params: Any = None) -> httpx.Response:
        """A request whose body streams from ``content`` (uploads); no read timeout while it goes."""
        try:
            response = self.http.request(method, path, content=content, headers=headers, params=params,
                                         timeout=DOWNLOAD_TIMEOUT)
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.target) from None
        if response.status_code >= 400:
            raise self._api_error(response)
        return response

    def get(self, path: str, params: Any = None) -> Any:
        return decode(self.request("GET", path, params=params))

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return decode(self.request("PUT", path, json=body))

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    @contextmanager
    def stream(self, path: str) -> Iterator[httpx.Response]:
        """GET ``path`` without reading the body; errors while reading it are translated too."""
        try:
            with self.http.stream("GET", path, timeout=DOWNLOAD_TIMEOUT,
                                  headers={"Accept": "application/octet-stream, application/json"}) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._api_error(response)
                yield response
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.target) from None

    def _api_error(self, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = ApiError.from_response(response.status_code, body, response.reason_phrase)
        if error.code == SESSION_INVALID:
            # The API's own advice is about raw HTTP; say what to do with the CLI instead.
            if self.target.via == "session":
                error.hints = ["Run `ingot login` to start a new session."]
            elif self.target.via == "token":
                error.hints = ["INGOT_TOKEN was not accepted: it may be mistyped, expired or revoked."]
        return error


def segment(value: str) -> str:
    """One path segment (an ID or a user name), quoted so it cannot reach another route."""
    return quote(value.strip(), safe="")


def transport_error(exc: httpx.HTTPError, target: Target) -> CliError:
    """Say what went wrong with the connection to ``target`` and what to try."""
    url = target.url
    if isinstance(exc, httpx.TimeoutException):
        return CliError(f"The appliance at {url} did not answer in time ({type(exc).__name__}).",
                        hints=["Check that the appliance is running and not overloaded, then retry."])
    verify_failure = _find(exc, ssl.SSLCertVerificationError)
    if verify_failure is not None or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        reason = getattr(verify_failure, "verify_message", None) or "certificate verify failed"
        return CliError(f"TLS verification of {url} failed: {reason}.", hints=[_tls_hint(target)])
    tls_failure = _find(exc, ssl.SSLError)
    if tls_failure is not None:
        return CliError(f"The TLS handshake with {url} failed: {_reason(tls_failure)}.",
                        hints=["Check that the URL points at the appliance's HTTPS port."])
    if isinstance(exc, httpx.ConnectError):
        return CliError(f"Cannot reach the appliance at {url}: {_reason(exc)}.",
                        hints=["Check the address (--host or INGOT_URL) and that the appliance is running."])
    return CliError(f"The connection to {url} failed: {_reason(exc)}.")


def _tls_hint(target: Target) -> str:
    where = "the appliance's CA certificate; for its generated self-signed one, $INGOT_HOME/tls/tls.crt"
    if target.via == "token":
        return f"Set INGOT_CA_CERT to a PEM file ({where}), or INGOT_INSECURE=1 to skip verification."
    return f"Pass --ca-cert FILE ({where}) to `ingot login`, or --insecure to skip verification."


def _find(exc: BaseException, kind: type[E]) -> E | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _reason(exc: BaseException) -> str:
    os_error = _find(exc, OSError)
    if os_error is not None and os_error.strerror:
        return os_error.strerror
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def decode(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        raise CliError(f"The appliance sent a response that is not JSON (HTTP {response.status_code}).") from None
