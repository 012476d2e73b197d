"""One place where errors become OneView error bodies.

``{"errorCode", "message", "details", "recommendedActions", "nestedErrors", "errorSource", "data"}``
is what the HPE SDK puts into ``HPEOneViewException``; every 4xx/5xx the API sends has this shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from appliance.errors import ApplianceError, InvalidInput, MalformedJson

log = logging.getLogger(__name__)


def error_body(error: ApplianceError) -> dict[str, Any]:
    return {
        "errorCode": error.error_code,
        "message": error.message,
        "details": error.details,
        "recommendedActions": error.recommended_actions,
        "nestedErrors": [
            {"errorCode": "INVALID_FIELD", "message": message, "details": field, "recommendedActions": [],
             "nestedErrors": [], "errorSource": field}
            for field, message in error.nested
        ],
        "errorSource": None,
        "data": {},
    }


def error_response(error: ApplianceError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=error.http_status, headers=headers)


def _validation_error(exc: RequestValidationError) -> ApplianceError:
    problems = exc.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return MalformedJson(details=str(problems[0].get("ctx", {}).get("error", "")))
    nested = []
    for problem in problems:
        loc = [str(part) for part in problem.get("loc", ()) if part not in ("body", "query", "path", "header")]
        field = ".".join(loc) or "body"
        kind = problem.get("type", "")
        if kind == "extra_forbidden":
            message = f"unknown field {field!r}"
        elif kind == "missing":
            message = f"{field} is required"
        else:
            message = f"{field}: {problem.get('msg', 'invalid')}"
        nested.append((field, message))
    summary = "; ".join(message for _, message in nested[:5]) or "invalid request"
    return InvalidInput(reason=summary, nested=nested)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApplianceError)
    async def _appliance_error(request: Request, exc: ApplianceError) -> JSONResponse:
        if exc.http_status >= 500:
            log.error("request failed: %s", exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ApplianceError):  # e.g. the body limit hit while parsing
            return error_response(exc.__cause__)
        codes = {404: "RESOURCE_NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
        error = ApplianceError(str(exc.detail) if exc.detail else "Request failed.")
        body = error_body(error)
        body["errorCode"] = codes.get(exc.status_code, f"HTTP_{exc.status_code}")
        if exc.status_code == 404 and exc.detail == "Not Found":
            body["message"] = f"No resource at {request.url.path}."
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(ApplianceError("An unexpected error occurred; see the appliance log."))

