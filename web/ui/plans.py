"""UI pages for plans: the overview (``/ui/plans``), the plan script editor, the build plan page
and the deployment plan page (each at ``.../{id}`` and ``.../new``).

The pages are rendered from the same wire shape the REST API sends (``plan_script_public``,
``build_plan_public``, ``deployment_plan_public``), so ``static/plans.js`` reads and writes the
same field names. Every change goes from the browser to the REST API (``/rest/plan-scripts``,
``/rest/build-plans``, ``/rest/deployment-plans``) with the session cookie and CSRF header, as the
other pages do; a PUT carries ``If-Match`` with the eTag the page was rendered with, so a change
made meanwhile by someone else is refused (412) instead of overwritten.

What the server renders and what the script adds:

- plan script: the form, the attributes the saved content uses (the server's list); the script
  recomputes the attributes while the content is typed (the token rule of ``plans/tokens.py``),
  previews the diff (``POST /rest/plan-scripts/differences/{id}``), saves and deletes.
- build plan: the form, the steps and the attribute rows; the script moves, adds and removes
  steps and attribute rows, assembles each row's constraints into HPE's JSON string and lists
  the attributes the steps' scripts use that no row declares.
- deployment plan: the form and the build plan's attributes as JSON (``data-plan``); the script
  generates one field per attribute from its type and constraints, and again from
  ``GET /rest/build-plans/{id}`` when another build plan is chosen. The plan deploys a golden image
  or runs an installer (Ingot's ``installer``): the server renders both choices, prefilled, and
  shows the stored one; the script switches between them and sends one.

Names, descriptions and script contents are untrusted: the templates autoescape them (JSON
handed to the script goes into an attribute, escaped) and the script only sets ``textContent``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from appliance.models import BuildPlan, DeploymentPlan, PlanScript
from appliance.query import CollectionQuery, Condition, Op
from appliance.repositories.golden_images import GoldenImageRepository
from appliance.roles import Role
from appliance.services.artifact_bundles import TASK_CREATE as BUNDLE_CREATE
from appliance.services.artifact_bundles import TASK_EXTRACT as BUNDLE_EXTRACT
from appliance.services.artifact_bundles import TASK_UPLOAD as BUNDLE_UPLOAD
from appliance.services.artifact_bundles import ArtifactBundleService
from appliance.services.build_plans import PLAN_TYPES as BUILD_PLAN_TYPES
from appliance.services.build_plans import BuildPlanService, build_plan_uri
from appliance.services.deployment_plans import DeploymentPlanService
from appliance.services.golden_images import golden_image_uri
from appliance.services.plan_scripts import PLAN_TYPES as SCRIPT_TYPES
from appliance.services.plan_scripts import SCRIPT_TYPES_FOR_PLAN, PlanScriptService, attribute_names
from appliance.services.tasks import TaskService
from plans.attributes import NIC_FIELDS, AttributeType
from plans.installer import ARCHES, BOOTABLE_KINDS, installer_summary
from plans.tokens import MASK
from web.schemas.build_plans import build_plan_public
from web.schemas.deployment_plans import deployment_plan_public
from web.schemas.plan_scripts import plan_script_public
from web.ui.routes import UiRoute, View, view

router = APIRouter(route_class=UiRoute, include_in_schema=False)

LISTED = 500  # a site has tens of plans; past this the overview says how many it left out
RECENT_TASKS = 6
ATTRIBUTE_TYPES = tuple(t.value for t in AttributeType)
NIC_PARAMETERS = tuple(f for f in NIC_FIELDS if f != "dhcp")
#: Which constraint inputs of an attribute row apply to which types (static/plans.js has the same).
CONSTRAINT_TYPES = {
    "options": ("string", "option"),
    "range": ("number",),
    "text": ("string", "password"),
    "nic": ("nic",),
}
SavedFlag = Annotated[str | None, Query(max_length=8)]  # ?saved=1 after a create: say so on the new page


def _scripts(v: View) -> list[PlanScript]:
    return list(PlanScriptService(v.db, v.ctx.clock).list(CollectionQuery(count=LISTED)).members)


def _build_plans(v: View) -> BuildPlanService:
    return BuildPlanService(v.db, v.ctx.secrets, v.ctx.clock)


def _deployment_plans(v: View) -> DeploymentPlanService:
    return DeploymentPlanService(v.db, v.ctx.secrets, v.ctx.clock)


def _script_choice(script: PlanScript) -> dict[str, Any]:
    return {"id": script.id, "uri": f"/rest/plan-scripts/{script.id}", "name": script.name,
            "planType": script.plan_type, "attributes": attribute_names(script)}


# --- the overview --------------------------------------------------------------------------------
@router.get("/ui/plans")
def plans_page(request: Request) -> Response:
    with view(request, Role.READ_ONLY) as v:
        scripts = PlanScriptService(v.db, v.ctx.clock).list(CollectionQuery(count=LISTED))
        build_plans = _build_plans(v).list(CollectionQuery(count=LISTED))
        deployment_plans = _deployment_plans(v).list(CollectionQuery(count=LISTED))
        used_by: dict[str, list[BuildPlan]] = {}
        for plan in build_plans.members:
            for script_id in dict.fromkeys(step["planScriptId"] for step in plan.steps):
                used_by.setdefault(script_id, []).append(plan)
        build_plan_names = {p.id: p.name for p in build_plans.members}
        images = GoldenImageRepository(v.db)
        image_names: dict[str, str] = {}
        installers = {dp.id: installer_summary(dp.installer) for dp in deployment_plans.members if dp.installer}
        for dp in deployment_plans.members:
            if dp.build_plan_id not in build_plan_names:  # past LISTED
                bp = _build_plans(v).plans.get(dp.build_plan_id)
                build_plan_names[dp.build_plan_id] = bp.name if bp else dp.build_plan_id
            if dp.golden_image_id and dp.golden_image_id not in image_names:
                image = images.get(dp.golden_image_id)
                image_names[dp.golden_image_id] = image.name if image else "(deleted)"
        tasks = TaskService(v.db, v.ctx.clock)
        bundle_tasks = sorted((task for kind in (BUNDLE_UPLOAD, BUNDLE_EXTRACT, BUNDLE_CREATE)
                               for task in tasks.list(CollectionQuery(
                                   count=RECENT_TASKS, conditions=(Condition("kind", Op.EQ, kind),))).members),
                              key=lambda task: task.created, reverse=True)[:RECENT_TASKS]
        bundles = ArtifactBundleService(v.db, v.ctx.bundles_dir, v.ctx.clock).list(CollectionQuery(count=LISTED))
        return v.render(
            "plans.html", "plans", title="Plans", bundles=bundles.members, bundle_tasks=bundle_tasks,
            max_upload=v.ctx.settings.images.max_upload_bytes,
            scripts=scripts.members, script_total=scripts.total,
            script_attributes={s.id: attribute_names(s) for s in scripts.members}, used_by=used_by,
            build_plans=build_plans.members, build_plan_total=build_plans.total,
            build_plan_attributes={p.id: [a["name"] for a in p.custom_attributes] for p in build_plans.members},
            deployment_plans=deployment_plans.members, deployment_plan_total=deployment_plans.total,
            build_plan_names=build_plan_names, image_names=image_names, installers=installers,
            can_edit=v.may(Role.OPERATOR),
        )


# --- plan scripts --------------------------------------------------------------------------------
def _script_page(v: View, script: Mapping[str, Any], used_by: Sequence[BuildPlan], saved: bool) -> Response:
    title = script["name"] or "New plan script"
    return v.render("plans_script.html", "plans", title=title, script=script, used_by=used_by,
                    plan_types=SCRIPT_TYPES, can_edit=v.may(Role.OPERATOR), saved=saved)


@router.get("/ui/plans/scripts/new")
def new_script_page(request: Request) -> Response:
    with view(request, Role.OPERATOR) as v:
        blank = {"id": "", "uri": "", "name": "", "description": "", "planType": "deploy", "content": "",
                 "eTag": "", "customAttributeNames": []}
        return _script_page(v, blank, [], saved=False)


@router.get("/ui/plans/scripts/{script_id}")
def script_page(request: Request, script_id: str, saved: SavedFlag = None) -> Response:
    with view(request, Role.READ_ONLY) as v:
        service = PlanScriptService(v.db, v.ctx.clock)
        script = service.get(script_id)
        return _script_page(v, plan_script_public(script), service.used_by(script.id), saved=bool(saved))


# --- build plans ---------------------------------------------------------------------------------
def _constraints(raw: object) -> dict[str, Any]:
    """A stored definition's constraints as an object (they were checked when stored)."""
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        data = json.loads(str(raw or "{}"))
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _attribute_row(attribute: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the attribute editor: the definition and its constraint inputs, prefilled."""
    c = _constraints(attribute.get("constraints"))
    is_password = attribute.get("type") == "password"
    return {
        "name": attribute.get("name") or "",
        "type": attribute.get("type") or "string",
        "value": "" if is_password else _text(attribute.get("value")),
        "password_set": is_password and attribute.get("value") == MASK,
        "description": attribute.get("description") or "",
        "constraints_json": json.dumps(c, separators=(",", ":")),
        "help_text": _text(c.get("helpText")),
        "options": _text(c.get("options")),
        "minimum": _text(c.get("minimum", c.get("min"))),
        "maximum": _text(c.get("maximum", c.get("max"))),
        "increment": _text(c.get("increment")),
        "unit": _text(c.get("unit")),
        "regex": _text(c.get("pattern", c.get("regex"))),
        "minlen": _text(c.get("minlen")),
        "maxlen": _text(c.get("maxlen")),
        "ipv4static": c.get("ipv4static", True) not in (False, "false"),
        "ipv4dhcp": c.get("ipv4dhcp", True) not in (False, "false"),
        "ipv4disable": c.get("ipv4disable", False) in (True, "true"),
        "parameters": _text(c.get("parameters")),
    }


def _build_plan_page(v: View, plan: Mapping[str, Any], users: Sequence[DeploymentPlan], saved: bool) -> Response:
    scripts = {s.id: _script_choice(s) for s in _scripts(v)}
    steps = []
    for step in plan["buildStep"]:
        script_id = step["planScriptUri"].rsplit("/", 1)[-1]
        info = scripts.get(script_id) or {"id": script_id, "uri": step["planScriptUri"],
                                          "name": step.get("planScriptName") or script_id, "planType": "",
                                          "attributes": []}
        steps.append({**info, "parameters": step.get("parameters") or ""})
    return v.render(
        "plans_build.html", "plans", title=plan["name"] or "New build plan", plan=plan, steps=steps,
        scripts=sorted(scripts.values(), key=lambda s: s["name"].lower()),
        rows=[_attribute_row(a) for a in plan["customAttributes"]], used_by=users,
        plan_types=BUILD_PLAN_TYPES, script_types_for_plan=SCRIPT_TYPES_FOR_PLAN, attribute_types=ATTRIBUTE_TYPES,
        nic_parameters=NIC_PARAMETERS, constraint_types=CONSTRAINT_TYPES, blank_row=_attribute_row({}),
        can_edit=v.may(Role.OPERATOR), saved=saved,
    )


@router.get("/ui/plans/build-plans/new")
def new_build_plan_page(request: Request) -> Response:
    with view(request, Role.OPERATOR) as v:
        blank = {"id": "", "uri": "", "name": "", "description": "", "oeBuildPlanType": "deploy", "eTag": "",
                 "buildStep": [], "customAttributes": []}
        return _build_plan_page(v, blank, [], saved=False)


@router.get("/ui/plans/build-plans/{plan_id}")
def build_plan_page(request: Request, plan_id: str, saved: SavedFlag = None) -> Response:
    with view(request, Role.READ_ONLY) as v:
        service = _build_plans(v)
        plan = service.get(plan_id)
        users = [p for p in _deployment_plans(v).list(CollectionQuery(count=LISTED)).members
                 if p.build_plan_id == plan.id]
        return _build_plan_page(v, build_plan_public(plan, service.script_names(plan)), users, saved=bool(saved))


# --- deployment plans ----------------------------------------------------------------------------
def _installer_fields(stored: Mapping[str, Any] | None) -> dict[str, str]:
    """The installer fieldset's values: the stored installer's, else a blank kickstart for x86_64."""
    fields = {"kind": BOOTABLE_KINDS[0], "os": "", "version": "", "arch": ARCHES[0], "media": "",
              "kernelArgs": ""}
    fields.update({key: str(value) for key, value in (stored or {}).items() if key in fields and value is not None})
    return fields


def _deployment_plan_page(v: View, plan: Mapping[str, Any], saved: bool) -> Response:
    build_plans = [{"uri": build_plan_uri(p.id), "name": p.name}
                   for p in _build_plans(v).list(CollectionQuery(count=LISTED)).members if p.plan_type == "deploy"]
    images = [{"uri": golden_image_uri(i.id), "name": i.name}
              for i in GoldenImageRepository(v.db).page(CollectionQuery(count=LISTED)).members]
    return v.render(
        "plans_deployment.html", "plans", title=plan["name"] or "New deployment plan", plan=plan,
        plan_json=json.dumps(plan, separators=(",", ":")), build_plans=build_plans, images=images,
        installer=_installer_fields(plan.get("installer")), installer_kinds=BOOTABLE_KINDS,
        installer_arches=ARCHES, can_edit=v.may(Role.OPERATOR), saved=saved,
    )


@router.get("/ui/plans/deployment-plans/new")
def new_deployment_plan_page(request: Request) -> Response:
    with view(request, Role.OPERATOR) as v:
        blank: dict[str, Any] = {"id": "", "uri": "", "name": "", "description": "", "oeBuildPlanURI": "",
                                 "oeBuildPlanName": "", "goldenImageURI": "", "installer": None, "eTag": "",
                                 "customAttributes": []}
        return _deployment_plan_page(v, blank, saved=False)


@router.get("/ui/plans/deployment-plans/{plan_id}")
def deployment_plan_page(request: Request, plan_id: str, saved: SavedFlag = None) -> Response:
    with view(request, Role.READ_ONLY) as v:
        service = _deployment_plans(v)
        plan = service.get(plan_id)
        build_plan = service.build_plan(plan)
        body = deployment_plan_public(plan, build_plan, service.attributes(plan, build_plan))
        return _deployment_plan_page(v, body, saved=bool(saved))
