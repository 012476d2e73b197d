"""Server profiles (OneView ``server-profiles``): a server, the deployment plan it runs and the
attribute values it gets. Applying one deploys the server; the OS volume lives as long as the
profile."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, ResourceMixin


class ServerProfile(ResourceMixin, Base):
    __tablename__ = "server_profiles"

    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # One profile per server (OneView's rule). RESTRICT: remove the profile before the server.
    server_hardware_id: Mapped[str | None] = mapped_column(
        ForeignKey("server_hardware.id", ondelete="RESTRICT"), unique=True, default=None)
    deployment_plan_id: Mapped[str | None] = mapped_column(
        ForeignKey("deployment_plans.id", ondelete="RESTRICT"), default=None, index=True)
    # osCustomAttributes as given, password values replaced by "********"; their values sealed
    # with the appliance's SecretBox in sealed_attributes (name -> ciphertext).
    os_custom_attributes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    sealed_attributes: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    os_volume_id: Mapped[str | None] = mapped_column(
        ForeignKey("os_volumes.id", ondelete="SET NULL"), default=None)
    boot: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    boot_mode: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    root_device_hints: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Creating | Normal | Updating | Deleting | Error (OneView's profile states); status OK | Critical.
    state: Mapped[str] = mapped_column(String(16), default="Creating")
    status: Mapped[str] = mapped_column(String(16), default="OK")
    state_reason: Mapped[str | None] = mapped_column(Text, default=None)
    task_id: Mapped[str | None] = mapped_column(String(36), default=None)  # the last apply or delete
    created_by: Mapped[str] = mapped_column(String(64), default="")
