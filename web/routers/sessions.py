"""``/rest/login-sessions``: OneView log in / reuse / log out, plus listing and revoking sessions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from appliance.errors import SessionInvalid
from appliance.services.auth import AuthService
from web.deps import AppDep, DbDep, ReadOnly, credential_from
from web.schemas.users import LoginRequest, session_public

router = APIRouter(tags=["login-sessions"])


@router.post("/rest/login-sessions")
def login(body: LoginRequest, request: Request, db: DbDep, ctx: AppDep) -> dict[str, Any]:
    request.state.audit_user = body.user_name
    client = request.client.host if request.client else ""
    session_id, _ = AuthService(db, ctx.settings.sessions, ctx.clock).login(
        body.user_name, body.password, kind="api", source_ip=client)
    request.state.audit_message = "login"
    return {"sessionID": session_id, "partnerData": {}}


@router.put("/rest/login-sessions")
def reuse(request: Request, principal: ReadOnly) -> dict[str, Any]:
    """The SDK's "log in with an existing sessionID": valid sessions are echoed back."""
    credential, _ = credential_from(request)
    if principal.via != "session":
        raise SessionInvalid("API tokens are not sessions; send them on each request instead.")
    return {"sessionID": credential, "partnerData": {}}


@router.delete("/rest/login-sessions", status_code=204)
def logout(request: Request, db: DbDep, ctx: AppDep, principal: ReadOnly) -> Response:
    credential, _ = credential_from(request)
    if principal.via != "session" or credential is None:
        raise SessionInvalid("Only a session can log out; revoke API tokens with DELETE /rest/api-tokens/{id}.")
    AuthService(db, ctx.settings.sessions, ctx.clock).logout(credential)
    request.state.audit_message = "logout"
    return Response(status_code=204)


@router.get("/rest/login-sessions")
def list_sessions(
    db: DbDep, ctx: AppDep, principal: ReadOnly,
    all_users: Annotated[bool, Query(alias="all")] = False,
) -> dict[str, Any]:
    rows = AuthService(db, ctx.settings.sessions, ctx.clock).list_sessions(principal, all_users)
    members = [session_public(r) for r in rows]
    return {"type": "LoginSessionCollection", "category": "login-sessions", "uri": "/rest/login-sessions",
            "start": 0, "count": len(members), "total": len(members), "members": members,
            "nextPageUri": None, "prevPageUri": None}


@router.delete("/rest/login-sessions/{session_id}", status_code=204)
def revoke(session_id: str, db: DbDep, ctx: AppDep, principal: ReadOnly) -> Response:
    AuthService(db, ctx.settings.sessions, ctx.clock).revoke_session(principal, session_id)
    return Response(status_code=204)
