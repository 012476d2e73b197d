"""Queries for OS build plans."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.models import BuildPlan
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged

BUILD_PLAN_FIELDS = {
    "name": Field(BuildPlan.name, case_insensitive=True),
    "description": Field(BuildPlan.description, case_insensitive=True),
    "oeBuildPlanType": Field(BuildPlan.plan_type, case_insensitive=True),
    "hpProvided": Field(BuildPlan.hp_provided, Kind.BOOL),
    "created": Field(BuildPlan.created, Kind.TIME),
    "modified": Field(BuildPlan.modified, Kind.TIME),
}


class BuildPlanRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def page(self, query: CollectionQuery) -> Page[BuildPlan]:
        return paged(self.db, select(BuildPlan), query, BUILD_PLAN_FIELDS, (BuildPlan.name, BuildPlan.id))

    def get(self, plan_id: str) -> BuildPlan | None:
        return self.db.get(BuildPlan, plan_id)

    def by_name(self, name: str) -> BuildPlan | None:
        return self.db.scalar(select(BuildPlan).where(BuildPlan.name == name))

    def using_script(self, script_id: str) -> list[BuildPlan]:
        """Build plans with a step that runs the plan script (steps are JSON: filtered here, not in
        SQL, the same way on both backends)."""
        plans = self.db.scalars(select(BuildPlan).order_by(BuildPlan.name))
        return [p for p in plans if any(step.get("planScriptId") == script_id for step in p.steps)]

    def add(self, plan: BuildPlan) -> BuildPlan:
        self.db.add(plan)
        self.db.flush()
        return plan

    def delete(self, plan: BuildPlan) -> None:
        self.db.delete(plan)
        self.db.flush()
