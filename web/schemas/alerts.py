"""Alert resources (OneView AlertResourceV3) and the body that changes their state."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from appliance.models import Alert
from web.schemas.common import Strict, resource_header, ts


class AlertUpdate(Strict):
    alert_state: Literal["Active", "Locked", "Cleared"] = Field(alias="alertState")
    notes: str | None = Field(None, max_length=1024)  # accepted for OneView compatibility
    eTag: str | None = None


def alert_public(alert: Alert) -> dict[str, Any]:
    body = resource_header(
        "AlertResourceV3", "alerts", f"/rest/alerts/{alert.id}", alert.id, alert.alert_type, alert.etag,
        alert.created, alert.modified, description=alert.description, state=alert.state,
        status=alert.severity,
    )
    body.update({
        "alertState": alert.state,
        "severity": alert.severity,
        "alertTypeID": alert.alert_type,
        "correctiveAction": alert.corrective_action,
        "count": alert.count,
        "clearedByUser": alert.cleared_by,
        "clearedTime": ts(alert.cleared_at),
        "associatedResource": {
            "resourceUri": alert.resource_uri,
            "resourceName": alert.resource_name,
            "resourceCategory": alert.resource_category,
            "associationType": "HAS_A",
        },
    })
    return body
