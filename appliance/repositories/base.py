"""Turning a :class:`~appliance.query.CollectionQuery` into SQL, the same way for every collection.

Each repository declares which API field names may be filtered and sorted on and which column
each maps to; anything else is a clear ``INVALID_FILTER`` error rather than a silent empty page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from appliance.errors import InvalidFilter
from appliance.query import CollectionQuery, Condition, Op

T = TypeVar("T")


class Kind(Enum):
    TEXT = "text"
    INT = "int"
    TIME = "time"
    BOOL = "bool"


@dataclass(frozen=True)
class Field:
    column: InstrumentedAttribute[Any]
    kind: Kind = Kind.TEXT
    case_insensitive: bool = False


@dataclass(frozen=True)
class Page(Generic[T]):
    members: list[T]
    total: int
    start: int
    count: int  # as requested (-1 = all)


def _coerce(spec: Field, name: str, value: str) -> Any:
    try:
        if spec.kind is Kind.INT:
            return int(value)
        if spec.kind is Kind.TIME:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                raise ValueError("no timezone")
            return parsed
        if spec.kind is Kind.BOOL:
            if value.lower() not in {"true", "false"}:
                raise ValueError("not a boolean")
            return value.lower() == "true"
    except ValueError as exc:
        raise InvalidFilter(reason=f"{name}: {value!r} is not a valid {spec.kind.value} ({exc})") from None
    return value


def _condition(fields: dict[str, Field], cond: Condition) -> ColumnElement[bool]:
    spec = fields.get(cond.field)
    if spec is None:
        raise InvalidFilter(reason=f"unknown field {cond.field!r}; known: {', '.join(sorted(fields))}")
    column: Any = spec.column
    if cond.value is None:
        if cond.op is Op.EQ:
            return column.is_(None)  # type: ignore[no-any-return]
        if cond.op is Op.NE:
            return column.is_not(None)  # type: ignore[no-any-return]
        raise InvalidFilter(reason=f"{cond.field}: null only compares with = or <>")
    if cond.op is Op.MATCHES:
        if spec.kind is not Kind.TEXT:
            raise InvalidFilter(reason=f"{cond.field}: matches works on text fields only")
        return func.lower(column).like(cond.value.lower(), escape="\\")
    value = _coerce(spec, cond.field, cond.value)
    if spec.case_insensitive and spec.kind is Kind.TEXT:
        column, value = func.lower(column), value.lower()
    ops = {
        Op.EQ: column.__eq__,
        Op.NE: column.__ne__,
        Op.GT: column.__gt__,
        Op.GE: column.__ge__,
        Op.LT: column.__lt__,
        Op.LE: column.__le__,
    }
    return ops[cond.op](value)  # type: ignore[no-any-return]


def paged(
    db: Session,
    stmt: Select[T],
    query: CollectionQuery,
    fields: dict[str, Field],
    default_sort: tuple[Any, ...],
) -> Page[T]:
    """Apply filter, count the total, then sort and slice."""
    for cond in query.conditions:
        stmt = stmt.where(_condition(fields, cond))
    total = db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    order: list[Any] = []
    for key in query.sort:
        spec = fields.get(key.field)
        if spec is None:
            raise InvalidFilter(reason=f"cannot sort on unknown field {key.field!r}")
        order.append(spec.column.desc() if key.descending else spec.column.asc())
    order.extend(default_sort)
    stmt = stmt.order_by(*order).offset(query.start)
    if query.count >= 0:
        stmt = stmt.limit(query.count)
    members = list(db.scalars(stmt))
    return Page(members=members, total=total, start=query.start, count=query.count)
