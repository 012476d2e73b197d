"""Golden images (Image Streamer ``golden-images``): the library's rows; the files are in the image
store (golden_images/store.py), named by ``sha256``."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, ResourceMixin


class GoldenImage(ResourceMixin, Base):
    __tablename__ = "golden_images"

    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # The store's file: golden/<sha256>.qcow2. Two rows may share one (the same image imported
    # twice under two names); the file goes when the last row does.
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)  # bytes of the stored qcow2
    virtual_size: Mapped[int] = mapped_column(BigInteger)  # bytes the guest sees
    source_format: Mapped[str] = mapped_column(String(16))  # qcow2 | raw | vmdk | vpc | vhdx | zip+raw
    original_filename: Mapped[str] = mapped_column(String(255), default="")
    image_capture: Mapped[bool] = mapped_column(Boolean, default=False)
    os_volume_uri: Mapped[str | None] = mapped_column(String(255), default=None)
    build_plan_uri: Mapped[str | None] = mapped_column(String(255), default=None)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    task_id: Mapped[str | None] = mapped_column(String(36), default=None)
