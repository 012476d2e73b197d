"""OS volumes (Image Streamer ``os-volumes``): a server's disk, cloned from a golden image. The file
is the store's ``volumes/<id>.qcow2``, a copy-on-write overlay on the image (or a full copy)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, ResourceMixin


class OsVolume(ResourceMixin, Base):
    __tablename__ = "os_volumes"

    name: Mapped[str] = mapped_column(String(255), unique=True)
    # RESTRICT: a golden image with volumes on it cannot go (the service answers 409 first).
    golden_image_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("golden_images.id", ondelete="RESTRICT"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)  # virtual bytes
    full_clone: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    task_id: Mapped[str | None] = mapped_column(String(36), default=None)
