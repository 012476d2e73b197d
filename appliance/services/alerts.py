"""Alerts: raised by services and the runner, cleared by operators."""

from __future__ import annotations

from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.errors import InvalidInput, NotFound
from appliance.models import Alert
from appliance.query import CollectionQuery
from appliance.repositories.alerts import AlertRepository
from appliance.repositories.base import Page

SEVERITIES = ("OK", "Warning", "Critical", "Unknown")
STATES = ("Active", "Locked", "Cleared")


class AlertService:
    def __init__(self, db: Session, clock: Clock = system_clock) -> None:
        self.alerts = AlertRepository(db)
        self.clock = clock

    def raise_alert(
        self,
        alert_type: str,
        severity: str,
        description: str,
        corrective_action: str = "",
        resource_uri: str | None = None,
        resource_name: str | None = None,
        resource_category: str | None = None,
    ) -> Alert:
        """Raise an alert, or count one more occurrence of the same still-active alert."""
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity}")
        now = self.clock()
        existing = self.alerts.active(alert_type, resource_uri)
        if existing is not None:
            existing.count += 1
            existing.description = description
            existing.severity = severity
            existing.modified = now
            return existing
        return self.alerts.add(
            Alert(
                alert_type=alert_type,
                severity=severity,
                state="Active",
                description=description,
                corrective_action=corrective_action,
                resource_uri=resource_uri,
                resource_name=resource_name,
                resource_category=resource_category,
                created=now,
                modified=now,
            )
        )

    def clear_condition(self, alert_type: str, resource_uri: str | None, by: str = "appliance") -> None:
        """The condition went away: clear its active alert, if any."""
        existing = self.alerts.active(alert_type, resource_uri)
        if existing is not None:
            self._set_state(existing, "Cleared", by)

    def list(self, query: CollectionQuery) -> Page[Alert]:
        return self.alerts.page(query)

    def get(self, alert_id: str) -> Alert:
        alert = self.alerts.get(alert_id)
        if alert is None:
            raise NotFound(kind="alert", ident=alert_id)
        return alert

    def set_state(self, alert_id: str, state: str, by: str) -> Alert:
        if state not in STATES:
            raise InvalidInput(reason=f"alertState must be one of {', '.join(STATES)}")
        alert = self.get(alert_id)
        self._set_state(alert, state, by)
        return alert

    def _set_state(self, alert: Alert, state: str, by: str) -> None:
        now = self.clock()
        alert.state = state
        alert.modified = now
        if state == "Cleared":
            alert.cleared_by, alert.cleared_at = by, now
        else:
            alert.cleared_by, alert.cleared_at = None, None

    def delete(self, alert_id: str) -> None:
        self.alerts.delete(self.get(alert_id))

    def active_counts(self) -> dict[str, int]:
        return self.alerts.count_active_by_severity()
