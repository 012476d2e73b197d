"""Deployment plans (Image Streamer ``deployment-plans``): a build plan, an optional golden image
and per-attribute overrides. OneView's ``os-deployment-plans`` are a read-only view of these rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, ResourceMixin


class DeploymentPlan(ResourceMixin, Base):
    __tablename__ = "deployment_plans"

    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # RESTRICT: a build plan in use cannot go (the service answers 409 first).
    build_plan_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("build_plans.id", ondelete="RESTRICT"), index=True)
    # No foreign key: an installer-based or empty-volume plan has no golden image.
    golden_image_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    # An installer deploy's installer (plans/installer.py), when the plan has no golden image.
    installer: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    hp_provided: Mapped[bool] = mapped_column(Boolean, default=False)
    # Overrides of the build plan's attributes: [{"name", "value", "visible", "editable"}]; a
    # password's value is always null here and its override, if any, sealed in sealed_values.
    custom_attributes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    sealed_values: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(64), default="")
