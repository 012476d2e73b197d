"""Queries for artifact bundles."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.models import ArtifactBundle
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged

ARTIFACT_BUNDLE_FIELDS = {
    "name": Field(ArtifactBundle.name, case_insensitive=True),
    "description": Field(ArtifactBundle.description, case_insensitive=True),
    "readOnly": Field(ArtifactBundle.read_only, Kind.BOOL),
    "checkSum": Field(ArtifactBundle.sha256),
    "size": Field(ArtifactBundle.size, Kind.INT),
    "created": Field(ArtifactBundle.created, Kind.TIME),
    "modified": Field(ArtifactBundle.modified, Kind.TIME),
}


class ArtifactBundleRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def page(self, query: CollectionQuery) -> Page[ArtifactBundle]:
        return paged(self.db, select(ArtifactBundle), query, ARTIFACT_BUNDLE_FIELDS,
                     (ArtifactBundle.name, ArtifactBundle.id))

    def get(self, bundle_id: str) -> ArtifactBundle | None:
        return self.db.get(ArtifactBundle, bundle_id)

    def by_name(self, name: str) -> ArtifactBundle | None:
        return self.db.scalar(select(ArtifactBundle).where(ArtifactBundle.name == name))

    def ids(self) -> set[str]:
        return set(self.db.scalars(select(ArtifactBundle.id)))

    def add(self, bundle: ArtifactBundle) -> ArtifactBundle:
        self.db.add(bundle)
        self.db.flush()
        return bundle

    def delete(self, bundle: ArtifactBundle) -> None:
        self.db.delete(bundle)
        self.db.flush()
