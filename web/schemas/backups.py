"""Backup resources (OneView BackupFileV200 shape)."""

from __future__ import annotations

from typing import Any

from appliance.models import Backup
from web.schemas.common import resource_header


def backup_public(backup: Backup) -> dict[str, Any]:
    body = resource_header(
        "BackupFileV200", "backups", f"/rest/backups/{backup.id}", backup.id, backup.name, backup.etag,
        backup.created, backup.modified, state="Completed",
    )
    body.update({
        "backupType": "APPLIANCE",
        "downloadUri": f"/rest/backups/archive/{backup.id}",
        "fileName": backup.file_name,
        "fileSize": backup.size_bytes,
        "sha256": backup.sha256,
        "schemaRevision": backup.schema_revision,
        "createdBy": backup.created_by,
        "taskUri": f"/rest/tasks/{backup.task_id}" if backup.task_id else None,
    })
    return body
