"""Tasks: long work with progress, persisted so that another runner can take it over.

A task is claimed by a runner through a lease (``lease_owner`` + ``lease_expires``) renewed while
the work runs. A runner that dies stops renewing; a restarted runner on the same node recognises
its predecessor's leases at once, another node once they expire (see appliance/tasks/runner.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from appliance.db.base import Base, ResourceMixin, utcnow


class Task(ResourceMixin, Base):
    __tablename__ = "tasks"

    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64))  # handler key, e.g. "backup"
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # never secrets
    owner: Mapped[str] = mapped_column(String(64))
    task_type: Mapped[str] = mapped_column(String(16), default="User")  # User | Appliance
    state: Mapped[str] = mapped_column(String(16), index=True)  # OneView taskState
    status: Mapped[str] = mapped_column(String(255), default="")  # OneView taskStatus (one line)
    state_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    percent_complete: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    resource_uri: Mapped[str | None] = mapped_column(String(255), default=None, index=True)
    resource_name: Mapped[str | None] = mapped_column(String(255), default=None)
    resource_category: Mapped[str | None] = mapped_column(String(64), default=None)
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), default=None, index=True
    )
    inline: Mapped[bool] = mapped_column(Boolean, default=False)  # a phase run inside its parent's handler
    started: Mapped[datetime | None] = mapped_column(default=None)
    completed: Mapped[datetime | None] = mapped_column(default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_expires: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested_by: Mapped[str | None] = mapped_column(String(64), default=None)
    checkpoint: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Results too rich for associatedResource (e.g. what a discovery scan found): OneView ``data``.
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    progress: Mapped[list[TaskProgress]] = relationship(
        back_populates="task", cascade="all, delete-orphan", order_by="TaskProgress.seq"
    )


class TaskProgress(Base):
    """One line of a task's ``progressUpdates``."""

    __tablename__ = "task_progress"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    timestamp: Mapped[datetime] = mapped_column(default=utcnow)
    status_update: Mapped[str] = mapped_column(Text)

    task: Mapped[Task] = relationship(back_populates="progress")
