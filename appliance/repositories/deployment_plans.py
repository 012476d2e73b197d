"""Queries for deployment plans."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.models import DeploymentPlan
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged

DEPLOYMENT_PLAN_FIELDS = {
    "name": Field(DeploymentPlan.name, case_insensitive=True),
    "description": Field(DeploymentPlan.description, case_insensitive=True),
    "hpProvided": Field(DeploymentPlan.hp_provided, Kind.BOOL),
    "created": Field(DeploymentPlan.created, Kind.TIME),
    "modified": Field(DeploymentPlan.modified, Kind.TIME),
}


class DeploymentPlanRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def page(self, query: CollectionQuery) -> Page[DeploymentPlan]:
        return paged(self.db, select(DeploymentPlan), query, DEPLOYMENT_PLAN_FIELDS,
                     (DeploymentPlan.name, DeploymentPlan.id))

    def get(self, plan_id: str) -> DeploymentPlan | None:
        return self.db.get(DeploymentPlan, plan_id)

    def by_name(self, name: str) -> DeploymentPlan | None:
        return self.db.scalar(select(DeploymentPlan).where(DeploymentPlan.name == name))

    def names_using_build_plan(self, build_plan_id: str) -> list[str]:
        stmt = (select(DeploymentPlan.name).where(DeploymentPlan.build_plan_id == build_plan_id)
                .order_by(DeploymentPlan.name))
        return list(self.db.scalars(stmt))

    def names_using_golden_image(self, golden_image_id: str) -> list[str]:
        stmt = (select(DeploymentPlan.name).where(DeploymentPlan.golden_image_id == golden_image_id)
                .order_by(DeploymentPlan.name))
        return list(self.db.scalars(stmt))

    def add(self, plan: DeploymentPlan) -> DeploymentPlan:
        self.db.add(plan)
        self.db.flush()
        return plan

    def delete(self, plan: DeploymentPlan) -> None:
        self.db.delete(plan)
        self.db.flush()
