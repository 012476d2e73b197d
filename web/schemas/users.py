"""Users, login sessions and API tokens on the wire. Secrets are write-only."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from appliance.models import ApiToken, LoginSession, User
from appliance.roles import Role
from web.schemas.common import Strict, resource_header, ts


class LoginRequest(Strict):
    user_name: str = Field(alias="userName", min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    auth_login_domain: str | None = Field(None, alias="authLoginDomain", max_length=64)
    login_msg_ack: bool | None = Field(None, alias="loginMsgAck")


class Permission(Strict):
    role_name: Role = Field(alias="roleName")
    scope_uri: str | None = Field(None, alias="scopeUri")


class UserCreate(Strict):
    user_name: str = Field(alias="userName", min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    full_name: str = Field("", alias="fullName", max_length=255)
    email_address: str = Field("", alias="emailAddress", max_length=255)
    role: Role | None = None
    permissions: list[Permission] | None = Field(None, max_length=1)
    enabled: bool = True
    type: str | None = None  # sent by the SDK for some versions; ignored

    def chosen_role(self) -> Role:
        if self.role is not None:
            return self.role
        if self.permissions:
            return self.permissions[0].role_name
        return Role.READ_ONLY


class UserUpdate(Strict):
    full_name: str | None = Field(None, alias="fullName", max_length=255)
    email_address: str | None = Field(None, alias="emailAddress", max_length=255)
    role: Role | None = None
    permissions: list[Permission] | None = Field(None, max_length=1)
    enabled: bool | None = None
    password: str | None = Field(None, max_length=256)
    current_password: str | None = Field(None, alias="currentPassword", max_length=256)
    user_name: str | None = Field(None, alias="userName")  # echoed back by GET-merge-PUT clients
    type: str | None = None
    uri: str | None = None
    eTag: str | None = None

    def chosen_role(self) -> Role | None:
        if self.role is not None:
            return self.role
        if self.permissions:
            return self.permissions[0].role_name
        return None


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=128)
    expires_in_days: int | None = Field(None, alias="expiresInDays", ge=1, le=3650)


def user_public(user: User) -> dict[str, Any]:
    body = resource_header(
        "UserAndPermissions", "users", f"/rest/users/{user.name}", user.id, user.name, user.etag,
        user.created, user.modified, state="Enabled" if user.enabled else "Disabled",
    )
    body.update({
        "userName": user.name,
        "fullName": user.full_name,
        "emailAddress": user.email,
        "enabled": user.enabled,
        "role": user.role,
        "permissions": [{"roleName": user.role, "scopeUri": None}],
        "passwordChanged": ts(user.password_changed),
    })
    return body


def session_public(row: LoginSession) -> dict[str, Any]:
    return {
        "type": "LoginSession",
        "category": "login-sessions",
        "id": row.id,
        "uri": f"/rest/login-sessions/{row.id}",
        "userName": row.user.name,
        "kind": row.kind,
        "sourceIp": row.source_ip,
        "created": ts(row.created),
        "lastUsed": ts(row.last_used),
        "expires": ts(row.expires),
    }


def token_public(row: ApiToken, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "ApiToken",
        "category": "api-tokens",
        "id": row.id,
        "uri": f"/rest/api-tokens/{row.id}",
        "name": row.name,
        "userName": row.user.name,
        "prefix": row.prefix,
        "created": ts(row.created),
        "expires": ts(row.expires),
        "lastUsed": ts(row.last_used),
    }
    if secret is not None:
        body["token"] = secret  # shown once, at creation
    return body
