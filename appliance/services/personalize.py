"""Personalize an OS volume with a deployment plan's build plan (Image Streamer's deploy step, issue 6).

``POST /rest/os-volumes/{id}/personalize`` names a deployment plan and custom attribute values. The
values are merged - build plan defaults < deployment plan values < request values (a deployment
plan attribute marked non-editable cannot be given) - and validated, each step's plan script (in
``serialNumber`` order) has its ``@Token@`` placeholders substituted (values must be
guestfish-safe), and all of this is checked at request time, so a bad value is a 400 naming the
attribute. The ``os-volume-personalize`` task then does the same again (password values travel in
its arguments sealed with the appliance's SecretBox) and runs the scripts in one guestfish
session against the volume's file (:func:`plans.guestfish.run_plan`). Password values are masked
in the run's log, which is kept per volume in the image store and served by
``GET /rest/os-volumes/archive/{id}``.

Capture plans (``oeBuildPlanType`` capture) are resolved here too (:func:`resolve_build_plan`),
for the golden image capture task, with the build plan's own defaults as the only values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.config import Settings
from appliance.db.session import unit_of_work
from appliance.errors import InvalidInput, NotFound, PlanScriptFailed
from appliance.models import BuildPlan, DeploymentPlan, Task
from appliance.repositories.build_plans import BuildPlanRepository
from appliance.repositories.deployment_plans import DeploymentPlanRepository
from appliance.repositories.os_volumes import OsVolumeRepository
from appliance.repositories.plan_scripts import PlanScriptRepository
from appliance.secretbox import SecretBox
from appliance.services.build_plans import definitions
from appliance.services.os_volumes import CATEGORY, PROGRESS_INTERVAL_S, os_volume_uri, refuse_while_on_nbd
from appliance.services.tasks import ResourceRef, TaskService
from appliance.tasks.handlers import Outcome, TaskContext, TaskHandler
from golden_images.nbd import NbdExports
from golden_images.store import ImageStore
from plans.attributes import AttributeType, CustomAttribute, is_secret, validate_all
from plans.guestfish import PlanFailed, PlanRun, PlanStep, run_plan
from plans.tokens import MASK, guestfish_safe, substitute

TASK_PERSONALIZE = "os-volume-personalize"
DEPLOYMENT_PLANS = "/rest/deployment-plans"
#: What one guestfish appliance launch costs under TCG (no KVM), for progress messages.
LAUNCH_ESTIMATE_S = 12


def plan_failed(plan: str, failed: PlanFailed) -> PlanScriptFailed:
    where = (f"script {failed.step}, line {failed.line}: " if failed.step and failed.line is not None
             else f"script {failed.step}: " if failed.step else "")
    error = PlanScriptFailed(plan=plan, where=where, reason=failed.reason,
                             nested=[(f"{failed.step}:{failed.line}" if failed.step else "plan", failed.reason)])
    error.transient = not failed.launched
    return error


@dataclass(frozen=True)
class ResolvedPlan:
    """A build plan ready to run: scripts with tokens substituted, and the secret values to mask."""

    name: str
    steps: list[PlanStep]
    secrets: list[str]
    values: dict[str, Any] = field(default_factory=dict)  # every attribute, checked: what an answer file gets


def _id_from_uri(uri: str, path: str, field: str) -> str:
    text = uri.strip().rstrip("/")
    if text.startswith(path + "/"):
        text = text[len(path) + 1:]
    if not text or "/" in text:
        raise InvalidInput(reason=f"{field}: {uri!r} is not a URI of the form {path}/<id>",
                           nested=[(field, f"expected {path}/<id>")])
    return text


def _nic_fields(name: str, raw: object) -> dict[str, object] | None:
    """A NIC value as a dict of sub-fields (a JSON string as stored, or a dict); None if it is not one."""
    if isinstance(raw, str) and raw.strip().startswith("{"):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return None
    if not isinstance(raw, Mapping):
        return None
    prefix = name + "."
    return {str(k).removeprefix(prefix): v for k, v in raw.items()}


def _merge(attributes: Sequence[CustomAttribute], layers: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """Later layers win. A NIC's sub-fields are merged field by field (a request may give only
    ``ManagementNIC.ipaddress`` over the plan's NIC); anything unknown is passed on for
    ``validate_all`` to name."""
    nics = {a.name for a in attributes if a.type is AttributeType.NIC}
    values: dict[str, object] = {}
    merged_nics: dict[str, dict[str, object]] = {}
    for layer in layers:
        for key, value in layer.items():
            base, dot, sub = key.partition(".")
            if base not in nics:
                values[key] = value
                continue
            fields = merged_nics.setdefault(base, {})
            if dot:
                fields[sub] = value
            elif value is None or value == "":
                continue
            else:
                whole = _nic_fields(base, value)
                if whole is None:
                    values[key] = value  # not a NIC object: validate_all says so
                else:
                    fields.update(whole)
    for name, fields in merged_nics.items():
        values.setdefault(name, fields)
    return values


def resolve_build_plan(db: Session, box: SecretBox, build_plan: BuildPlan,
                       overrides: Mapping[str, object] = {}, given: Mapping[str, object] = {}) -> ResolvedPlan:
    """Merge and validate the values (required), then substitute every step's script.

    :raises AttributesInvalid: naming each bad attribute.
    :raises UnresolvedTokens: naming the tokens no attribute (or default) supplies.
    :raises UnsafeValue: a value with a newline, carriage return or NUL.
    """
    attributes = definitions(build_plan)
    defaults: dict[str, object] = {name: box.open(sealed) for name, sealed in build_plan.sealed_values.items()}
    values = _merge(attributes, [defaults, overrides, given])
    validated = validate_all(attributes, values, required=True)
    secrets = [str(validated[a.name]) for a in attributes if is_secret(a) and validated.get(a.name)]
    scripts = PlanScriptRepository(db).many(step["planScriptId"] for step in build_plan.steps)
    steps: list[PlanStep] = []
    for step in sorted(build_plan.steps, key=lambda s: int(s["serialNumber"])):
        script = scripts.get(step["planScriptId"])
        if script is None:  # pragma: no cover - plan scripts in use cannot be deleted
            raise NotFound(kind="plan script", ident=step["planScriptId"])
        text = substitute(script.content, validated, guard=guestfish_safe).text
        steps.append(PlanStep(script.name, text))
    return ResolvedPlan(build_plan.name, steps, secrets, dict(validated))


def load_deployment_plan(db: Session, plan_id: str) -> tuple[DeploymentPlan, BuildPlan]:
    plan = DeploymentPlanRepository(db).get(plan_id)
    if plan is None:
        raise InvalidInput(reason=f"deploymentPlanUri: the deployment plan {DEPLOYMENT_PLANS}/{plan_id} does not "
                                  "exist", nested=[("deploymentPlanUri", "no such deployment plan")])
    build_plan = BuildPlanRepository(db).get(plan.build_plan_id)
    if build_plan is None:  # pragma: no cover - the foreign key forbids it
        raise NotFound(kind="build plan", ident=plan.build_plan_id)
    return plan, build_plan


def resolve_deployment_plan(db: Session, box: SecretBox, plan_id: str, given: Mapping[str, object],
                            sealed_given: Mapping[str, str] = {}) -> ResolvedPlan:
    """The deployment plan's build plan with build plan defaults < plan values < ``given``
    (plus ``sealed_given``, password values sealed with ``box``).

    :raises InvalidInput: a non-editable attribute given, or what :func:`resolve_build_plan` raises.
    """
    plan, build_plan = load_deployment_plan(db, plan_id)
    locked = {o["name"] for o in plan.custom_attributes if o.get("editable") is False}
    refused = sorted({key for key in given if key.partition(".")[0] in locked}
                     | {key for key in sealed_given if key in locked})
    if refused:
        raise InvalidInput(reason=f"the deployment plan {plan.name} does not allow these custom attributes to be "
                                  f"changed: {', '.join(refused)}",
                           nested=[(name, "not editable in this deployment plan") for name in refused])
    overrides: dict[str, object] = {o["name"]: o["value"] for o in plan.custom_attributes if o.get("value") is not None}
    overrides.update({name: box.open(sealed) for name, sealed in plan.sealed_values.items()})
    request = dict(given)
    request.update({name: box.open(sealed) for name, sealed in sealed_given.items()})
    return resolve_build_plan(db, box, build_plan, overrides, request)


def attribute_values(entries: Sequence[Any]) -> dict[str, object]:
    """``[{"name": ..., "value": ...}]`` → ``{name: value}``; a malformed or repeated entry is a 400."""
    values: dict[str, object] = {}
    errors: list[tuple[str, str]] = []
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not name:
            errors.append((f"customAttributes[{index}]", "expected an object with a name and a value"))
        elif name in values:
            errors.append((name, "given twice"))
        else:
            values[name] = entry.get("value")
    if errors:
        raise InvalidInput(reason="; ".join(f"{where}: {why}" for where, why in errors), nested=errors)
    return values


class PersonalizeService:
    def __init__(self, db: Session, store: ImageStore, secrets: SecretBox, clock: Clock = system_clock,
                 tasks: TaskService | None = None, nbd: NbdExports | None = None) -> None:
        self.db = db
        self.volumes = OsVolumeRepository(db)
        self.store = store
        self.secrets = secrets
        self.tasks = tasks or TaskService(db, clock)
        self.nbd = nbd

    def start(self, volume_id: str, deployment_plan_uri: str, entries: Sequence[Any], owner: str) -> Task:
        """Check everything a run needs (values, tokens), then queue the run."""
        volume = self.volumes.get(volume_id)
        if volume is None:
            raise NotFound(kind="OS volume", ident=volume_id)
        refuse_while_on_nbd(self.nbd, volume, "personalize")
        plan_id = _id_from_uri(deployment_plan_uri, DEPLOYMENT_PLANS, "deploymentPlanUri")
        given = attribute_values(entries)
        _, build_plan = load_deployment_plan(self.db, plan_id)
        secret_names = {a.name for a in definitions(build_plan) if is_secret(a)}
        # A password is sealed in the task's arguments (a MASK sent back means "keep the plan's").
        sealed = {name: self.secrets.seal(str(value)) for name, value in given.items()
                  if name in secret_names and value not in (None, "", MASK)}
        plain = {name: value for name, value in given.items() if name not in secret_names}
        resolve_deployment_plan(self.db, self.secrets, plan_id, plain, sealed)
        return self.tasks.create(
            kind=TASK_PERSONALIZE, name="Personalize OS volume", owner=owner,
            args={"volumeId": volume.id, "deploymentPlanId": plan_id, "values": plain, "sealedValues": sealed},
            resource=ResourceRef(uri=os_volume_uri(volume.id), name=volume.name, category=CATEGORY),
        )

    def log_text(self, volume_id: str) -> str:
        volume = self.volumes.get(volume_id)
        if volume is None:
            raise NotFound(kind="OS volume", ident=volume_id)
        try:
            return self.store.volume_log_path(volume.id).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(kind="build plan log of OS volume", ident=volume.name,
                           recommended_actions=["Personalize the volume first: POST "
                                                f"{os_volume_uri(volume.id)}/personalize"]) from None


def personalize_volume(store: ImageStore, settings: Settings, volume_id: str, plan: ResolvedPlan, header: str,
                       on_progress: Callable[[float], None] | None = None) -> PlanRun:
    """Run ``plan`` against the OS volume's file in one guestfish session and keep the run's log
    (``header`` first) as the volume's log, whether the run succeeds or fails. Blocking.

    :raises PlanScriptFailed: a script failed (naming the script and line).
    """
    try:
        run = run_plan(store.volume_path(volume_id), plan.steps, work_dir=settings.home / "guestfish",
                       secrets=plan.secrets, allow_shell=settings.images.plan_shell_escapes,
                       timeout=settings.images.plan_timeout_s, on_progress=on_progress)
    except PlanFailed as failed:
        store.write_volume_log(volume_id, header + failed.log)
        raise plan_failed(plan.name, failed) from None
    store.write_volume_log(volume_id, header + run.log)
    return run


class OsVolumePersonalizeTask(TaskHandler):
    """Run a deployment plan's build plan against an OS volume in one guestfish session."""

    kind: ClassVar[str] = TASK_PERSONALIZE
    # Not resumable: scripts may append to files or fail on what a first half-run left.
    resumable: ClassVar[bool] = False

    async def run(self, ctx: TaskContext) -> Outcome:
        volume_id, plan_id = str(ctx.args["volumeId"]), str(ctx.args["deploymentPlanId"])
        store, settings = self.app.images, self.app.settings

        def prepare() -> tuple[str, ResolvedPlan]:
            with unit_of_work(self.app.session_factory) as db:
                volume = OsVolumeRepository(db).get(volume_id)
                if volume is None:
                    raise NotFound(kind="OS volume", ident=volume_id)
                refuse_while_on_nbd(self.app.nbd, volume, "personalize")
                return volume.name, resolve_deployment_plan(
                    db, self.app.secrets, plan_id, dict(ctx.args.get("values") or {}),
                    dict(ctx.args.get("sealedValues") or {}))

        name, plan = await ctx.run_sync(prepare)
        ctx.set_result(os_volume_uri(volume_id), name, CATEGORY)
        count = len(plan.steps)
        await ctx.progress(2, f"Running build plan {plan.name} ({count} scripts) on OS volume {name}: launching "
                              f"the guestfish appliance first (about {LAUNCH_ESTIMATE_S} s under TCG).")
        header = f"OS volume {name} ({volume_id}), build plan {plan.name}, by {ctx.owner} (task {ctx.task_id})\n"
        run = await ctx.run_with_progress(
            lambda report: personalize_volume(store, settings, volume_id, plan, header, report),
            2, 95, f"Running build plan {plan.name}", PROGRESS_INTERVAL_S)
        for index, step in enumerate(run.steps, start=1):  # what each script took, for the task's history
            await ctx.progress(95, f"Script {index}/{count} {step.name}: {len(step.commands)} commands in "
                                   f"{step.seconds:.1f} s.")
        await ctx.progress(100, f"OS volume {name} personalized with {plan.name} in {run.seconds:.1f} s "
                                f"(appliance launch {run.launch_seconds:.1f} s).")
        return Outcome(status=f"OS volume {name} personalized with {plan.name}.")
