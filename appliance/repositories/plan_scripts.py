"""Queries for plan scripts."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.models import PlanScript
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged

PLAN_SCRIPT_FIELDS = {
    "name": Field(PlanScript.name, case_insensitive=True),
    "description": Field(PlanScript.description, case_insensitive=True),
    "planType": Field(PlanScript.plan_type, case_insensitive=True),
    "hpProvided": Field(PlanScript.hp_provided, Kind.BOOL),
    "created": Field(PlanScript.created, Kind.TIME),
    "modified": Field(PlanScript.modified, Kind.TIME),
}


class PlanScriptRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def page(self, query: CollectionQuery) -> Page[PlanScript]:
        return paged(self.db, select(PlanScript), query, PLAN_SCRIPT_FIELDS, (PlanScript.name, PlanScript.id))

    def get(self, script_id: str) -> PlanScript | None:
        return self.db.get(PlanScript, script_id)

    def many(self, script_ids: Iterable[str]) -> dict[str, PlanScript]:
        ids = set(script_ids)
        if not ids:
            return {}
        return {s.id: s for s in self.db.scalars(select(PlanScript).where(PlanScript.id.in_(ids)))}

    def by_name(self, name: str) -> PlanScript | None:
        return self.db.scalar(select(PlanScript).where(PlanScript.name == name))

    def add(self, script: PlanScript) -> PlanScript:
        self.db.add(script)
        self.db.flush()
        return script

    def delete(self, script: PlanScript) -> None:
        self.db.delete(script)
        self.db.flush()
