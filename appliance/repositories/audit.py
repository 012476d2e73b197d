"""Queries for the audit log."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.models import AuditEntry
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged

AUDIT_FIELDS = {
    "userName": Field(AuditEntry.user_name, case_insensitive=True),
    "method": Field(AuditEntry.method),
    "path": Field(AuditEntry.path),
    "statusCode": Field(AuditEntry.status_code, Kind.INT),
    "result": Field(AuditEntry.result),
    "resourceUri": Field(AuditEntry.resource_uri),
    "timestamp": Field(AuditEntry.timestamp, Kind.TIME),
    "created": Field(AuditEntry.timestamp, Kind.TIME),
}


class AuditRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def page(self, query: CollectionQuery) -> Page[AuditEntry]:
        return paged(self.db, select(AuditEntry), query, AUDIT_FIELDS, (AuditEntry.timestamp.desc(),
                                                                            AuditEntry.id))

    def get(self, entry_id: str) -> AuditEntry | None:
        return self.db.get(AuditEntry, entry_id)

    def add(self, entry: AuditEntry) -> None:
        self.db.add(entry)
        self.db.flush()
