"""OneView collection queries: ``start``, ``count``, ``filter`` and ``sort``, parsed into data.

Pure: no SQL here. A repository turns a :class:`CollectionQuery` into a statement through a map of
the API field names it allows (``appliance/repositories/base.py``).

Filter forms accepted (several ``filter`` parameters are ANDed, as are ``AND``-joined terms)::

    "name='my-name'"        name='my-name'        name=my-name       (the HPE SDK sends the first)
    taskState<>'Running'    percentComplete>=50   name matches 'back%'
    associatedResource.resourceUri='/rest/backups/1'

Sort forms: ``name:ascending``, ``created:descending``, ``name:asc``, ``name:desc``, ``name``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from appliance.errors import InvalidFilter, InvalidInput

MAX_FILTER_LENGTH = 2048


class Op(StrEnum):
    EQ = "="
    NE = "<>"
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    MATCHES = "matches"


@dataclass(frozen=True)
class Condition:
    field: str
    op: Op
    value: str | None  # None is the literal null


@dataclass(frozen=True)
class SortKey:
    field: str
    descending: bool = False


@dataclass(frozen=True)
class CollectionQuery:
    start: int = 0
    count: int = -1  # -1: everything from start
    conditions: tuple[Condition, ...] = ()
    sort: tuple[SortKey, ...] = field(default_factory=tuple)


_TERM = re.compile(
    r"""^\s*(?P<field>[A-Za-z_][A-Za-z0-9_.]*)\s*
        (?P<op>==|=|<>|!=|>=|<=|>|<|\s+matches\s+|\s+MATCHES\s+)\s*
        (?P<value>'(?:[^']|'')*'|"(?:[^"])*"|[^'"\s]*)\s*$""",
    re.VERBOSE,
)
_AND = re.compile(r"\s+(?:AND|and)\s+")


def parse_filter(expression: str) -> list[Condition]:
    """Parse one ``filter`` parameter into ANDed conditions.

    :raises InvalidFilter: for anything that is not a term of the forms above.
    """
    if len(expression) > MAX_FILTER_LENGTH:
        raise InvalidFilter(reason=f"longer than {MAX_FILTER_LENGTH} characters")
    text = expression.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not text:
        return []
    return [_parse_term(term) for term in _split_and(text)]


def _split_and(text: str) -> list[str]:
    # Split on AND outside quotes only, so "name='a and b'" stays one term.
    parts, last = [], 0
    for match in _AND.finditer(text):
        if text[: match.start()].count("'") % 2 == 0:
            parts.append(text[last : match.start()])
            last = match.end()
    parts.append(text[last:])
    return parts


def _parse_term(term: str) -> Condition:
    match = _TERM.match(term)
    if match is None:
        raise InvalidFilter(reason=f"cannot parse {term.strip()!r}")
    raw_op = match["op"].strip().lower()
    op = {"==": Op.EQ, "=": Op.EQ, "<>": Op.NE, "!=": Op.NE, "matches": Op.MATCHES}.get(raw_op) or Op(raw_op)
    raw = match["value"]
    value: str | None
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        value = raw[1:-1].replace("''", "'")
    elif raw.lower() == "null":
        value = None
    else:
        value = raw
    return Condition(field=match["field"], op=op, value=value)


def parse_sort(expression: str) -> list[SortKey]:
    keys = []
    for part in expression.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, direction = part.partition(":")
        direction = direction.strip().lower() or "ascending"
        if direction not in {"ascending", "asc", "descending", "desc"}:
            raise InvalidFilter(reason=f"sort direction {direction!r} is not ascending or descending")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name.strip()):
            raise InvalidFilter(reason=f"cannot sort on {name.strip()!r}")
        keys.append(SortKey(field=name.strip(), descending=direction.startswith("desc")))
    return keys


def build_query(
    start: str | int | None, count: str | int | None, filters: list[str], sort: str | None
) -> CollectionQuery:
    """Validate the raw query parameters of a collection GET."""
    try:
        start_n = int(start) if start not in (None, "") else 0
        count_n = int(count) if count not in (None, "") else -1
    except (TypeError, ValueError):
        raise InvalidInput(reason="start and count must be integers") from None
    if start_n < 0:
        raise InvalidInput(reason="start must not be negative")
    if count_n < -1:
        raise InvalidInput(reason="count must be -1 (all) or a positive number")
    conditions: list[Condition] = []
    for expression in filters:
        conditions.extend(parse_filter(expression))
    return CollectionQuery(
        start=start_n,
        count=count_n,
        conditions=tuple(conditions),
        sort=tuple(parse_sort(sort)) if sort else (),
    )
