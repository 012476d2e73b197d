"""Logging in: sessions (OneView ``auth`` header, UI cookie) and API tokens for automation.

Every authenticated call resolves to a :class:`Principal`. A session expires after
``sessions.idle_timeout_s`` without use; it can be revoked by its user or an administrator, and
all of a user's sessions end when the password changes or the user is disabled.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.config import SessionSettings
from appliance.errors import AuthenticationFailed, Forbidden, InvalidInput, NotFound, SessionInvalid
from appliance.models import ApiToken, LoginSession
from appliance.repositories.users import SessionRepository, TokenRepository, UserRepository
from appliance.roles import Role
from appliance.security import TOKEN_PREFIX, digest, new_api_token, new_session_id, verify_password

MAX_TOKEN_DAYS = 3650


@dataclass(frozen=True)
class Principal:
    """Who is calling, and through what credential."""

    user_id: str
    name: str
    role: Role
    via: str  # session | token
    session_digest: str | None = None
    csrf_token: str = ""

    def require(self, needed: Role) -> None:
        if not self.role.allows(needed):
            raise Forbidden(user=self.name, role=self.role.value, required=needed.value)


class AuthService:
    def __init__(self, db: Session, settings: SessionSettings, clock: Clock = system_clock) -> None:
        self.users = UserRepository(db)
        self.sessions = SessionRepository(db)
        self.tokens = TokenRepository(db)
        self.settings = settings
        self.clock = clock

    # --- sessions ------------------------------------------------------------------------------
    def login(self, name: str, password: str, kind: str = "api", source_ip: str = "") -> tuple[str, LoginSession]:
        """Check the credentials and open a session; returns the secret sessionID and the row."""
        user = self.users.by_name(name)
        ok = verify_password(user.password_hash if user else None, password)
        if user is None or not ok or not user.enabled:
            raise AuthenticationFailed()
        now = self.clock()
        session_id = new_session_id()
        row = LoginSession(
            digest=digest(session_id),
            user_id=user.id,
            kind=kind,
            csrf_token=secrets.token_urlsafe(24),
            source_ip=source_ip,
            created=now,
            last_used=now,
            expires=now + timedelta(seconds=self.settings.idle_timeout_s),
        )
        self.sessions.add(row)
        return session_id, row

    def logout(self, session_id: str) -> None:
        row = self.sessions.by_digest(digest(session_id))
        if row is None:
            raise SessionInvalid()
        self.sessions.delete(row)

    def resolve(self, credential: str | None) -> Principal:
        """Authenticate a sessionID or API token; raises SessionInvalid when it is not valid now."""
        if not credential:
            raise SessionInvalid()
        if credential.startswith(TOKEN_PREFIX):
            return self._resolve_token(credential)
        row = self.sessions.by_digest(digest(credential))
        now = self.clock()
        if row is None or row.expires <= now or not row.user.enabled:
            raise SessionInvalid()
        if (now - row.last_used).total_seconds() >= self.settings.touch_interval_s:
            row.last_used = now
            row.expires = now + timedelta(seconds=self.settings.idle_timeout_s)
        return Principal(
            user_id=row.user.id,
            name=row.user.name,
            role=Role(row.user.role),
            via="session",
            session_digest=row.digest,
            csrf_token=row.csrf_token,
        )

    def _resolve_token(self, token: str) -> Principal:
        row = self.tokens.by_digest(digest(token))
        now = self.clock()
        if row is None or (row.expires is not None and row.expires <= now) or not row.user.enabled:
            raise SessionInvalid()
        if row.last_used is None or (now - row.last_used).total_seconds() >= self.settings.touch_interval_s:
            row.last_used = now
        return Principal(user_id=row.user.id, name=row.user.name, role=Role(row.user.role), via="token")

    def list_sessions(self, principal: Principal, all_users: bool) -> list[LoginSession]:
        if all_users:
            principal.require(Role.INFRASTRUCTURE_ADMINISTRATOR)
            return self.sessions.all()
        return self.sessions.for_user(principal.user_id)

    def revoke_session(self, principal: Principal, session_id: str) -> None:
        row = self.sessions.by_public_id(session_id)
        if row is None:
            raise NotFound(kind="session", ident=session_id)
        if row.user_id != principal.user_id:
            principal.require(Role.INFRASTRUCTURE_ADMINISTRATOR)
        self.sessions.delete(row)

    def purge_expired(self) -> int:
        return self.sessions.purge_expired(self.clock())

    # --- API tokens ----------------------------------------------------------------------------
    def create_token(self, principal: Principal, name: str, days: int | None) -> tuple[str, ApiToken]:
        """A token acts with its user's role; the secret is returned once and never again."""
        name = name.strip()
        if not name or len(name) > 128:
            raise InvalidInput(reason="token name must be 1-128 characters")
        if days is not None and not 1 <= days <= MAX_TOKEN_DAYS:
            raise InvalidInput(reason=f"expiresInDays must be between 1 and {MAX_TOKEN_DAYS}")
        secret = new_api_token()
        now = self.clock()
        row = ApiToken(
            digest=digest(secret),
            prefix=secret[: len(TOKEN_PREFIX) + 4],
            name=name,
            user_id=principal.user_id,
            created=now,
            expires=now + timedelta(days=days) if days else None,
        )
        self.tokens.add(row)
        return secret, row

    def list_tokens(self, principal: Principal, all_users: bool) -> list[ApiToken]:
        if all_users:
            principal.require(Role.INFRASTRUCTURE_ADMINISTRATOR)
            return self.tokens.for_user(None)
        return self.tokens.for_user(principal.user_id)

    def revoke_token(self, principal: Principal, token_id: str) -> None:
        row = self.tokens.get(token_id)
        if row is None:
            raise NotFound(kind="API token", ident=token_id)
        if row.user_id != principal.user_id:
            principal.require(Role.INFRASTRUCTURE_ADMINISTRATOR)
        self.tokens.delete(row)

