"""Shared pieces of the wire format."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Request bodies: unknown fields are rejected with a 400 that names them."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def ts(value: datetime | None) -> str | None:
    """OneView timestamps: UTC with milliseconds and a Z."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def resource_header(
    type_name: str, category: str, uri: str, rid: str, name: str, etag: str,
    created: datetime, modified: datetime, description: str | None = None,
    state: str | None = None, status: str = "OK",
) -> dict[str, Any]:
    """The fields every OneView resource has."""
    return {
        "type": type_name,
        "category": category,
        "uri": uri,
        "id": rid,
        "name": name,
        "description": description,
        "state": state,
        "status": status,
        "eTag": etag,
        "created": ts(created),
        "modified": ts(modified),
    }
