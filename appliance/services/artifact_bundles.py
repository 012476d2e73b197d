"""Artifact bundles (Image Streamer ``/rest/artifact-bundles``): plan scripts, build plans,
deployment plans and, when asked, golden images, in HPE's bundle zip (``plans/bundles.py``), to
move them between appliances or keep them.

Three kinds of long work, each a task:
- **upload** (``artifact-bundle-upload``): a zip sent to the appliance is checked in full (entry
  names, sizes, every checksum of its ``SHA256SUM``, the references between its artifacts) and
  kept as ``INGOT_HOME/bundles/<id>.zip``. Nothing is imported yet.
- **extract** (``artifact-bundle-extract``): the bundle's artifacts become the appliance's
  (``appliance/services/bundle_import.py``): golden images are ingested like any import, then the
  plan scripts, build plans and deployment plans are written in one transaction.
- **create** (``artifact-bundle-create``): the chosen artifacts, and what they need (a
  deployment plan's build plan, a build plan's scripts), written into a new bundle to download.

Password attribute values never leave the appliance: a bundle carries password attributes with
an empty value.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.db.base import new_id
from appliance.db.session import unit_of_work
from appliance.errors import AlreadyExists, InvalidInput, NotFound
from appliance.models import ArtifactBundle, BuildPlan, DeploymentPlan, GoldenImage, PlanScript, Task
from appliance.query import CollectionQuery
from appliance.repositories.artifact_bundles import ArtifactBundleRepository
from appliance.repositories.base import Page
from appliance.repositories.build_plans import BuildPlanRepository
from appliance.repositories.deployment_plans import DeploymentPlanRepository
from appliance.repositories.golden_images import GoldenImageRepository
from appliance.repositories.plan_scripts import PlanScriptRepository
from appliance.services.bundle_import import BundleImporter
from appliance.services.golden_images import PROGRESS_INTERVAL_S, claimed_format, log_stamp, record_golden_image
from appliance.services.tasks import ResourceRef, TaskService
from appliance.tasks.handlers import Outcome, TaskContext, TaskHandler
from golden_images import assess, qemu_img
from plans import bundles
from plans.attributes import is_secret, parse_attributes

CATEGORY = "artifact-bundles"
PATH = "/rest/artifact-bundles"
TASK_UPLOAD = "artifact-bundle-upload"
TASK_EXTRACT = "artifact-bundle-extract"
TASK_CREATE = "artifact-bundle-create"
#: The lists of a bundle resource, in the order artifacts depend on each other.
KINDS = ("planScripts", "buildPlans", "goldenImages", "deploymentPlans")
KIND_PATHS = {"planScripts": "/rest/plan-scripts", "buildPlans": "/rest/build-plans",
              "goldenImages": "/rest/golden-images", "deploymentPlans": "/rest/deployment-plans"}


class InvalidBundle(InvalidInput):
    msg_fmt = "The artifact bundle cannot be used: {reason}"
    error_code = "ARTIFACT_BUNDLE_INVALID"
    default_actions = ("Check that the file is an artifact bundle exported by Image Streamer or Ingot, and that "
                       "it was not changed or cut short since; then upload it again.",)


def artifact_bundle_uri(bundle_id: str) -> str:
    return f"{PATH}/{bundle_id}"


def bundle_id_from_uri(uri: str) -> str:
    text = uri.strip().rstrip("/")
    if text.startswith(PATH + "/"):
        text = text[len(PATH) + 1:]
    if not text or "/" in text:
        raise InvalidInput(reason=f"{uri!r} is not an artifact bundle URI ({PATH}/<id>)")
    return text


def _id_from_uri(uri: str, kind: str) -> str:
    path = KIND_PATHS[kind]
    text = uri.strip().rstrip("/")
    if text.startswith(path + "/"):
        text = text[len(path) + 1:]
    if not text or "/" in text:
        raise InvalidInput(reason=f"{uri!r} is not a URI of {path}", nested=[(kind, f"{uri!r} is not {path}/<id>")])
    return text


def contents_of(bundle: bundles.Bundle) -> dict[str, list[dict[str, Any]]]:
    """What a bundle holds, per kind, as the resource lists it: the bundle's ids and names."""
    def listed(objects: Iterable[dict[str, Any]], id_key: str = "id") -> list[dict[str, Any]]:
        return [{"id": str(o.get(id_key) or o.get("id") or ""), "name": str(o.get("name") or "")} for o in objects]

    return {
        "planScripts": listed(bundle.plan_scripts),
        "buildPlans": listed(bundle.build_plans, "buildPlanid"),
        "goldenImages": listed(image.metadata for image in bundle.golden_images),
        "deploymentPlans": listed(bundle.deployment_plans),
    }


@dataclass(frozen=True)
class BundleSelection:
    """What POST /rest/artifact-bundles asks to put into a new bundle (URIs per kind)."""

    name: str
    description: str = ""
    read_only: bool = False
    plan_scripts: Sequence[str] = ()
    build_plans: Sequence[str] = ()
    golden_images: Sequence[str] = ()
    deployment_plans: Sequence[str] = ()


class ArtifactBundleService:
    def __init__(self, db: Session, directory: Path, clock: Clock = system_clock,
                 tasks: TaskService | None = None) -> None:
        self.bundles = ArtifactBundleRepository(db)
        self.directory = directory
        self.clock = clock
        self.tasks = tasks or TaskService(db, clock)

    def list(self, query: CollectionQuery) -> Page[ArtifactBundle]:
        return self.bundles.page(query)

    def get(self, bundle_id: str) -> ArtifactBundle:
        bundle = self.bundles.get(bundle_id)
        if bundle is None:
            raise NotFound(kind="artifact bundle", ident=bundle_id)
        return bundle

    def file_path(self, bundle_id: str) -> Path:
        path = bundle_file(self.directory, self.get(bundle_id).id)
        if not path.is_file():
            raise NotFound(kind="artifact bundle file", ident=path.name)
        return path

    def update(self, bundle_id: str, name: str, description: str) -> ArtifactBundle:
        bundle = self.get(bundle_id)
        name = name.strip()
        if not name:
            raise InvalidInput(reason="an artifact bundle needs a name")
        existing = self.bundles.by_name(name)
        if existing is not None and existing.id != bundle.id:
            raise AlreadyExists(kind="artifact bundle", name=name)
        bundle.name, bundle.description, bundle.modified = name, description, self.clock()
        return bundle

    def delete(self, bundle_id: str) -> None:
        """The bundle and its file; what it was extracted into stays."""
        bundle = self.get(bundle_id)
        self.bundles.delete(bundle)
        bundle_file(self.directory, bundle.id).unlink(missing_ok=True)

    def start_upload(self, upload: Path, filename: str, owner: str) -> Task:
        """Queue the check of a zip that web/uploads.py has received into ``upload``."""
        return self.tasks.create(
            kind=TASK_UPLOAD, name="Upload artifact bundle", owner=owner,
            args={"upload": str(upload), "filename": filename},
            resource=ResourceRef(uri=None, name=filename or "artifact bundle", category=CATEGORY))

    def start_extract(self, bundle_id: str, force: bool, owner: str) -> Task:
        bundle = self.get(bundle_id)
        return self.tasks.create(
            kind=TASK_EXTRACT, name="Extract artifact bundle", owner=owner,
            args={"bundleId": bundle.id, "force": force},
            resource=ResourceRef(uri=artifact_bundle_uri(bundle.id), name=bundle.name, category=CATEGORY))

    def start_create(self, selection: BundleSelection, owner: str) -> Task:
        """Check the selection now (every URI names an artifact; the name is free), add what the
        chosen artifacts need, and queue the writing of the zip."""
        name = selection.name.strip()
        if not name:
            raise InvalidInput(reason="an artifact bundle needs a name", nested=[("name", "is required")])
        if self.bundles.by_name(name) is not None:
            raise AlreadyExists(kind="artifact bundle", name=name)
        chosen = {kind: [_id_from_uri(uri, kind) for uri in uris] for kind, uris in (
            ("planScripts", selection.plan_scripts), ("buildPlans", selection.build_plans),
            ("goldenImages", selection.golden_images), ("deploymentPlans", selection.deployment_plans))}
        closed = dependencies(self.bundles.db, chosen)
        if not any(closed.values()):
            raise InvalidInput(reason="choose at least one plan script, build plan, deployment plan or golden image")
        return self.tasks.create(
            kind=TASK_CREATE, name="Create artifact bundle", owner=owner,
            args={"name": name, "description": selection.description, "readOnly": selection.read_only,
                  "artifacts": closed},
            resource=ResourceRef(uri=None, name=name, category=CATEGORY))


def bundle_file(directory: Path, bundle_id: str) -> Path:
    return directory / f"{bundle_id}.zip"


def dependencies(db: Session, chosen: dict[str, list[str]]) -> dict[str, list[str]]:
    """``chosen`` ids per kind, checked to exist, with what they need added: each deployment
    plan's build plan, each build plan's plan scripts. (A deployment plan's golden image comes
    along only when chosen: images are large, and the importing side may have it already.)"""
    errors: list[tuple[str, str]] = []
    out: dict[str, list[str]] = {kind: [] for kind in KINDS}

    def add(kind: str, ident: str) -> None:
        if ident not in out[kind]:
            out[kind].append(ident)

    repos: dict[str, Any] = {"planScripts": PlanScriptRepository(db), "buildPlans": BuildPlanRepository(db),
                             "goldenImages": GoldenImageRepository(db), "deploymentPlans": DeploymentPlanRepository(db)}
    for kind in KINDS:
        for ident in chosen.get(kind, []):
            if repos[kind].get(ident) is None:
                errors.append((kind, f"{KIND_PATHS[kind]}/{ident} does not exist"))
            else:
                add(kind, ident)
    if errors:
        raise InvalidInput(reason="; ".join(why for _, why in errors), nested=errors)
    for ident in list(out["deploymentPlans"]):
        add("buildPlans", repos["deploymentPlans"].get(ident).build_plan_id)
    for ident in list(out["buildPlans"]):
        for step in repos["buildPlans"].get(ident).steps:
            add("planScripts", step["planScriptId"])
    return out


# --- HPE's shapes, as a bundle carries them ----------------------------------------------------------
def _common(type_name: str, description: str) -> dict[str, Any]:
    return {"type": type_name, "uri": None, "category": None, "eTag": None, "created": None, "modified": None,
            "description": description, "status": None}


def exported_plan_script(script: PlanScript) -> dict[str, Any]:
    return {**_common("PlanScript", script.description), "id": script.id, "name": script.name, "state": None,
            "planType": script.plan_type, "content": script.content, "customAttributes": None,
            "hpProvided": script.hp_provided, "dependentArtifacts": None}


def _exported_attributes(definitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A password's value is never exported (it is sealed here); its definition is."""
    out = []
    for definition in definitions:
        secret = is_secret(parse_attributes([definition])[0])
        out.append({**definition, "value": "" if secret else definition.get("value")})
    return out


def exported_build_plan(plan: BuildPlan, script_names: dict[str, str]) -> dict[str, Any]:
    return {**_common("OeBuildPlan", plan.description), "buildPlanid": plan.id, "name": plan.name,
            "hpProvided": plan.hp_provided, "oeBuildPlanType": plan.plan_type,
            "buildStep": [{"serialNumber": str(step["serialNumber"]),
                           "planScriptUri": f"/rest/plan-scripts/{step['planScriptId']}",
                           "planScriptName": script_names.get(step["planScriptId"], ""),
                           "parameters": step.get("parameters") or None} for step in plan.steps],
            "customAttributes": _exported_attributes(plan.custom_attributes), "dependentArtifacts": None}


def exported_deployment_plan(plan: DeploymentPlan, build_plan: BuildPlan,
                             golden_image: GoldenImage | None) -> dict[str, Any]:
    """As HPE exports it: ``oeBuildPlanURI`` and ``goldenImageURI`` hold *names*; each attribute
    carries the build plan's definition with this plan's value and flags."""
    overrides = {o["name"]: o for o in plan.custom_attributes}
    attributes = []
    for definition in _exported_attributes(build_plan.custom_attributes):
        override = overrides.get(definition["name"], {})
        value = definition["value"] if override.get("value") is None else override["value"]
        attributes.append({**definition, "value": value, "visible": bool(override.get("visible", True)),
                           "editable": bool(override.get("editable", True))})
    return {**_common("OEDeploymentPlan", plan.description), "id": plan.id, "name": plan.name, "state": None,
            "hpProvided": plan.hp_provided, "oeBuildPlanURI": build_plan.name,
            "goldenImageURI": golden_image.name if golden_image else None, "customAttributes": attributes,
            "importMetadata": False}


def exported_golden_image(image: GoldenImage) -> dict[str, Any]:
    return {**_common("GoldenImage", image.description), "id": image.id, "name": image.name, "state": None,
            "size": image.size, "checkSum": image.sha256, "imageCapture": image.image_capture, "readOnly": False,
            "format": "qcow2"}


# --- the tasks -------------------------------------------------------------------------------------------
class _BundleTask(TaskHandler):
    @property
    def directory(self) -> Path:
        return self.app.bundles_dir

    def _read(self, path: Path) -> bundles.Bundle:
        try:
            return bundles.read_bundle(path)
        except bundles.BundleError as exc:
            raise InvalidBundle(reason=str(exc)) from exc


class ArtifactBundleUploadTask(_BundleTask):
    kind: ClassVar[str] = TASK_UPLOAD
    resumable: ClassVar[bool] = False  # the upload does not outlive the process that received it

    async def run(self, ctx: TaskContext) -> Outcome:
        upload = self.app.images.incoming_dir / Path(str(ctx.args["upload"])).name
        filename = str(ctx.args.get("filename") or "")
        try:
            if not await ctx.run_sync(upload.is_file):
                raise InvalidInput(reason="the uploaded file is gone (the appliance restarted); upload it again")
            await ctx.progress(5, f"Checking {filename or 'the bundle'}: its entries, checksums and references.")
            bundle = await ctx.run_sync(self._read, upload)
            digest = await ctx.run_sync(_sha256, upload)
            await ctx.progress(80, "Keeping the bundle.")
            bundle_id = new_id()
            target = bundle_file(self.directory, bundle_id)
            await ctx.run_sync(_move_durably, upload, target)
        finally:
            await ctx.run_sync(lambda: upload.unlink(missing_ok=True))

        def record() -> str:
            with unit_of_work(self.app.session_factory) as db:
                repo = ArtifactBundleRepository(db)
                row = repo.add(ArtifactBundle(
                    id=bundle_id, name=_free_name(repo, bundle.manifest.name or Path(filename).stem or "bundle"),
                    description=bundle.manifest.description, read_only=bundle.manifest.read_only,
                    artifact_type=bundle.manifest.artifact_type, bundle_timestamp=bundle.manifest.timestamp,
                    origin="uploaded", size=target.stat().st_size, sha256=digest, contents=contents_of(bundle),
                    imported={}, created_by=ctx.owner))
                return row.name

        try:
            name = await ctx.run_sync(record)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        ctx.set_result(artifact_bundle_uri(bundle_id), name, CATEGORY)
        counts = ", ".join(f"{len(v)} {k}" for k, v in contents_of(bundle).items() if v)
        await ctx.progress(100, f"Artifact bundle {name} uploaded ({counts}); extract it to import them.")
        return Outcome(status=f"Artifact bundle {name} uploaded.")


class ArtifactBundleExtractTask(_BundleTask):
    kind: ClassVar[str] = TASK_EXTRACT
    # Extraction is idempotent: artifacts already imported are found unchanged and reused.
    resumable: ClassVar[bool] = True

    async def run(self, ctx: TaskContext) -> Outcome:
        bundle_id, force = str(ctx.args["bundleId"]), bool(ctx.args.get("force"))
        path = bundle_file(self.directory, bundle_id)
        if not await ctx.run_sync(path.is_file):
            raise NotFound(kind="artifact bundle file", ident=path.name)
        await ctx.progress(2, "Checking the bundle again before importing it.")
        bundle = await ctx.run_sync(self._read, path)
        images = await self._golden_images(ctx, path, bundle)
        await ctx.progress(90, "Importing plan scripts, build plans and deployment plans.")

        def import_all() -> tuple[str, str]:
            with unit_of_work(self.app.session_factory) as db:
                row = ArtifactBundleRepository(db).get(bundle_id)
                if row is None:
                    raise NotFound(kind="artifact bundle", ident=bundle_id)
                report = BundleImporter(db, self.app.secrets, self.app.clock).run(
                    bundle, images, force=force, owner=ctx.owner)
                row.imported, row.extracted = report.imported, self.app.clock()
                return row.name, report.summary()

        name, summary = await ctx.run_sync(import_all)
        ctx.set_result(artifact_bundle_uri(bundle_id), name, CATEGORY)
        await ctx.progress(100, f"Artifact bundle {name} extracted: {summary}.")
        return Outcome(status=f"Artifact bundle {name} extracted: {summary}.")

    async def _golden_images(self, ctx: TaskContext, path: Path, bundle: bundles.Bundle) -> dict[str, str]:
        """{id in the bundle: golden image id here}: an image of the same name is kept as it is
        (golden images are never overwritten: volumes may be clones of them); others are ingested
        like any import, 5-90 % of the task shared among them by size."""
        out: dict[str, str] = {}
        total = sum(image.payload_size for image in bundle.golden_images) or 1
        done = 0
        for image in bundle.golden_images:
            name = str(image.metadata.get("name") or "")
            existing = await ctx.run_sync(self._image_named, name)
            start = 5 + 85 * done // total
            done += image.payload_size
            end = 5 + 85 * done // total
            if existing is not None:
                out[str(image.metadata.get("id"))] = existing
                await ctx.progress(end, f"Golden image {name} is in the library already; kept as it is.")
                continue
            out[str(image.metadata.get("id"))] = await self._ingest(ctx, path, image, name, start, end)
        return out

    def _image_named(self, name: str) -> str | None:
        with unit_of_work(self.app.session_factory) as db:
            found = GoldenImageRepository(db).by_name(name)
            return found.id if found else None

    async def _ingest(self, ctx: TaskContext, path: Path, image: bundles.BundledGoldenImage, name: str,
                      start: int, end: int) -> str:
        store = self.app.images
        log = [f"{log_stamp(self.app)} import of golden image {name} from artifact bundle {path.name} "
               f"by {ctx.owner} (task {ctx.task_id})"]
        with store.workspace() as work:
            await ctx.progress(start, f"Unpacking golden image {name}.")
            try:
                disk = await ctx.run_sync(bundles.extract_golden_image, path, image, work)
            except bundles.BundleError as exc:
                raise InvalidBundle(reason=str(exc)) from exc
            try:
                claim = claimed_format(disk.name)
                stored = await ctx.run_with_progress(lambda progress: store.ingest(
                    disk, claimed=claim, on_progress=progress,
                    max_bundle_bytes=self.app.settings.images.max_virtual_size),
                    start + (end - start) // 3, end, f"Converting golden image {name}", PROGRESS_INTERVAL_S)
            except (assess.ImageRefused, qemu_img.QemuImgError) as exc:
                raise InvalidBundle(reason=f"the golden image {name}: {exc}") from exc
        log.append(f"{log_stamp(self.app)} probed as {stored.source_format}, converted to qcow2")
        return await ctx.run_sync(lambda: record_golden_image(
            self.app, stored, name, str(image.metadata.get("description") or ""), ctx.owner, ctx.task_id, log))


class ArtifactBundleCreateTask(_BundleTask):
    kind: ClassVar[str] = TASK_CREATE
    resumable: ClassVar[bool] = True  # nothing is published half-made: starting over is correct

    async def run(self, ctx: TaskContext) -> Outcome:
        name = str(ctx.args["name"])
        artifacts: dict[str, list[str]] = ctx.args["artifacts"]
        await ctx.progress(5, "Reading the artifacts.")
        objects = await ctx.run_sync(self._objects, artifacts)
        bundle_id = new_id()
        target = bundle_file(self.directory, bundle_id)
        stamp = self.app.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # as HPE writes it
        manifest = bundles.Manifest(name=name, description=str(ctx.args.get("description") or ""),
                                    read_only=bool(ctx.args.get("readOnly")), timestamp=stamp)
        images = objects["goldenImages"]
        with_images = f" with {len(images)} golden image(s)" if images else ""
        await ctx.progress(10, f"Writing the bundle{with_images}.")
        await ctx.run_sync(lambda: bundles.write_bundle(
            target, manifest, plan_scripts=objects["planScripts"], build_plans=objects["buildPlans"],
            deployment_plans=objects["deploymentPlans"], golden_images=images))
        try:
            await ctx.progress(90, "Checking the new bundle as an upload would be checked.")
            bundle = await ctx.run_sync(self._read, target)
            digest = await ctx.run_sync(_sha256, target)

            def record() -> None:
                with unit_of_work(self.app.session_factory) as db:
                    repo = ArtifactBundleRepository(db)
                    if repo.by_name(name) is not None:
                        raise AlreadyExists(kind="artifact bundle", name=name)
                    repo.add(ArtifactBundle(
                        id=bundle_id, name=name, description=manifest.description, read_only=manifest.read_only,
                        artifact_type=manifest.artifact_type, bundle_timestamp=manifest.timestamp, origin="created",
                        size=target.stat().st_size, sha256=digest, contents=contents_of(bundle), imported={},
                        created_by=ctx.owner))

            await ctx.run_sync(record)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        ctx.set_result(artifact_bundle_uri(bundle_id), name, CATEGORY)
        counts = ", ".join(f"{len(v)} {k}" for k, v in contents_of(bundle).items() if v)
        await ctx.progress(100, f"Artifact bundle {name} created ({counts}).")
        return Outcome(status=f"Artifact bundle {name} created.")

    def _objects(self, artifacts: dict[str, list[str]]) -> dict[str, Any]:
        """The HPE-shaped objects, and each golden image's file, read in one transaction."""
        with unit_of_work(self.app.session_factory) as db:
            scripts = PlanScriptRepository(db).many(artifacts.get("planScripts", []))
            plans = [BuildPlanRepository(db).get(i) for i in artifacts.get("buildPlans", [])]
            deployments = [DeploymentPlanRepository(db).get(i) for i in artifacts.get("deploymentPlans", [])]
            images = [GoldenImageRepository(db).get(i) for i in artifacts.get("goldenImages", [])]
            if (len(scripts) != len(artifacts.get("planScripts", [])) or None in plans or None in deployments
                    or None in images):
                raise NotFound(kind="artifact", ident="one of the chosen artifacts (deleted since the request)")
            names = {s.id: s.name for s in PlanScriptRepository(db).many(
                step["planScriptId"] for plan in plans if plan for step in plan.steps).values()}
            build_plans = BuildPlanRepository(db)
            return {
                "planScripts": [exported_plan_script(scripts[i]) for i in artifacts.get("planScripts", [])],
                "buildPlans": [exported_build_plan(p, names) for p in plans if p],
                "deploymentPlans": [exported_deployment_plan(
                    d, build_plans.get(d.build_plan_id),  # type: ignore[arg-type]  # the foreign key holds
                    GoldenImageRepository(db).get(d.golden_image_id) if d.golden_image_id else None)
                    for d in deployments if d],
                "goldenImages": [(exported_golden_image(i), self.app.images.golden_path(i.sha256))
                                 for i in images if i],
            }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _move_durably(source: Path, target: Path) -> None:
    """Into the bundles directory: a rename, or a copy when INGOT_IMAGES__ROOT puts incoming/ on
    another file system. (The upload was fsynced when it was received.)"""
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        partial = target.with_suffix(".part")
        shutil.copyfile(source, partial)
        with partial.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _free_name(repo: ArtifactBundleRepository, wanted: str) -> str:
    """An uploaded bundle keeps its manifest's name, numbered when that is taken ("name (2)")."""
    name, n = wanted[:240], 1
    while repo.by_name(name) is not None:
        n += 1
        name = f"{wanted[:240]} ({n})"
    return name
