"""Plan scripts (Image Streamer ``plan-scripts``): guestfish command lists with ``@Token@``
custom-attribute placeholders, run in order by build plans against an OS volume."""

from __future__ import annotations

from sqlalchemy import Boolean, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, ResourceMixin


class PlanScript(ResourceMixin, Base):
    __tablename__ = "plan_scripts"

    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    plan_type: Mapped[str] = mapped_column(String(16))  # deploy | capture | general
    content: Mapped[str] = mapped_column(Text, default="")
    # True only for HPE's read-only artifacts (from a bundle); the API never sets it.
    hp_provided: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(64), default="")
