"""The audit log: one row for every state-changing call, successful or not."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, new_id, utcnow


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    timestamp: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_name: Mapped[str] = mapped_column(String(64), default="", index=True)  # "" when unauthenticated
    source_ip: Mapped[str] = mapped_column(String(64), default="")
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    status_code: Mapped[int] = mapped_column(Integer)
    result: Mapped[str] = mapped_column(String(16))  # Success | Failure
    resource_uri: Mapped[str | None] = mapped_column(String(512), default=None)
    request_id: Mapped[str] = mapped_column(String(36), default="")
    message: Mapped[str] = mapped_column(String(512), default="")
