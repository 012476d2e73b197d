"""Queries for users, login sessions and API tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from appliance.models import ApiToken, LoginSession, User
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged

USER_FIELDS = {
    "name": Field(User.name, case_insensitive=True),
    "userName": Field(User.name, case_insensitive=True),
    "fullName": Field(User.full_name, case_insensitive=True),
    "emailAddress": Field(User.email, case_insensitive=True),
    "role": Field(User.role),
    "enabled": Field(User.enabled, Kind.BOOL),
    "created": Field(User.created, Kind.TIME),
    "modified": Field(User.modified, Kind.TIME),
}


class UserRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def page(self, query: CollectionQuery) -> Page[User]:
        return paged(self.db, select(User), query, USER_FIELDS, (User.name,))

    def get(self, user_id: str) -> User | None:
        return self.db.get(User, user_id)

    def by_name(self, name: str) -> User | None:
        return self.db.scalar(select(User).where(User.name_key == name.lower()))

    def count(self) -> int:
        return self.db.scalar(select(func.count()).select_from(User)) or 0

    def count_enabled_with_role(self, role: str) -> int:
        stmt = select(func.count()).select_from(User).where(User.role == role, User.enabled.is_(True))
        return self.db.scalar(stmt) or 0

    def add(self, user: User) -> User:
        self.db.add(user)
        self.db.flush()
        return user

    def delete(self, user: User) -> None:
        self.db.delete(user)
        self.db.flush()


class SessionRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def by_digest(self, digest: str) -> LoginSession | None:
        return self.db.get(LoginSession, digest)

    def by_public_id(self, session_id: str) -> LoginSession | None:
        return self.db.scalar(select(LoginSession).where(LoginSession.id == session_id))

    def for_user(self, user_id: str) -> list[LoginSession]:
        stmt = select(LoginSession).where(LoginSession.user_id == user_id).order_by(LoginSession.created)
        return list(self.db.scalars(stmt))

    def all(self) -> list[LoginSession]:
        return list(self.db.scalars(select(LoginSession).order_by(LoginSession.created)))

    def add(self, session: LoginSession) -> None:
        self.db.add(session)
        self.db.flush()

    def delete(self, session: LoginSession) -> None:
        self.db.delete(session)
        self.db.flush()

    def delete_for_user(self, user_id: str) -> None:
        self.db.execute(delete(LoginSession).where(LoginSession.user_id == user_id))

    def purge_expired(self, now: datetime) -> int:
        result = self.db.execute(delete(LoginSession).where(LoginSession.expires <= now))
        return int(result.rowcount)  # type: ignore[attr-defined]


class TokenRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def by_digest(self, digest: str) -> ApiToken | None:
        return self.db.scalar(select(ApiToken).where(ApiToken.digest == digest))

    def get(self, token_id: str) -> ApiToken | None:
        return self.db.get(ApiToken, token_id)

    def for_user(self, user_id: str | None) -> list[ApiToken]:
        stmt = select(ApiToken).order_by(ApiToken.created)
        if user_id is not None:
            stmt = stmt.where(ApiToken.user_id == user_id)
        return list(self.db.scalars(stmt))

    def add(self, token: ApiToken) -> None:
        self.db.add(token)
        self.db.flush()

    def delete(self, token: ApiToken) -> None:
        self.db.delete(token)
        self.db.flush()
