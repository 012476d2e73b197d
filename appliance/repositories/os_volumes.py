"""Queries for OS volumes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.models import OsVolume
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged

OS_VOLUME_FIELDS = {
    "name": Field(OsVolume.name, case_insensitive=True),
    "size": Field(OsVolume.size, Kind.INT),
    "created": Field(OsVolume.created, Kind.TIME),
    "modified": Field(OsVolume.modified, Kind.TIME),
}


class OsVolumeRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def page(self, query: CollectionQuery) -> Page[OsVolume]:
        return paged(self.db, select(OsVolume), query, OS_VOLUME_FIELDS, (OsVolume.name, OsVolume.id))

    def get(self, volume_id: str) -> OsVolume | None:
        return self.db.get(OsVolume, volume_id)

    def by_name(self, name: str) -> OsVolume | None:
        return self.db.scalar(select(OsVolume).where(OsVolume.name == name))

    def names_on_image(self, image_id: str) -> list[str]:
        return list(self.db.scalars(select(OsVolume.name).where(OsVolume.golden_image_id == image_id)
                                    .order_by(OsVolume.name)))

    def ids(self) -> set[str]:
        return set(self.db.scalars(select(OsVolume.id)))

    def add(self, volume: OsVolume) -> OsVolume:
        self.db.add(volume)
        self.db.flush()
        return volume

    def delete(self, volume: OsVolume) -> None:
        self.db.delete(volume)
        self.db.flush()
