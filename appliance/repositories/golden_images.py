"""Queries for golden images."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance.models import GoldenImage
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged

GOLDEN_IMAGE_FIELDS = {
    "name": Field(GoldenImage.name, case_insensitive=True),
    "description": Field(GoldenImage.description, case_insensitive=True),
    "checkSum": Field(GoldenImage.sha256),
    "size": Field(GoldenImage.size, Kind.INT),
    "imageCapture": Field(GoldenImage.image_capture, Kind.BOOL),
    "created": Field(GoldenImage.created, Kind.TIME),
    "modified": Field(GoldenImage.modified, Kind.TIME),
}


class GoldenImageRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def page(self, query: CollectionQuery) -> Page[GoldenImage]:
        return paged(self.db, select(GoldenImage), query, GOLDEN_IMAGE_FIELDS, (GoldenImage.name, GoldenImage.id))

    def get(self, image_id: str) -> GoldenImage | None:
        return self.db.get(GoldenImage, image_id)

    def by_name(self, name: str) -> GoldenImage | None:
        return self.db.scalar(select(GoldenImage).where(GoldenImage.name == name))

    def count_with_checksum(self, sha256: str) -> int:
        return self.db.scalar(select(func.count()).select_from(GoldenImage).where(GoldenImage.sha256 == sha256)) or 0

    def checksums(self) -> set[str]:
        return set(self.db.scalars(select(GoldenImage.sha256).distinct()))

    def add(self, image: GoldenImage) -> GoldenImage:
        self.db.add(image)
        self.db.flush()
        return image

    def delete(self, image: GoldenImage) -> None:
        self.db.delete(image)
        self.db.flush()
