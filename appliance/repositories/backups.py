"""Queries for backups."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.models import Backup
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged

BACKUP_FIELDS = {
    "name": Field(Backup.name, case_insensitive=True),
    "created": Field(Backup.created, Kind.TIME),
    "createdBy": Field(Backup.created_by, case_insensitive=True),
}


class BackupRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def page(self, query: CollectionQuery) -> Page[Backup]:
        return paged(self.db, select(Backup), query, BACKUP_FIELDS, (Backup.created.desc(), Backup.id))

    def get(self, backup_id: str) -> Backup | None:
        return self.db.get(Backup, backup_id)

    def add(self, backup: Backup) -> Backup:
        self.db.add(backup)
        self.db.flush()
        return backup

    def delete(self, backup: Backup) -> None:
        self.db.delete(backup)
        self.db.flush()
