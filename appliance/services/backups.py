"""Appliance backups (OneView ``/rest/backups``): a consistent archive of the database.

The archive is a gzip'd tar holding ``manifest.json`` (format, appliance version, schema revision,
per-table row counts and SHA-256) and ``tables/<name>.jsonl``. Login sessions are left out (they
are short-lived bearer secrets); password hashes and token digests are included, so archives are
written mode 0600 and should be kept like the database itself.

The archive is written to a temp name, fsynced and renamed, so a half-written backup is never
visible; the task is resumable because starting again from scratch is always correct.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

import appliance
from appliance.clock import Clock, system_clock
from appliance.db.base import Base
from appliance.db.migrate import current_revision
from appliance.db.session import unit_of_work
from appliance.errors import BackupFailed, NotFound
from appliance.models import Backup, Task
from appliance.query import CollectionQuery
from appliance.repositories.backups import BackupRepository
from appliance.repositories.base import Page
from appliance.services.tasks import ResourceRef, TaskService
from appliance.tasks.handlers import Outcome, TaskContext, TaskHandler

FORMAT = "ingot-backup/1"
EXCLUDED_TABLES = frozenset({"login_sessions", "backups", "alembic_version"})
TEMP_PREFIX = ".tmp-"


def backup_dir(home: Path) -> Path:
    return home / "backups"


class BackupService:
    def __init__(self, db: Session, home: Path, clock: Clock = system_clock,
                 tasks: TaskService | None = None) -> None:
        self.backups = BackupRepository(db)
        self.dir = backup_dir(home)
        self.clock = clock
        self.tasks = tasks or TaskService(db, clock)

    def start(self, owner: str) -> Task:
        return self.tasks.create(
            kind=BackupTask.kind, name="Create backup", owner=owner,
            resource=ResourceRef(uri=None, name=None, category="backups"),
        )

    def list(self, query: CollectionQuery) -> Page[Backup]:
        return self.backups.page(query)

    def get(self, backup_id: str) -> Backup:
        backup = self.backups.get(backup_id)
        if backup is None:
            raise NotFound(kind="backup", ident=backup_id)
        return backup

    def archive_path(self, backup_id: str) -> Path:
        backup = self.get(backup_id)
        path = self.dir / backup.file_name
        if not path.is_file():
            raise NotFound(kind="backup archive", ident=backup.file_name)
        return path

    def delete(self, backup_id: str) -> None:
        backup = self.get(backup_id)
        (self.dir / backup.file_name).unlink(missing_ok=True)
        self.backups.delete(backup)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode()}
    if isinstance(value, Decimal):
        return str(value)
    return value


class BackupTask(TaskHandler):
    kind: ClassVar[str] = "backup"
    resumable: ClassVar[bool] = True

    async def run(self, ctx: TaskContext) -> Outcome:
        directory = backup_dir(self.app.settings.home)
        await ctx.run_sync(lambda: directory.mkdir(mode=0o700, parents=True, exist_ok=True))
        temp = directory / f"{TEMP_PREFIX}{ctx.task_id}.tar.gz"
        await ctx.run_sync(lambda: temp.unlink(missing_ok=True))  # leftover of an interrupted attempt
        tables = [t for t in Base.metadata.sorted_tables if t.name not in EXCLUDED_TABLES]
        stamp = self.app.clock()
        name = f"ingot-backup-{stamp:%Y%m%d-%H%M%S}-{ctx.task_id[:8]}"
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "applianceVersion": appliance.__version__,
            "created": stamp.isoformat(),
            "createdBy": ctx.owner,
            "tables": {},
        }
        await ctx.progress(1, f"Writing {len(tables)} tables.")
        try:
            with tarfile.open(temp, "w:gz") as tar:
                # One read transaction for every table, so the archive is a consistent snapshot.
                session = self.app.session_factory()
                try:
                    if session.get_bind().dialect.name == "postgresql":
                        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
                    manifest["schemaRevision"] = await ctx.run_sync(current_revision, self.app.engine)
                    for index, table in enumerate(tables):
                        data, rows = await ctx.run_sync(self._dump_table, session, table)
                        manifest["tables"][table.name] = {
                            "rows": rows, "sha256": hashlib.sha256(data).hexdigest()}
                        await ctx.run_sync(_add_member, tar, f"tables/{table.name}.jsonl", data)
                        await ctx.progress(5 + 85 * (index + 1) // len(tables), f"Wrote {table.name} ({rows} rows).")
                finally:
                    session.close()
                await ctx.run_sync(_add_member, tar, "manifest.json",
                                   json.dumps(manifest, indent=2, sort_keys=True).encode())
            final = directory / f"{name}.tar.gz"
            size, digest = await ctx.run_sync(_publish, temp, final)
        except OSError as exc:
            await ctx.run_sync(lambda: temp.unlink(missing_ok=True))
            raise BackupFailed(reason=exc.strerror or str(exc)) from exc

        def record() -> str:
            with unit_of_work(self.app.session_factory) as db:
                row = BackupRepository(db).add(Backup(
                    name=name, file_name=final.name, size_bytes=size, sha256=digest,
                    schema_revision=manifest.get("schemaRevision") or "", created_by=ctx.owner,
                    task_id=ctx.task_id, created=stamp, modified=stamp,
                ))
                return row.id

        backup_id = await ctx.run_sync(record)
        ctx.set_result(f"/rest/backups/{backup_id}", name, "backups")
        await ctx.progress(100, f"Backup {name} written ({size} bytes).")
        return Outcome(status=f"Backup {name} created.")

    @staticmethod
    def _dump_table(session: Session, table: Table) -> tuple[bytes, int]:
        out = io.BytesIO()
        rows = 0
        for row in session.execute(select(table).order_by(*table.primary_key.columns)).mappings():
            out.write(json.dumps({k: _jsonable(v) for k, v in row.items()}, sort_keys=True).encode())
            out.write(b"\n")
            rows += 1
        return out.getvalue(), rows


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def _publish(temp: Path, final: Path) -> tuple[int, str]:
    """fsync the archive, restrict it, rename it into place and fsync the directory."""
    sha = hashlib.sha256()
    with temp.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
        os.fsync(fh.fileno())
    os.chmod(temp, 0o600)
    os.replace(temp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final.stat().st_size, sha.hexdigest()


def sweep_temp_files(home: Path, active_task_ids: set[str]) -> list[Path]:
    """Remove temp archives left by tasks that are no longer running (called at start)."""
    removed: list[Path] = []
    directory = backup_dir(home)
    if not directory.is_dir():
        return removed
    for path in directory.glob(f"{TEMP_PREFIX}*"):
        task_id = path.name.removeprefix(TEMP_PREFIX).split(".", 1)[0]
        if task_id not in active_task_ids:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
