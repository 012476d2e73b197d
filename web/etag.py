"""ETag / If-Match / If-None-Match for single resources."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from appliance.errors import EtagMismatch


def check_if_match(request: Request, current: str) -> None:
    """Refuse a change made against an old copy. ``*`` (what the SDK sends with etag validation
    disabled) and no header at all both mean "whatever is there now"."""
    given = request.headers.get("if-match")
    if given is None:
        return
    candidates = [c.strip().removeprefix("W/").strip('"') for c in given.split(",")]
    if "*" not in candidates and current not in candidates:
        raise EtagMismatch(given=given[:64], current=current)


def resource_response(request: Request, body: dict[str, Any], status_code: int = 200) -> Response:
    etag = body.get("eTag")
    headers = {"ETag": f'"{etag}"'} if etag else {}
    if etag and status_code == 200:
        inm = request.headers.get("if-none-match")
        if inm and etag in [c.strip().removeprefix("W/").strip('"') for c in inm.split(",")]:
            return Response(status_code=304, headers=headers)
    return JSONResponse(body, status_code=status_code, headers=headers)
