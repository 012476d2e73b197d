"""``/rest/users`` and ``/rest/api-tokens``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from appliance.errors import AuthenticationFailed
from appliance.roles import Role
from appliance.security import verify_password
from appliance.services.auth import AuthService
from appliance.services.users import UserChanges, UserService
from web.collection import QueryDep, envelope
from web.deps import Admin, AppDep, DbDep, ReadOnly
from web.etag import check_if_match, resource_response
from web.schemas.users import TokenCreate, UserCreate, UserUpdate, token_public, user_public

router = APIRouter(tags=["users"])


@router.get("/rest/users")
def list_users(params: QueryDep, db: DbDep, ctx: AppDep, _: Admin) -> dict[str, Any]:
    page = UserService(db, ctx.clock).list(params.query)
    return envelope("/rest/users", "users", "UserAndPermissionsCollection", page, user_public, params)


@router.post("/rest/users", status_code=201)
def create_user(body: UserCreate, request: Request, db: DbDep, ctx: AppDep, _: Admin) -> Response:
    svc = UserService(db, ctx.clock)
    user = svc.create(body.user_name, body.password, body.chosen_role(), body.full_name, body.email_address)
    if not body.enabled:
        svc.update(user.id, UserChanges(enabled=False))
    db.flush()
    return resource_response(request, user_public(user), status_code=201)


@router.get("/rest/users/{name}")
def get_user(name: str, request: Request, db: DbDep, ctx: AppDep, principal: ReadOnly) -> Response:
    user = UserService(db, ctx.clock).get(name)
    if user.id != principal.user_id:
        principal.require(Role.INFRASTRUCTURE_ADMINISTRATOR)  # others' details are for admins
    return resource_response(request, user_public(user))


@router.put("/rest/users/{name}")
def update_user(name: str, body: UserUpdate, request: Request, db: DbDep, ctx: AppDep,
                principal: ReadOnly) -> Response:
    svc = UserService(db, ctx.clock)
    user = svc.get(name)
    check_if_match(request, user.etag)
    self_service = user.id == principal.user_id
    admin_fields = body.chosen_role() is not None or body.enabled is not None
    if not self_service or admin_fields:
        principal.require(Role.INFRASTRUCTURE_ADMINISTRATOR)
    elif body.password is not None and not verify_password(user.password_hash, body.current_password or ""):
        # Changing your own password proves you know the old one (a stolen session is not enough).
        raise AuthenticationFailed("The current password is not correct.")
    user = svc.update(user.id, UserChanges(
        full_name=body.full_name, email=body.email_address, role=body.chosen_role(), enabled=body.enabled,
        password=body.password,
    ))
    db.flush()
    db.refresh(user)
    return resource_response(request, user_public(user))


@router.delete("/rest/users/{name}", status_code=204)
def delete_user(name: str, request: Request, db: DbDep, ctx: AppDep, _: Admin) -> Response:
    svc = UserService(db, ctx.clock)
    check_if_match(request, svc.get(name).etag)
    svc.delete(name)
    return Response(status_code=204)


@router.get("/rest/api-tokens")
def list_tokens(db: DbDep, ctx: AppDep, principal: ReadOnly,
                all_users: Annotated[bool, Query(alias="all")] = False) -> dict[str, Any]:
    rows = AuthService(db, ctx.settings.sessions, ctx.clock).list_tokens(principal, all_users)
    members = [token_public(r) for r in rows]
    return {"type": "ApiTokenCollection", "category": "api-tokens", "uri": "/rest/api-tokens", "start": 0,
            "count": len(members), "total": len(members), "members": members, "nextPageUri": None,
            "prevPageUri": None}


@router.post("/rest/api-tokens", status_code=201)
def create_token(body: TokenCreate, db: DbDep, ctx: AppDep, principal: ReadOnly) -> dict[str, Any]:
    secret, row = AuthService(db, ctx.settings.sessions, ctx.clock).create_token(
        principal, body.name, body.expires_in_days)
    db.flush()
    db.refresh(row)
    return token_public(row, secret=secret)


@router.delete("/rest/api-tokens/{token_id}", status_code=204)
def revoke_token(token_id: str, db: DbDep, ctx: AppDep, principal: ReadOnly) -> Response:
    AuthService(db, ctx.settings.sessions, ctx.clock).revoke_token(principal, token_id)
    return Response(status_code=204)
