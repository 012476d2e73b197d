"""Alerts: conditions an operator must notice, OneView-shaped (severity, alertState, corrective action).

An alert is keyed by ``alert_type`` and the resource it concerns; raising the same condition again
while it is still active bumps ``count`` instead of flooding the list.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, ResourceMixin


class Alert(ResourceMixin, Base):
    __tablename__ = "alerts"

    alert_type: Mapped[str] = mapped_column(String(128), index=True)  # e.g. Ingot.Tasks.Interrupted
    severity: Mapped[str] = mapped_column(String(16))  # OK | Warning | Critical | Unknown
    state: Mapped[str] = mapped_column(String(16), index=True)  # Active | Locked | Cleared
    description: Mapped[str] = mapped_column(Text)
    corrective_action: Mapped[str] = mapped_column(Text, default="")
    resource_uri: Mapped[str | None] = mapped_column(String(255), default=None, index=True)
    resource_name: Mapped[str | None] = mapped_column(String(255), default=None)
    resource_category: Mapped[str | None] = mapped_column(String(64), default=None)
    count: Mapped[int] = mapped_column(Integer, default=1)
    cleared_by: Mapped[str | None] = mapped_column(String(64), default=None)
    cleared_at: Mapped[datetime | None] = mapped_column(default=None)
