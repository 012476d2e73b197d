"""Users, their login sessions and their API tokens.

Session IDs and API tokens are bearer secrets: only their SHA-256 digests are stored, so a copy of
the database (or a backup) cannot be replayed as a login.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from appliance.db.base import Base, ResourceMixin, new_id, utcnow


class User(ResourceMixin, Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), unique=True)
    # Lower-cased copy: OneView user names are case-insensitive at login.
    name_key: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(255), default="")
    email: Mapped[str] = mapped_column(String(255), default="")
    role: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    password_changed: Mapped[datetime] = mapped_column(default=utcnow)

    sessions: Mapped[list[LoginSession]] = relationship(back_populates="user", cascade="all, delete-orphan")
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")


class LoginSession(Base):
    __tablename__ = "login_sessions"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the sessionID
    id: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)  # public handle for revocation
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8), default="api")  # api | ui
    csrf_token: Mapped[str] = mapped_column(String(64), default="")
    source_ip: Mapped[str] = mapped_column(String(64), default="")
    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_used: Mapped[datetime] = mapped_column(default=utcnow)
    expires: Mapped[datetime] = mapped_column(index=True)

    user: Mapped[User] = relationship(back_populates="sessions")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, shown so users can tell tokens apart
    name: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires: Mapped[datetime | None] = mapped_column(default=None)
    last_used: Mapped[datetime | None] = mapped_column(default=None)

    user: Mapped[User] = relationship(back_populates="tokens")
