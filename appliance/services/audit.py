"""The audit log: who changed what, when, and whether it worked."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.errors import NotFound
from appliance.models import AuditEntry
from appliance.query import CollectionQuery
from appliance.repositories.audit import AuditRepository
from appliance.repositories.base import Page


@dataclass(frozen=True)
class AuditRecord:
    user_name: str
    source_ip: str
    method: str
    path: str
    status_code: int
    resource_uri: str | None
    request_id: str
    message: str = ""


class AuditService:
    def __init__(self, db: Session, clock: Clock = system_clock) -> None:
        self.entries = AuditRepository(db)
        self.clock = clock

    def record(self, rec: AuditRecord) -> None:
        self.entries.add(
            AuditEntry(
                timestamp=self.clock(),
                user_name=rec.user_name[:64],
                source_ip=rec.source_ip[:64],
                method=rec.method[:8],
                path=rec.path[:512],
                status_code=rec.status_code,
                result="Success" if rec.status_code < 400 else "Failure",
                resource_uri=rec.resource_uri[:512] if rec.resource_uri else None,
                request_id=rec.request_id,
                message=rec.message[:512],
            )
        )

    def list(self, query: CollectionQuery) -> Page[AuditEntry]:
        return self.entries.page(query)

    def get(self, entry_id: str) -> AuditEntry:
        entry = self.entries.get(entry_id)
        if entry is None:
            raise NotFound(kind="audit log entry", ident=entry_id)
        return entry
