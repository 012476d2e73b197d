"""OS build plans (Image Streamer ``build-plans``): ordered plan-script steps plus the custom
attribute definitions their tokens need."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, ResourceMixin


class BuildPlan(ResourceMixin, Base):
    __tablename__ = "build_plans"

    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    plan_type: Mapped[str] = mapped_column(String(16))  # oeBuildPlanType: deploy | capture
    hp_provided: Mapped[bool] = mapped_column(Boolean, default=False)
    # [{"serialNumber": int, "planScriptId": str, "parameters": str}], in serialNumber order.
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # CustomAttribute.to_hpe() per attribute; a password's value is always null here ...
    custom_attributes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # ... and its default, when it has one, is here: {name: SecretBox-sealed value}.
    sealed_values: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(64), default="")
