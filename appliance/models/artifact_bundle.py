"""Artifact bundles (Image Streamer ``artifact-bundles``): a zip of plan scripts, build plans,
deployment plans and, optionally, golden images, moved between appliances. The zip is kept on
disk (``INGOT_HOME/bundles/<id>.zip``); the row lists what it holds and, once it has been
extracted, what each artifact became here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, ResourceMixin, UtcDateTime


class ArtifactBundle(ResourceMixin, Base):
    __tablename__ = "artifact_bundles"

    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)  # the manifest's "Read Only"
    artifact_type: Mapped[str] = mapped_column(String(32), default="USER")
    bundle_timestamp: Mapped[str] = mapped_column(String(64), default="")  # the manifest's "Time Stamp"
    origin: Mapped[str] = mapped_column(String(16))  # uploaded | created
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # What the zip holds, per kind: {"planScripts": [{"id": <id in the bundle>, "name": ...}], ...}
    contents: Mapped[dict[str, list[dict[str, Any]]]] = mapped_column(JSON, default=dict)
    # After extraction, per kind: {<id in the bundle>: <URI of the artifact here>}.
    imported: Mapped[dict[str, dict[str, str]]] = mapped_column(JSON, default=dict)
    extracted: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    created_by: Mapped[str] = mapped_column(String(64), default="")
