"""ASGI middleware that every API and UI request passes through once.

In order: a request id; the ``X-API-Version`` check; the body-size limit (by Content-Length up
front, and by counting for chunked bodies); then, after the response, the access log line, the
Prometheus counters, and — for state-changing calls — the audit row. Written as plain ASGI rather
than Starlette's BaseHTTPMiddleware so that streamed responses are not buffered.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.config import ApiSettings
from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.errors import ApplianceError, PayloadTooLarge, UnsupportedApiVersion
from appliance.services.audit import AuditRecord, AuditService
from web.errors import error_response
from web.metrics import Metrics

log = logging.getLogger("ingot.access")
AUDITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiMiddleware:
    def __init__(self, app: ASGIApp, ctx: AppContext, metrics: Metrics,
                 upload_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.ctx = ctx
        self.settings: ApiSettings = ctx.settings.api
        self.metrics = metrics
        # Multipart uploads to these paths stream to disk under their own limits (web/uploads.py);
        # JSON sent to the same paths keeps the JSON body limit.
        self.upload_paths = frozenset(upload_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        method: str = scope["method"]
        status: dict[str, Any] = {"code": 500, "location": None}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                extra = [(b"x-request-id", request_id.encode())]
                for key, value in message.get("headers", []):
                    if key.lower() == b"location":
                        status["location"] = value.decode("latin-1")
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        try:
            error = self._precheck(path, headers)
            if error is not None:
                await error_response(error)(scope, receive, send_wrapper)
            else:
                limited = self._limited_receive(receive, path, headers)
                try:
                    await self.app(scope, limited, send_wrapper)
                except PayloadTooLarge as exc:  # raised outside FastAPI's body parsing
                    await error_response(exc)(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            state = scope.get("state", {})
            user = state.get("principal_name") or state.get("audit_user") or ""
            route = scope.get("route")
            template = getattr(route, "path", None) or ("/static" if path.startswith("/ui/static") else "unmatched")
            code = int(status["code"] or 500)
            self.metrics.observe_request(method, template, code, elapsed)
            log.info(
                "%s %s %s %.1fms", method, path, code, elapsed * 1000,
                extra={"request_id": request_id, "user": user, "status": code, "client": _client(scope)},
            )
            if method in AUDITED_METHODS and (path.startswith("/rest") or path.startswith("/ui")):
                record = AuditRecord(
                    user_name=user, source_ip=_client(scope), method=method, path=path, status_code=code,
                    resource_uri=status["location"] or path, request_id=request_id,
                    message=state.get("audit_message", ""),
                )
                await asyncio.shield(asyncio.to_thread(self._audit, record))

    def _precheck(self, path: str, headers: dict[str, str]) -> ApplianceError | None:
        if not path.startswith("/rest"):
            return None
        raw = headers.get("x-api-version")
        if raw is not None and path != "/rest/version":
            try:
                version = int(raw)
            except ValueError:
                version = -1
            if not self.settings.minimum_version <= version <= self.settings.current_version:
                return UnsupportedApiVersion(version=raw[:16], minimum=self.settings.minimum_version,
                                             current=self.settings.current_version)
        length = headers.get("content-length")
        if length is not None and not self._unlimited(path, headers):
            try:
                too_big = int(length) > self.settings.max_body_bytes
            except ValueError:
                too_big = True
            if too_big:
                return PayloadTooLarge(limit=self.settings.max_body_bytes)
        return None

    def _unlimited(self, path: str, headers: dict[str, str]) -> bool:
        return path in self.upload_paths and headers.get("content-type", "").startswith("multipart/form-data")

    def _limited_receive(self, receive: Receive, path: str, headers: dict[str, str]) -> Receive:
        if self._unlimited(path, headers):
            return receive
        limit = self.settings.max_body_bytes
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # FastAPI wraps errors while reading a body into a 400; web/errors.py unwraps
                    # this one again so the caller sees 413.
                    raise PayloadTooLarge(limit=limit)
            return message

        return wrapped

    def _audit(self, record: AuditRecord) -> None:
        try:
            with unit_of_work(self.ctx.session_factory) as db:
                AuditService(db, self.ctx.clock).record(record)
        except Exception:
            log.exception("could not write the audit record for %s %s", record.method, record.path)


def _client(scope: Scope) -> str:
    client: Any = scope.get("client")
    return str(client[0]) if client else ""
