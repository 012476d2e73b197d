"""Queries for alerts."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance.models import Alert
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged

ALERT_FIELDS = {
    "alertState": Field(Alert.state),
    "severity": Field(Alert.severity),
    "alertTypeID": Field(Alert.alert_type),
    "description": Field(Alert.description, case_insensitive=True),
    "associatedResource.resourceUri": Field(Alert.resource_uri),
    "associatedResource.resourceName": Field(Alert.resource_name, case_insensitive=True),
    "associatedResource.resourceCategory": Field(Alert.resource_category),
    "created": Field(Alert.created, Kind.TIME),
    "modified": Field(Alert.modified, Kind.TIME),
}


class AlertRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def page(self, query: CollectionQuery) -> Page[Alert]:
        return paged(self.db, select(Alert), query, ALERT_FIELDS, (Alert.modified.desc(), Alert.id))

    def get(self, alert_id: str) -> Alert | None:
        return self.db.get(Alert, alert_id)

    def active(self, alert_type: str, resource_uri: str | None) -> Alert | None:
        stmt = select(Alert).where(
            Alert.alert_type == alert_type,
            Alert.state != "Cleared",
            Alert.resource_uri.is_(None) if resource_uri is None else Alert.resource_uri == resource_uri,
        )
        return self.db.scalars(stmt).first()

    def active_keys(self, alert_types: tuple[str, ...]) -> set[tuple[str, str | None]]:
        """(type, resource URI) of every uncleared alert of these types: one query for a sweep."""
        stmt = select(Alert.alert_type, Alert.resource_uri).where(
            Alert.alert_type.in_(alert_types), Alert.state != "Cleared")
        return {(t, u) for t, u in self.db.execute(stmt)}

    def add(self, alert: Alert) -> Alert:
        self.db.add(alert)
        self.db.flush()
        return alert

    def delete(self, alert: Alert) -> None:
        self.db.delete(alert)
        self.db.flush()

    def count_active_by_severity(self) -> dict[str, int]:
        stmt = select(Alert.severity, func.count()).where(Alert.state != "Cleared").group_by(Alert.severity)
        return {severity: int(n) for severity, n in self.db.execute(stmt)}
