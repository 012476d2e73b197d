"""Audit log entries on the wire."""

from __future__ import annotations

from typing import Any

from appliance.models import AuditEntry
from web.schemas.common import ts


def audit_public(entry: AuditEntry) -> dict[str, Any]:
    return {
        "type": "AuditLogEntry",
        "category": "audit-logs",
        "id": entry.id,
        "uri": f"/rest/audit-logs/{entry.id}",
        "timestamp": ts(entry.timestamp),
        "created": ts(entry.timestamp),
        "userName": entry.user_name,
        "sourceIp": entry.source_ip,
        "method": entry.method,
        "path": entry.path,
        "action": f"{entry.method} {entry.path}",
        "statusCode": entry.status_code,
        "result": entry.result,
        "resourceUri": entry.resource_uri,
        "requestId": entry.request_id,
        "message": entry.message,
    }
