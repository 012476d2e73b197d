"""Extracting an artifact bundle: its plan scripts, build plans and deployment plans become the
appliance's, with their names and the references between them kept.

Inside a bundle, artifacts refer to each other by the bundle's own ids (a build step's
``planScriptUri`` is ``/rest/plan-scripts/<id in the bundle>``) or by name (a deployment plan's
``oeBuildPlanURI`` holds the build plan's *name*, as HPE exports it). Here each gets an id of the
appliance's and every reference is rewritten to it.

An artifact whose name is already taken is compared with the one in the bundle: the same content
is reused as it is (so extracting a bundle twice, or a bundle exported from what another bundle
imported, changes nothing); different content is a conflict, listed in full before anything is
written, unless ``force`` (HPE's ``forceImport``) says to replace it in place, keeping its id so
that whatever refers to it still does. Everything is written through the artifacts' own services,
so an imported artifact passes the same validation as one created through the API, and in one
transaction, so a bundle that fails halfway leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.errors import Conflict, InvalidInput
from appliance.models import BuildPlan, DeploymentPlan, PlanScript
from appliance.repositories.build_plans import BuildPlanRepository
from appliance.repositories.deployment_plans import DeploymentPlanRepository
from appliance.repositories.golden_images import GoldenImageRepository
from appliance.repositories.plan_scripts import PlanScriptRepository
from appliance.secretbox import SecretBox
from appliance.services.build_plans import (
    BuildPlanDraft,
    BuildPlanService,
    BuildStepDraft,
    build_plan_uri,
    stored_definitions,
)
from appliance.services.deployment_plans import DeploymentPlanDraft, DeploymentPlanService, deployment_plan_uri
from appliance.services.plan_scripts import PlanScriptDraft, PlanScriptService, plan_script_uri
from plans import bundles
from plans.attributes import AttributeDefinitionInvalid, is_secret, parse_attributes

GOLDEN_IMAGES = "/rest/golden-images"
R = TypeVar("R", PlanScript, BuildPlan, DeploymentPlan)


@dataclass
class ImportReport:
    """What the extraction did, artifact by artifact (``"plan script <name>"``)."""

    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: Per kind (``planScripts``, ``buildPlans``, ``deploymentPlans``, ``goldenImages``):
    #: {id in the bundle: URI of the artifact here}.
    imported: dict[str, dict[str, str]] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{len(self.created)} created, {len(self.replaced)} replaced, "
                f"{len(self.unchanged)} already present and unchanged")


def _text(raw: object) -> str:
    return raw if isinstance(raw, str) else ""


def _flag(raw: object) -> bool:
    return raw is True or (isinstance(raw, str) and raw.strip().lower() == "true")


class BundleImporter:
    def __init__(self, db: Session, secrets: SecretBox, clock: Clock = system_clock) -> None:
        self.db = db
        self.scripts = PlanScriptService(db, clock)
        self.build_plans = BuildPlanService(db, secrets, clock)
        self.deployment_plans = DeploymentPlanService(db, secrets, clock)
        self.report = ImportReport()
        self.script_names: dict[str, str] = {}  # {id in the bundle: name}, set by run()

    def run(self, bundle: bundles.Bundle, golden_images: Mapping[str, str], *, force: bool,
            owner: str) -> ImportReport:
        """Import ``bundle``. ``golden_images`` maps each bundled golden image's id to the id of the
        golden image that stands for it here (imported or kept beforehand). Raises Conflict (nothing
        written) when names clash with different content and ``force`` is false."""
        script_ids = {_text(s.get("id")): s for s in bundle.plan_scripts}
        self.script_names = {i: _text(s.get("name")) for i, s in script_ids.items()}
        self.report.imported["goldenImages"] = {bid: f"{GOLDEN_IMAGES}/{gid}" for bid, gid in golden_images.items()}
        if not force:
            clashes = self._clashes(bundle, golden_images)
            if clashes:
                raise Conflict(reason="these artifacts exist with other content: " + "; ".join(clashes),
                               recommended_actions=["Extract with forceImport=true to replace them (they keep "
                                                    "their ids), or rename or delete them first."])
        scripts_here = {bid: self._plan_script(s, owner) for bid, s in script_ids.items()}
        self.report.imported["planScripts"] = {bid: plan_script_uri(s.id) for bid, s in scripts_here.items()}
        plans_here: dict[str, BuildPlan] = {}
        for plan in bundle.build_plans:
            plans_here[bundles.build_plan_id(plan)] = self._build_plan(plan, scripts_here, owner)
        self.report.imported["buildPlans"] = {bid: build_plan_uri(p.id) for bid, p in plans_here.items()}
        deployments: dict[str, str] = {}
        for deployment in bundle.deployment_plans:
            build_plan = plans_here[bundles.build_plan_id(bundles.build_plan_reference(deployment, bundle.build_plans))]
            image_id = self._golden_image_id(deployment, bundle, golden_images)
            row = self._deployment_plan(deployment, build_plan, image_id, owner)
            deployments[_text(deployment.get("id")) or row.id] = deployment_plan_uri(row.id)
        self.report.imported["deploymentPlans"] = deployments
        return self.report

    # --- one artifact at a time ------------------------------------------------------------------
    def _plan_script(self, raw: Mapping[str, Any], owner: str) -> PlanScript:
        draft = PlanScriptDraft(_text(raw.get("name")), _text(raw.get("description")), _text(raw.get("planType")),
                                _text(raw.get("content")))
        existing = PlanScriptRepository(self.db).by_name(draft.name)
        return self._put("plan script", draft.name, existing, self._same_script(existing, raw),
                         lambda: self.scripts.create(draft, owner),
                         lambda row: self.scripts.update(row.id, draft), _flag(raw.get("hpProvided")))

    def _build_plan(self, raw: Mapping[str, Any], scripts: Mapping[str, PlanScript], owner: str) -> BuildPlan:
        steps = []
        for step in raw.get("buildStep") or []:
            script = scripts[bundles.script_id_of_step(step)]
            steps.append(BuildStepDraft(step.get("serialNumber"), plan_script_uri(script.id),
                                        _text(step.get("parameters"))))
        draft = BuildPlanDraft(_text(raw.get("name")), _text(raw.get("description")),
                               _text(raw.get("oeBuildPlanType")), steps, list(raw.get("customAttributes") or []))
        existing = BuildPlanRepository(self.db).by_name(draft.name)
        same = existing is not None and self._same_build_plan(existing, raw)
        return self._put("build plan", draft.name, existing, same, lambda: self.build_plans.create(draft, owner),
                         lambda row: self.build_plans.update(row.id, draft), _flag(raw.get("hpProvided")))

    def _deployment_plan(self, raw: Mapping[str, Any], build_plan: BuildPlan, image_id: str | None,
                         owner: str) -> DeploymentPlan:
        draft = DeploymentPlanDraft(
            _text(raw.get("name")), _text(raw.get("description")), build_plan_uri(build_plan.id),
            f"{GOLDEN_IMAGES}/{image_id}" if image_id else None, list(raw.get("customAttributes") or []))
        existing = DeploymentPlanRepository(self.db).by_name(draft.name)
        same = existing is not None and self._same_deployment_plan(existing, raw, build_plan.id, image_id)
        return self._put("deployment plan", draft.name, existing, same,
                         lambda: self.deployment_plans.create(draft, owner),
                         lambda row: self.deployment_plans.update(row.id, draft), _flag(raw.get("hpProvided")))

    def _put(
            self, kind: str, name: str, existing: R | None, same: bool, create: Callable[[], R],
            replace: Callable[[R], R], hp_provided: bool) -> R:
        label = f"{kind} {name}"
        if existing is not None and same:
            self.report.unchanged.append(label)
            return existing
        try:
            row = create() if existing is None else replace(existing)
        except InvalidInput as exc:  # the same validation as the API's: say which artifact
            raise InvalidInput(reason=f"the {label} in the bundle is not valid: {exc.message}",
                               nested=exc.nested) from exc
        row.hp_provided = hp_provided
        (self.report.created if existing is None else self.report.replaced).append(label)
        return row

    def _golden_image_id(self, raw: Mapping[str, Any], bundle: bundles.Bundle,
                         golden_images: Mapping[str, str]) -> str | None:
        """The deployment plan's golden image here: the bundled one it names, else one of the
        library's of that name (a bundle exported without its golden images)."""
        bundled = bundles.golden_image_reference(raw, [image.metadata for image in bundle.golden_images])
        if bundled is not None:
            return golden_images[_text(bundled.get("id"))]
        ref = _text(raw.get("goldenImageURI", raw.get("goldenImageUri"))).strip()
        if not ref:
            return None
        key = ref.rstrip("/").rsplit("/", 1)[-1]
        images = GoldenImageRepository(self.db)
        found = images.get(key) or images.by_name(ref)
        if found is None:
            raise InvalidInput(reason=f"the deployment plan {_text(raw.get('name'))} uses the golden image {ref}, "
                                      "which is neither in the bundle nor in this appliance's library; import it "
                                      "first, or export the bundle with its golden images")
        return found.id

    # --- what "the same content" means -----------------------------------------------------------
    def _clashes(self, bundle: bundles.Bundle, golden_images: Mapping[str, str]) -> list[str]:
        clashes = []
        for raw in bundle.plan_scripts:
            existing = PlanScriptRepository(self.db).by_name(_text(raw.get("name")))
            if existing is not None and not self._same_script(existing, raw):
                clashes.append(f"plan script {existing.name}")
        for raw in bundle.build_plans:
            plan = BuildPlanRepository(self.db).by_name(_text(raw.get("name")))
            if plan is not None and not self._same_build_plan(plan, raw):
                clashes.append(f"build plan {plan.name}")
        for raw in bundle.deployment_plans:
            existing_dp = DeploymentPlanRepository(self.db).by_name(_text(raw.get("name")))
            if existing_dp is None:
                continue
            build_plan = BuildPlanRepository(self.db).by_name(
                _text(bundles.build_plan_reference(raw, bundle.build_plans).get("name")))
            image_id = self._golden_image_id(raw, bundle, golden_images)
            if build_plan is None or not self._same_deployment_plan(existing_dp, raw, build_plan.id, image_id):
                clashes.append(f"deployment plan {existing_dp.name}")
        return clashes

    @staticmethod
    def _same_script(existing: PlanScript | None, raw: Mapping[str, Any]) -> bool:
        return existing is not None and (existing.description, existing.plan_type, existing.content) == (
            _text(raw.get("description")), _text(raw.get("planType")).strip().lower(), _text(raw.get("content")))

    def _same_build_plan(self, plan: BuildPlan, raw: Mapping[str, Any]) -> bool:
        """Same description, type, attribute definitions, and steps running scripts of the same
        names with the same parameters in the same order."""
        try:
            definitions = stored_definitions(parse_attributes(list(raw.get("customAttributes") or [])))
        except AttributeDefinitionInvalid:
            return False
        here = PlanScriptRepository(self.db).many(s["planScriptId"] for s in plan.steps)
        steps_here = [(s["serialNumber"], here[s["planScriptId"]].name if s["planScriptId"] in here else None,
                       s.get("parameters") or "") for s in plan.steps]
        steps_there = sorted((_serial(step), self.script_names.get(bundles.script_id_of_step(step)),
                              _text(step.get("parameters"))) for step in raw.get("buildStep") or [])
        return (plan.description, plan.plan_type, steps_here, _secretless(plan.custom_attributes)) == (
            _text(raw.get("description")), _text(raw.get("oeBuildPlanType")).strip().lower(), steps_there,
            _secretless(definitions))

    @staticmethod
    def _same_deployment_plan(plan: DeploymentPlan, raw: Mapping[str, Any], build_plan_id: str,
                              image_id: str | None) -> bool:
        def overrides(entries: list[Any]) -> list[tuple[str, str | None, bool, bool]]:
            out = []
            for entry in entries:
                if not isinstance(entry, Mapping):
                    continue
                value = entry.get("value")
                if isinstance(value, Mapping):
                    value = json.dumps(dict(value), separators=(",", ":"))
                elif isinstance(value, bool):
                    value = "true" if value else "false"
                secret = entry.get("type") == "password" or entry.get("value") is None
                out.append((str(entry.get("name")), None if secret or value is None else str(value),
                            _flag(entry.get("visible", True)), _flag(entry.get("editable", True))))
            return sorted(out)

        stored = [(o["name"], o.get("value"), bool(o.get("visible", True)), bool(o.get("editable", True)))
                  for o in plan.custom_attributes]
        return (plan.description, plan.build_plan_id, plan.golden_image_id) == (
            _text(raw.get("description")), build_plan_id, image_id) and sorted(stored) == overrides(
            list(raw.get("customAttributes") or []))


def _serial(step: Mapping[str, Any]) -> int:
    text = str(step.get("serialNumber")).strip()
    return int(text) if text.isdigit() else -1


def _secretless(definitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Definitions compared without password values (they are sealed apart, never exported)."""
    out = []
    for definition in definitions:
        parsed = parse_attributes([definition])[0]
        out.append({**definition, "value": None} if is_secret(parsed) else dict(definition))
    return out
