"""Declarative base, column types and mixins shared by every model.

All timestamps are timezone-aware UTC on both backends: SQLite stores naive text, so
``UtcDateTime`` re-attaches UTC on the way out instead of every caller remembering to.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Integer, MetaData, String, literal_column
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Stable constraint names so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A DateTime that only accepts and always returns aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {datetime: UtcDateTime()}


class ResourceMixin:
    """Columns every REST resource has: id, created, modified and a version that makes the eTag."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    modified: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Bumped by the database on every UPDATE, so the eTag changes whoever writes the row. (Not
    # SQLAlchemy's version_id_col: the runner's progress writes and a user's cancel may race, and
    # neither should fail with StaleDataError; If-Match is checked by the service instead.)
    version: Mapped[int] = mapped_column(
        Integer, default=1, nullable=False, onupdate=literal_column("version") + 1
    )

    @property
    def etag(self) -> str:
        return f"{self.version}-{int(self.modified.timestamp() * 1000)}"
