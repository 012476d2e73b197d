"""The OneView collection envelope and the query parameters that select a page of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Query

from appliance.query import CollectionQuery, build_query
from appliance.repositories.base import Page

T = TypeVar("T")


@dataclass(frozen=True)
class CollectionParams:
    query: CollectionQuery
    filters: list[str]  # as sent, to build page URIs
    sort: str | None


def collection_params(
    start: Annotated[str | None, Query()] = None,
    count: Annotated[str | None, Query()] = None,
    filter: Annotated[list[str] | None, Query()] = None,
    sort: Annotated[str | None, Query()] = None,
) -> CollectionParams:
    return CollectionParams(build_query(start, count, filter or [], sort), filter or [], sort)


QueryDep = Annotated[CollectionParams, Depends(collection_params)]


def _page_uri(base: str, params: CollectionParams, start: int) -> str:
    pairs: list[tuple[str, str]] = [("start", str(start)), ("count", str(params.query.count))]
    pairs += [("filter", f) for f in params.filters]
    if params.sort:
        pairs.append(("sort", params.sort))
    return f"{base}?{urlencode(pairs)}"


def envelope(
    base: str,
    category: str,
    type_name: str,
    page: Page[T],
    render: Callable[[T], dict[str, Any]],
    params: CollectionParams,
) -> dict[str, Any]:
    """``{type, category, uri, start, count, total, members, nextPageUri, prevPageUri}``.

    The HPE SDK follows ``nextPageUri`` until it is null, so it is null on the last page.
    """
    members = [render(item) for item in page.members]
    step = page.count
    next_uri = prev_uri = None
    if step > 0 and page.start + len(members) < page.total:
        next_uri = _page_uri(base, params, page.start + step)
    if step > 0 and page.start > 0:
        prev_uri = _page_uri(base, params, max(0, page.start - step))
    return {
        "type": type_name,
        "category": category,
        "uri": _page_uri(base, params, page.start),
        "start": page.start,
        "count": len(members),
        "total": page.total,
        "members": members,
        "nextPageUri": next_uri,
        "prevPageUri": prev_uri,
    }
