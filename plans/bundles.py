"""HPE Image Streamer artifact bundles: reading and writing the zip, nothing else.

No database, no web: the artifact-bundle service turns a :class:`Bundle` into rows and rows back
into a bundle. This module owns the format and refuses anything it cannot vouch for.

**The format**, as HPE's exports write it (``HPE_Foundation_Artifacts-5_00.zip``,
``HPE-ESXi-6.7-2021-01-21-v5.2.zip``). Every entry sits at the top level, with no directories:

=============================== ================================================================
``<id>_planscript.json``        a ``PlanScript`` object (``id``, ``name``, ``planType``, ``content``)
``<id>_buildplan.json``         an ``OeBuildPlan`` (id in ``buildPlanid``; ``buildStep`` items name
                                their script as ``/rest/plan-scripts/<id of a bundled script>``)
``<id>_deploymentplan.json``    an ``OEDeploymentPlan``; its ``oeBuildPlanURI`` holds the build
                                plan's *name*, not a URI
``<id>_goldenimage.json``       golden image metadata; its disk travels as the entry
``<golden image name>.zip``     a nested zip holding one disk file
``MANIFEST.MF``                 ``Key:Value`` lines (``Artifact Name``, ``Description``, ``Read
                                Only``, ``Time Stamp``, ``Artifact Type``), no final newline
``SHA256SUM.sha256sum``         ``<entry name>\\t<sha256 hex>`` for every other entry, the
                                manifest included; written last
=============================== ================================================================

**Theory of operation.** :func:`read_bundle` never writes to disk. It checks the archive (entry
count, names, encryption, compression methods), reads the small entries with a bound (the size a
zip header declares can lie), checks every entry against ``SHA256SUM`` (payloads are hashed by
streaming), validates each object's required fields and the references between them, and only
then returns. :func:`extract_golden_image` streams one payload's disk file out, again checking the
payload's sha256. :func:`write_bundle` serialises objects the caller has already put in HPE's shape
and applies the same checks first, so Ingot never writes a bundle it would refuse to read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

__all__ = [
    "MANIFEST_ENTRY",
    "SUMS_ENTRY",
    "Bundle",
    "BundleError",
    "BundledGoldenImage",
    "Manifest",
    "build_plan_id",
    "build_plan_reference",
    "extract_golden_image",
    "read_bundle",
    "script_id_of_step",
    "write_bundle",
]

MANIFEST_ENTRY = "MANIFEST.MF"
SUMS_ENTRY = "SHA256SUM.sha256sum"

# Artifact kinds: entry-name suffix → the words used in error messages.
_KINDS = {
    "planscript": "plan script",
    "buildplan": "build plan",
    "deploymentplan": "deployment plan",
    "goldenimage": "golden image",
}
# Ids become entry names, so they are held to a safe alphabet (HPE's are UUIDs).
_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
_ID_RE = re.compile(_ID)
_JSON_ENTRY_RE = re.compile(rf"(?P<id>{_ID})_(?P<kind>{'|'.join(_KINDS)})\.json")
_SCRIPT_URI_RE = re.compile(rf"(?:/rest/plan-scripts/)?(?P<id>{_ID})")
_BUILD_PLAN_URI_RE = re.compile(rf"/rest/build-plans/(?P<id>{_ID})")
_GOLDEN_IMAGE_URI_RE = re.compile(rf"/rest/golden-images/(?P<id>{_ID})")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# A deflated entry that claims to grow more than this is a zip bomb, not a JSON document. Payloads
# are exempt: a raw disk full of zeros legitimately deflates about 1000:1, and payloads are only
# ever streamed through a hash or bounded by their declared size, never held in memory.
_BOMB_RATIO = 100
_BOMB_FLOOR = 1 << 20
_CHUNK = 1 << 20
# The nested zip's central directory is read in one piece by zipfile; one disk file needs ~100 bytes.
_MAX_NESTED_READ = 16 << 20
_DISK_SUFFIXES = frozenset({".raw", ".img", ".qcow2", ".vmdk", ".vhd", ".vhdx", ".iso"})


class BundleError(ValueError):
    """A bundle that cannot be read or written.

    ``str()`` is a user-facing message naming the entry at fault; ``entry`` holds that name when
    there is one (``None`` when the archive as a whole is at fault).
    """

    def __init__(self, message: str, *, entry: str | None = None) -> None:
        super().__init__(message)
        self.entry = entry


@dataclass(frozen=True)
class Manifest:
    """``MANIFEST.MF``. Unknown keys in a bundle are tolerated and dropped."""

    name: str
    description: str = ""
    read_only: bool = False
    timestamp: str = ""  # as written, e.g. "2018-01-30T17:10:45.182Z"
    artifact_type: str = "USER"


@dataclass(frozen=True)
class BundledGoldenImage:
    metadata: dict[str, Any]  # the _goldenimage.json object
    payload_entry: str  # name of the nested zip entry in the bundle
    payload_size: int  # uncompressed size of that entry


@dataclass(frozen=True)
class Bundle:
    manifest: Manifest
    plan_scripts: list[dict[str, Any]]  # the JSON objects as found, in entry order
    build_plans: list[dict[str, Any]]
    deployment_plans: list[dict[str, Any]]
    golden_images: list[BundledGoldenImage]


# --- references (pure) -------------------------------------------------------------------------
def script_id_of_step(step: Mapping[str, Any]) -> str:
    """The plan-script id a build step names: ``/rest/plan-scripts/<id>`` or a bare id.

    :raises BundleError: when ``planScriptUri`` is missing or is not such a reference.
    """
    uri = step.get("planScriptUri")
    match = _SCRIPT_URI_RE.fullmatch(uri) if isinstance(uri, str) and ".." not in uri else None
    if match is None:
        raise BundleError(f"planScriptUri {uri!r} is not a plan-script URI")
    return match["id"]


def build_plan_id(plan: Mapping[str, Any]) -> str:
    """A build plan's id: HPE spells it ``buildPlanid``; ``id`` is accepted too."""
    value = plan.get("buildPlanid") or plan.get("id")
    if not isinstance(value, str) or not value:
        raise BundleError(f"build plan {plan.get('name')!r} has no buildPlanid")
    return value


def build_plan_reference(
    deployment_plan: Mapping[str, Any], build_plans: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any]:
    """The build plan a deployment plan uses, among ``build_plans``.

    ``oeBuildPlanURI`` (or the Go SDK's ``oeBuildPlanUri``) holds, in HPE's exports, the build
    plan's *name*; a ``/rest/build-plans/<id>`` URI or a bare id is accepted too.

    :raises BundleError: when no bundled build plan matches, or more than one does.
    """
    plan_name = deployment_plan.get("name")
    ref = _field(deployment_plan, "oeBuildPlanURI", "oeBuildPlanUri")
    if not isinstance(ref, str) or not ref:
        raise BundleError(f"deployment plan {plan_name!r} has no oeBuildPlanURI")
    uri = _BUILD_PLAN_URI_RE.fullmatch(ref)
    if uri is not None:
        found = [p for p in build_plans if _plan_id_or_none(p) == uri["id"]]
    else:
        found = [p for p in build_plans if p.get("name") == ref or _plan_id_or_none(p) == ref]
    if not found:
        raise BundleError(f"deployment plan {plan_name!r} uses build plan {ref!r}, which is not in the bundle")
    if len(found) > 1:
        raise BundleError(f"deployment plan {plan_name!r}: build plan {ref!r} matches more than one build plan")
    return found[0]


def golden_image_reference(
    deployment_plan: Mapping[str, Any], golden_images: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The bundled golden image (its metadata) a deployment plan names by id, URI or name; None
    when it names none, or one that is not in the bundle (see below)."""
    ref = _field(deployment_plan, "goldenImageURI", "goldenImageUri")
    if ref is None or ref == "":
        return None  # an "empty volume" plan
    plan_name = deployment_plan.get("name")
    if not isinstance(ref, str):
        raise BundleError(f"deployment plan {plan_name!r}: goldenImageURI must be a string or null")
    uri = _GOLDEN_IMAGE_URI_RE.fullmatch(ref)
    key = uri["id"] if uri is not None else ref
    found = [g for g in golden_images if g.get("id") == key or (uri is None and g.get("name") == ref)]
    if len(found) > 1:
        raise BundleError(f"deployment plan {plan_name!r} uses golden image {ref!r}, which matches more than one "
                          "golden image")
    # None when the image is not in the bundle: HPE exports a deployment plan without its golden
    # image by naming it, and the importing appliance looks that name up in its own library.
    return found[0] if found else None


def _field(obj: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in obj:
            return obj[key]
    return None


def _plan_id_or_none(plan: Mapping[str, Any]) -> str | None:
    value = plan.get("buildPlanid") or plan.get("id")
    return value if isinstance(value, str) else None


def _object_id(kind: str, obj: Mapping[str, Any]) -> Any:
    return _plan_id_or_none(obj) if kind == "buildplan" else obj.get("id")


# --- object validation (pure; shared by read and write) ----------------------------------------
def _check_object(kind: str, obj: Any, entry: str, where: str | None = None) -> None:
    """Required fields and their types, per artifact kind; ``where`` prefixes the message."""

    def fail(reason: str) -> BundleError:
        return BundleError(f"{where or f'bundle entry {entry!r}'}: {reason}", entry=entry)

    if not isinstance(obj, dict):
        raise fail(f"expected a JSON object, found {_json_type(obj)}")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail(f"the {_KINDS[kind]} has no name")
    ident = _object_id(kind, obj)
    id_key = "buildPlanid" if kind == "buildplan" else "id"
    if not isinstance(ident, str) or not _ID_RE.fullmatch(ident) or ".." in ident:
        raise fail(f"{_KINDS[kind]} {name!r} has no usable {id_key} (found {ident!r})")
    if not isinstance(obj.get("description", ""), str | None):
        raise fail(f"description of {name!r} must be a string")
    attributes = obj.get("customAttributes")
    if attributes is not None and not (isinstance(attributes, list) and all(isinstance(a, dict) for a in attributes)):
        raise fail(f"customAttributes of {name!r} must be a list of objects")
    if kind == "planscript":
        for key in ("planType", "content"):
            value = obj.get(key)
            if not isinstance(value, str) or (key == "planType" and not value):
                raise fail(f"plan script {name!r}: {key} must be a string, found {_json_type(value)}")
    elif kind == "buildplan":
        if not isinstance(obj.get("oeBuildPlanType"), str) or not obj["oeBuildPlanType"]:
            raise fail(f"build plan {name!r} has no oeBuildPlanType")
        steps = obj.get("buildStep")
        if steps is not None and not (isinstance(steps, list) and all(isinstance(s, dict) for s in steps)):
            raise fail(f"buildStep of build plan {name!r} must be a list of objects")
    elif kind == "deploymentplan":
        ref = _field(obj, "oeBuildPlanURI", "oeBuildPlanUri")
        if not isinstance(ref, str) or not ref:
            raise fail(f"deployment plan {name!r} has no oeBuildPlanURI")
        if not isinstance(_field(obj, "goldenImageURI", "goldenImageUri"), str | None):
            raise fail(f"goldenImageURI of deployment plan {name!r} must be a string or null")


def _check_artifacts(
    scripts: Sequence[tuple[str, Mapping[str, Any]]],
    build_plans: Sequence[tuple[str, Mapping[str, Any]]],
    deployment_plans: Sequence[tuple[str, Mapping[str, Any]]],
    golden_images: Sequence[tuple[str, Mapping[str, Any]]],
) -> None:
    """Unique names and ids per kind, and every reference resolved inside the bundle.

    Each artifact comes with the entry name it travels in, for the error message.
    """
    for kind, items in (
        ("planscript", scripts),
        ("buildplan", build_plans),
        ("deploymentplan", deployment_plans),
        ("goldenimage", golden_images),
    ):
        for label in ("name", "id"):
            seen: dict[Any, str] = {}
            for entry, obj in items:
                value = obj.get("name") if label == "name" else _object_id(kind, obj)
                if value in seen:
                    raise BundleError(
                        f"bundle entry {entry!r}: {_KINDS[kind]} {label} {value!r} is also used by {seen[value]!r}",
                        entry=entry,
                    )
                seen[value] = entry
    script_ids = {str(obj["id"]) for _, obj in scripts}
    for entry, plan in build_plans:
        for index, step in enumerate(plan.get("buildStep") or [], start=1):
            where = f"build plan {plan['name']!r}, step {step.get('serialNumber', index)}"
            try:
                script_id = script_id_of_step(step)
            except BundleError as exc:
                raise BundleError(f"bundle entry {entry!r}: {where}: {exc}", entry=entry) from None
            if script_id not in script_ids:
                raise BundleError(
                    f"bundle entry {entry!r}: {where} uses plan script {step['planScriptUri']!r}, "
                    "which is not in the bundle",
                    entry=entry,
                )
    plans = [plan for _, plan in build_plans]
    images = [image for _, image in golden_images]
    for entry, deployment_plan in deployment_plans:
        try:
            build_plan_reference(deployment_plan, plans)
            golden_image_reference(deployment_plan, images)
        except BundleError as exc:
            raise BundleError(f"bundle entry {entry!r}: {exc}", entry=entry) from None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _check_entry_name(name: str, raw_name: str | None = None) -> None:
    """Refuse names that could escape a directory or hide what they are, whatever the entry."""
    raw = name if raw_name is None else raw_name
    problem = None
    if not raw:
        problem = "has an empty name"
    elif "/" in raw or "\\" in raw:
        problem = "has a path in its name (only top-level entries are allowed)"
    elif ".." in raw:
        problem = "has '..' in its name"
    elif _CONTROL_RE.search(raw):
        problem = "has a control character in its name"
    elif raw != raw.strip():
        problem = "has leading or trailing spaces in its name"
    if problem:
        raise BundleError(f"bundle entry {raw!r} {problem}", entry=raw)


# --- manifest and sums -------------------------------------------------------------------------
def _parse_manifest(data: bytes) -> Manifest:
    text = _utf8(data, MANIFEST_ENTRY)
    fields: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        key, sep, value = line.partition(":")  # values may hold ':' (timestamps do)
        if not sep:
            raise BundleError(
                f"bundle entry {MANIFEST_ENTRY!r}: line {number} is not 'Key:Value'", entry=MANIFEST_ENTRY
            )
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("Artifact Name", "")
    if not name:
        raise BundleError(f"bundle entry {MANIFEST_ENTRY!r} has no 'Artifact Name'", entry=MANIFEST_ENTRY)
    read_only = fields.get("Read Only", "false").lower()
    if read_only not in ("true", "false"):
        raise BundleError(
            f"bundle entry {MANIFEST_ENTRY!r}: 'Read Only' is {fields['Read Only']!r}, not true or false",
            entry=MANIFEST_ENTRY,
        )
    return Manifest(
        name=name,
        description=fields.get("Description", ""),
        read_only=read_only == "true",
        timestamp=fields.get("Time Stamp", ""),
        artifact_type=fields.get("Artifact Type", "") or "USER",
    )


def _format_manifest(manifest: Manifest) -> bytes:
    """HPE's form: five ``Key:Value`` lines and no newline after the last one."""
    timestamp = manifest.timestamp or _now_timestamp()
    values = {
        "Artifact Name": manifest.name,
        "Description": manifest.description,
        "Read Only": "true" if manifest.read_only else "false",
        "Time Stamp": timestamp,
        "Artifact Type": manifest.artifact_type,
    }
    if not manifest.name.strip():
        raise BundleError("the bundle needs a name (MANIFEST.MF 'Artifact Name')", entry=MANIFEST_ENTRY)
    for key, value in values.items():
        if "\n" in value or "\r" in value:
            raise BundleError(f"MANIFEST.MF {key!r} cannot hold a line break", entry=MANIFEST_ENTRY)
    return "\n".join(f"{key}:{value}" for key, value in values.items()).encode()


def _now_timestamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _parse_sums(data: bytes) -> dict[str, str]:
    text = _utf8(data, SUMS_ENTRY)
    sums: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        name, sep, digest = line.rpartition("\t")
        if not sep or not _SHA256_RE.fullmatch(digest.strip()):
            raise BundleError(
                f"bundle entry {SUMS_ENTRY!r}: line {number} is not '<entry name>\\t<sha256>'", entry=SUMS_ENTRY
            )
        if name in sums:
            raise BundleError(f"bundle entry {SUMS_ENTRY!r} lists {name!r} twice", entry=SUMS_ENTRY)
        sums[name] = digest.strip().lower()
    if SUMS_ENTRY in sums:
        raise BundleError(f"bundle entry {SUMS_ENTRY!r} lists itself", entry=SUMS_ENTRY)
    return sums


def _utf8(data: bytes, entry: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"bundle entry {entry!r} is not UTF-8 text (byte {exc.start})", entry=entry) from None


def _parse_json(data: bytes, entry: str) -> Any:
    def refuse_constant(token: str) -> Any:
        raise ValueError(f"{token} is not valid JSON")

    text = _utf8(data, entry)
    try:
        return json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, huge integers, absurd nesting
        reason = str(exc) or type(exc).__name__
    raise BundleError(f"bundle entry {entry!r} is not valid JSON: {reason}", entry=entry)


# --- reading -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _reading(entry: str | None) -> Iterator[None]:
    """Turn zipfile's many ways of saying "corrupt" into a BundleError naming the entry."""
    try:
        yield
    except BundleError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        struct.error,
        NotImplementedError,
        UnicodeDecodeError,  # a local header's name that is not the UTF-8 it claims
    ) as exc:
        where = f"bundle entry {entry!r} is corrupt" if entry else "the bundle is not a valid zip archive"
        raise BundleError(f"{where}: {exc}", entry=entry) from None


def _open_archive(path: Path) -> tuple[IO[bytes], zipfile.ZipFile]:
    raw = path.open("rb")  # a missing file is the caller's OSError, not a bad bundle
    try:
        with _reading(None):
            try:
                zf = zipfile.ZipFile(raw)
            except (ValueError, OSError) as exc:  # bad offsets, undecodable names, seeks before 0
                raise zipfile.BadZipFile(str(exc)) from None
        _check_offsets(zf, os.fstat(raw.fileno()).st_size, None)
        return raw, zf
    except BaseException:
        raw.close()
        raise


def _check_offsets(zf: zipfile.ZipFile, size: int, payload: str | None) -> None:
    """Every entry's local header must lie inside the archive; zipfile would seek anywhere."""
    for info in zf.infolist():
        if not 0 <= info.header_offset < size:
            zf.close()
            where = f"bundle entry {payload!r}: nested entry" if payload else "bundle entry"
            raise BundleError(
                f"{where} {info.filename!r} is corrupt: it lies outside the archive", entry=payload or info.filename
            )


def _check_archive(infos: Sequence[zipfile.ZipInfo], max_entries: int) -> None:
    if len(infos) > max_entries:
        raise BundleError(f"the bundle has {len(infos)} entries, more than the limit of {max_entries}")
    for info in infos:
        _check_entry_name(info.filename, info.orig_filename)
    duplicates = [name for name, count in Counter(i.filename for i in infos).items() if count > 1]
    if duplicates:
        raise BundleError(f"bundle entry {duplicates[0]!r} appears more than once", entry=duplicates[0])
    for info in infos:
        _check_readable(info)


def _check_readable(info: zipfile.ZipInfo, within: str | None = None) -> None:
    """Neither encrypted nor compressed other than stored or deflated (HPE uses deflate)."""
    what = f"bundle entry {within!r}: nested entry {info.filename!r}" if within else f"bundle entry {info.filename!r}"
    if info.flag_bits & 0x1:  # APPNOTE 4.4.4 bit 0: encrypted
        raise BundleError(f"{what} is encrypted", entry=within or info.filename)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BundleError(
            f"{what} uses compression method {info.compress_type}; only stored and deflated are accepted",
            entry=within or info.filename,
        )


def _read_small(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A whole small entry, bounded twice: by the declared size and by what actually inflates."""
    name = info.filename
    _check_readable(info)
    if info.file_size > _BOMB_FLOOR and info.file_size > _BOMB_RATIO * max(info.compress_size, 1):
        raise BundleError(
            f"bundle entry {name!r} would inflate {info.compress_size} bytes to {info.file_size} (a zip bomb?)",
            entry=name,
        )
    too_big = f"bundle entry {name!r} is larger than the {limit}-byte limit for metadata"
    if info.file_size > limit:
        raise BundleError(too_big, entry=name)
    with _reading(name), zf.open(info) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise BundleError(too_big, entry=name)
    return data


def _hash_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    digest = hashlib.sha256()
    with _reading(info.filename), zf.open(info) as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sum(sums: Mapping[str, str], entry: str, digest: str) -> None:
    expected = sums.get(entry)
    if expected is None:
        raise BundleError(f"bundle entry {entry!r} is not listed in {SUMS_ENTRY}", entry=entry)
    if expected != digest:
        raise BundleError(f"bundle entry {entry!r} does not match its checksum in {SUMS_ENTRY}", entry=entry)


def _payload_candidates(image: Mapping[str, Any]) -> list[str]:
    name = str(image["name"])
    # HPE names the payload "<golden image name>.zip"; its bundle viewer looks the bare name up,
    # so a name that already ends in .zip is accepted as it is.
    return [f"{name}.zip", name] if name.endswith(".zip") else [f"{name}.zip"]


def read_bundle(path: Path, *, max_entries: int = 5000, max_json_bytes: int = 4 << 20) -> Bundle:
    """Read and validate an artifact bundle, extracting nothing to disk.

    :param max_entries: refuse archives with more entries than this.
    :param max_json_bytes: refuse a metadata entry (JSON, manifest, sums) larger than this.
    :raises BundleError: for anything malformed, hostile, inconsistent or failing its checksum;
        the message names the entry at fault.
    :raises OSError: when ``path`` cannot be opened.
    """
    raw, zf = _open_archive(path)
    with raw, zf:
        infos = zf.infolist()
        _check_archive(infos, max_entries)
        by_name = {info.filename: info for info in infos}
        if SUMS_ENTRY not in by_name:
            raise BundleError(f"the bundle has no {SUMS_ENTRY}", entry=SUMS_ENTRY)
        if MANIFEST_ENTRY not in by_name:
            raise BundleError(f"the bundle has no {MANIFEST_ENTRY}", entry=MANIFEST_ENTRY)
        sums = _parse_sums(_read_small(zf, by_name[SUMS_ENTRY], max_json_bytes))
        for listed in sums:
            if listed not in by_name:
                raise BundleError(f"{SUMS_ENTRY} lists {listed!r}, which is not in the bundle", entry=listed)

        manifest: Manifest | None = None
        found: dict[str, list[tuple[str, dict[str, Any]]]] = {kind: [] for kind in _KINDS}
        pending: list[zipfile.ZipInfo] = []  # *.zip entries, payloads if a golden image claims them
        for info in infos:
            name = info.filename
            if name == SUMS_ENTRY:
                continue
            match = _JSON_ENTRY_RE.fullmatch(name)
            if match is None and name != MANIFEST_ENTRY:
                if not name.endswith(".zip"):
                    raise BundleError(f"bundle entry {name!r} is not a known artifact entry", entry=name)
                pending.append(info)
                continue
            data = _read_small(zf, info, max_json_bytes)
            _check_sum(sums, name, hashlib.sha256(data).hexdigest())
            if match is None:
                manifest = _parse_manifest(data)
                continue
            obj = _parse_json(data, name)
            _check_object(match["kind"], obj, name)
            if _object_id(match["kind"], obj) != match["id"]:
                raise BundleError(
                    f"bundle entry {name!r} holds {_KINDS[match['kind']]} id {_object_id(match['kind'], obj)!r}, "
                    "not the id in its name",
                    entry=name,
                )
            found[match["kind"]].append((name, obj))
        assert manifest is not None  # MANIFEST.MF is present, checked above

        golden_images: list[BundledGoldenImage] = []
        claimed = {info.filename: info for info in pending}
        for entry, image in found["goldenimage"]:
            payload = next((claimed.pop(c) for c in _payload_candidates(image) if c in claimed), None)
            if payload is None:
                raise BundleError(
                    f"bundle entry {entry!r}: golden image {image['name']!r} has no payload entry "
                    f"{_payload_candidates(image)[0]!r}",
                    entry=entry,
                )
            if payload.filename not in sums:
                raise BundleError(f"bundle entry {payload.filename!r} is not listed in {SUMS_ENTRY}", entry=entry)
            golden_images.append(BundledGoldenImage(image, payload.filename, payload.file_size))
        if claimed:
            stray = next(iter(claimed))
            raise BundleError(f"bundle entry {stray!r} is not the payload of any golden image", entry=stray)
        _check_artifacts(found["planscript"], found["buildplan"], found["deploymentplan"], found["goldenimage"])
        # Last, being the slow part: a payload is a whole disk, streamed through sha256.
        for bundled in golden_images:
            _check_sum(sums, bundled.payload_entry, _hash_entry(zf, by_name[bundled.payload_entry]))

    return Bundle(
        manifest=manifest,
        plan_scripts=[obj for _, obj in found["planscript"]],
        build_plans=[obj for _, obj in found["buildplan"]],
        deployment_plans=[obj for _, obj in found["deploymentplan"]],
        golden_images=golden_images,
    )


# --- extracting a golden image -----------------------------------------------------------------
class _Window:
    """A read-only, seekable view of ``[start, start + size)`` of a file, for zipfile to read.

    With ``digest``, bytes read in order from the start are hashed as they pass, so extracting a
    stored payload reads it once; :meth:`finish_digest` hashes whatever was skipped or not read.
    """

    def __init__(self, file: IO[bytes], start: int, size: int, entry: str, digest: Any = None) -> None:
        self._file, self._start, self._size, self._entry = file, start, size, entry
        self._pos = 0
        self._digest = digest
        self._hashed = 0

    @property
    def size(self) -> int:
        return self._size

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "seek before the start of the payload")
        self._pos = base + offset
        return self._pos

    def read(self, n: int = -1) -> bytes:
        n = self._size - self._pos if n is None or n < 0 else min(n, self._size - self._pos)
        if n <= 0:
            return b""
        if n > _MAX_NESTED_READ:  # only a hostile central directory asks for this much at once
            raise BundleError(
                f"bundle entry {self._entry!r}: the nested zip's directory is too large", entry=self._entry
            )
        self._file.seek(self._start + self._pos)
        data = self._file.read(n)
        if self._digest is not None and self._pos <= self._hashed < self._pos + len(data):
            self._digest.update(data[self._hashed - self._pos :])
            self._hashed = self._pos + len(data)
        self._pos += len(data)
        return data

    def finish_digest(self) -> str:
        assert self._digest is not None
        if self._hashed < self._size:
            self._file.seek(self._start + self._hashed)
            left = self._size - self._hashed
            while left and (chunk := self._file.read(min(_CHUNK, left))):
                self._digest.update(chunk)
                left -= len(chunk)
            if left:
                raise BundleError(f"bundle entry {self._entry!r} is truncated", entry=self._entry)
            self._hashed = self._size
        return str(self._digest.hexdigest())


def _open_nested(window: _Window, entry: str) -> zipfile.ZipFile:
    try:
        nested = zipfile.ZipFile(window)
    except BundleError:
        raise
    except (ValueError, OSError) as exc:  # undecodable names, bad offsets
        raise BundleError(f"bundle entry {entry!r} is corrupt: {exc}", entry=entry) from None
    _check_offsets(nested, window.size, entry)
    return nested


def _stored_data_offset(raw: IO[bytes], info: zipfile.ZipInfo) -> int:
    """Where a stored entry's bytes begin: after its local header (APPNOTE 4.3.7)."""
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile("bad local file header")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return int(info.header_offset + 30 + name_len + extra_len)


def _disk_file_name(image_name: str, inner_name: str) -> str:
    """A safe file name for the extracted disk: the golden image's name, sanitized, plus a known
    disk suffix taken from the nested entry (the nested name itself is never used as a path)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", image_name).strip("._-")[:100] or "golden-image"
    suffix = Path(inner_name).suffix.lower()
    return stem + (suffix if suffix in _DISK_SUFFIXES else "")


def _extract_nested(nested: zipfile.ZipFile, image_name: str, payload: str, dest_dir: Path) -> tuple[Path, Path]:
    """Stream the nested zip's one disk file to a temporary file; return it and its final path."""

    def fail(reason: str) -> BundleError:
        return BundleError(f"bundle entry {payload!r}: {reason}", entry=payload)

    infos = nested.infolist()
    for info in infos:
        raw_name = info.orig_filename
        if not raw_name or "/" in raw_name or "\\" in raw_name or ".." in raw_name or _CONTROL_RE.search(raw_name):
            raise fail(f"the nested zip holds a file named {raw_name!r}")
    if len(infos) != 1:
        raise fail(f"the nested zip holds {len(infos)} files, not one disk file")
    [inner] = infos
    _check_readable(inner, within=payload)
    target = dest_dir / _disk_file_name(image_name, inner.filename)
    if target.exists():
        raise FileExistsError(errno.EEXIST, "the extracted disk file already exists", str(target))
    if shutil.disk_usage(dest_dir).free < inner.file_size:
        raise OSError(errno.ENOSPC, f"not enough space for the {inner.file_size}-byte disk file", str(dest_dir))
    fd, name = tempfile.mkstemp(dir=dest_dir, prefix=f".{target.name}.", suffix=".part")
    part = Path(name)
    try:
        with _reading(payload), nested.open(inner) as source, os.fdopen(fd, "wb") as out:
            left = inner.file_size  # bounded by the declared size, whatever the stream holds
            while chunk := source.read(min(_CHUNK, left + 1)):
                if len(chunk) > left:
                    raise fail("the disk file is larger than its declared size")
                out.write(chunk)
                left -= len(chunk)
            if left:
                raise fail("the disk file is shorter than its declared size")
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return part, target


def extract_golden_image(path: Path, image: BundledGoldenImage, dest_dir: Path) -> Path:
    """Stream a bundled golden image's disk file into ``dest_dir`` and return its path.

    The file is named after the golden image (sanitized), plus the disk's suffix (``.qcow2``,
    ``.raw``...) when it is a known one; names inside the nested zip are only checked, never
    used. The payload's sha256 is checked against ``SHA256SUM`` as it streams, and the disk file
    is bounded by its declared size. On any failure nothing is left in ``dest_dir``.

    :raises BundleError: the payload is missing, altered, corrupt, or not one plain disk file.
    :raises FileExistsError: the target file already exists.
    :raises OSError: ``dest_dir`` lacks space for the declared size, or another I/O failure.
    """
    entry = image.payload_entry
    _check_entry_name(entry)
    image_name = str(image.metadata.get("name") or entry.removesuffix(".zip"))
    raw, zf = _open_archive(path)
    with raw, zf:
        infos = zf.infolist()
        matches = [info for info in infos if info.filename == entry]
        if len(matches) != 1 or matches[0].file_size != image.payload_size:
            raise BundleError(
                f"bundle entry {entry!r} is missing or has changed since the bundle was read", entry=entry
            )
        [info] = matches
        _check_readable(info)
        sums_infos = [i for i in infos if i.filename == SUMS_ENTRY]
        if len(sums_infos) != 1:
            raise BundleError(f"the bundle has no single {SUMS_ENTRY}", entry=SUMS_ENTRY)
        sums = _parse_sums(_read_small(zf, sums_infos[0], 4 << 20))
        with _reading(entry):
            zf.open(info).close()  # zipfile checks the local header against the directory
            if info.compress_type == zipfile.ZIP_STORED:
                # One pass: zipfile reads the nested zip in place, hashed as the disk file streams.
                window = _Window(raw, _stored_data_offset(raw, info), info.file_size, entry, hashlib.sha256())
                with _open_nested(window, entry) as nested:
                    part, target = _extract_nested(nested, image_name, entry, dest_dir)
                try:
                    _check_sum(sums, entry, window.finish_digest())
                except BaseException:
                    part.unlink(missing_ok=True)
                    raise
            else:
                part, target = _extract_spooled(zf, info, sums, image_name, dest_dir)
    return _publish(part, target)


def _extract_spooled(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, sums: Mapping[str, str], image_name: str, dest_dir: Path
) -> tuple[Path, Path]:
    """A deflated payload cannot be read at random: spool it, checking its hash, then extract."""
    fd, name = tempfile.mkstemp(dir=dest_dir, prefix=".bundle-payload.", suffix=".spool")
    spool = Path(name)
    try:
        digest = hashlib.sha256()
        with zf.open(info) as source, os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        _check_sum(sums, info.filename, digest.hexdigest())
        with (
            spool.open("rb") as spooled,
            _open_nested(_Window(spooled, 0, info.file_size, info.filename), info.filename) as nested,
        ):
            return _extract_nested(nested, image_name, info.filename, dest_dir)
    finally:
        spool.unlink(missing_ok=True)


def _publish(part: Path, target: Path) -> Path:
    """Give the finished temporary file its real name, never replacing an existing file."""
    try:
        if target.exists():
            raise FileExistsError(errno.EEXIST, "the extracted disk file already exists", str(target))
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return target


# --- writing -----------------------------------------------------------------------------------
def _dos_date_time(date_time: tuple[int, int, int, int, int, int]) -> tuple[int, int]:
    year, month, day, hour, minute, second = date_time
    return (hour << 11) | (minute << 5) | (second // 2), ((year - 1980) << 9) | (month << 5) | day


def _stored_zip_frame(
    name: str, size: int, crc: int, date_time: tuple[int, int, int, int, int, int], *, zip64: bool
) -> tuple[bytes, bytes]:
    """Head and tail of a one-entry stored zip; the entry's ``size`` bytes go between them.

    Written by hand because zipfile, writing into another zip's entry (not seekable), would add
    a data descriptor to a stored entry, which Java's ZipInputStream refuses. APPNOTE 6.3:
    local header 4.3.7, central directory 4.3.12, zip64 records 4.3.14/4.3.15, end record 4.3.16.
    """
    encoded = name.encode()
    flags = 0x800 if not name.isascii() else 0  # bit 11: the name is UTF-8
    version = 45 if zip64 else 20  # 4.5 is the version that knows zip64
    dos_time, dos_date = _dos_date_time(date_time)
    field = 0xFFFFFFFF if zip64 else size
    extra = struct.pack("<HHQQ", 0x0001, 16, size, size) if zip64 else b""
    head = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, version, flags, 0, dos_time, dos_date, crc, field, field, len(encoded), len(extra)
    )
    head += encoded + extra
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50,
        (3 << 8) | version,  # made by: Unix
        version,
        flags,
        0,
        dos_time,
        dos_date,
        crc,
        field,
        field,
        len(encoded),
        len(extra),
        0,
        0,
        0,
        0o100644 << 16,  # a regular file, rw-r--r--
        0,  # the local header is at offset 0
    )
    central += encoded + extra
    cd_offset = len(head) + size
    tail = central
    if zip64:
        tail += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, (3 << 8) | 45, 45, 0, 0, 1, 1, len(central), cd_offset)
        tail += struct.pack("<IIQI", 0x07064B50, 0, cd_offset + len(central), 1)
    tail += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), 0xFFFFFFFF if zip64 else cd_offset, 0)
    return head, tail


def _file_crc(path: Path) -> tuple[int, int]:
    crc, size = 0, 0
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return crc, size


def _zip_date_time(timestamp: float) -> tuple[int, int, int, int, int, int]:
    date_time = time.localtime(timestamp)[:6]
    return date_time if date_time[0] >= 1980 else (1980, 1, 1, 0, 0, 0)


def _write_payload(zf: zipfile.ZipFile, entry: str, image_name: str, disk: Path) -> str:
    """Write ``<name>.zip`` holding the disk file, stored at both levels; return its sha256."""
    stat = disk.stat()
    inner_name = f"{image_name}{disk.suffix}" if disk.suffix.lower() in _DISK_SUFFIXES else image_name
    crc, size = _file_crc(disk)
    date_time = _zip_date_time(stat.st_mtime)
    zip64 = size > zipfile.ZIP64_LIMIT - (1 << 20)
    head, tail = _stored_zip_frame(inner_name, size, crc, date_time, zip64=zip64)
    info = zipfile.ZipInfo(entry, _zip_date_time(time.time()))
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o100644 << 16
    info.file_size = len(head) + size + len(tail)  # lets zipfile choose zip64 for the outer entry
    digest = hashlib.sha256(head)
    copied, check = 0, 0
    with zf.open(info, "w") as out, disk.open("rb") as source:
        out.write(head)
        while chunk := source.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            check = zlib.crc32(chunk, check)
            copied += len(chunk)
        out.write(tail)
        digest.update(tail)
    if (copied, check) != (size, crc):
        raise BundleError(f"golden image file {disk.name!r} changed while the bundle was written", entry=entry)
    return digest.hexdigest()


def write_bundle(
    path: Path,
    manifest: Manifest,
    *,
    plan_scripts: Sequence[Mapping[str, Any]] = (),
    build_plans: Sequence[Mapping[str, Any]] = (),
    deployment_plans: Sequence[Mapping[str, Any]] = (),
    golden_images: Sequence[tuple[Mapping[str, Any], Path]] = (),
) -> None:
    """Write an artifact bundle in HPE's layout, atomically.

    Objects must already be in HPE's shape (a deployment plan's ``oeBuildPlanURI`` holding its
    build plan's name, build steps naming ``/rest/plan-scripts/<id>``); they are only serialised.
    Golden images are ``(metadata, disk file)`` pairs; each disk file goes, stored, into a nested
    zip ``<name>.zip``. An empty ``manifest.timestamp`` is written as the current UTC time.

    :raises BundleError: the objects would make a bundle :func:`read_bundle` refuses.
    :raises OSError: writing failed; no partial bundle is left behind.
    """
    groups = {
        "planscript": [dict(obj) for obj in plan_scripts],
        "buildplan": [dict(obj) for obj in build_plans],
        "deploymentplan": [dict(obj) for obj in deployment_plans],
        "goldenimage": [dict(meta) for meta, _ in golden_images],
    }
    named: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for kind, objects in groups.items():
        named[kind] = []
        for index, obj in enumerate(objects, start=1):
            entry = f"{_object_id(kind, obj)}_{kind}.json"
            _check_object(kind, obj, entry, where=f"{_KINDS[kind]} #{index} ({obj.get('name')!r})")
            named[kind].append((entry, obj))
    payloads = []
    for meta, (_, disk) in zip(groups["goldenimage"], golden_images, strict=True):
        payload = _payload_candidates(meta)[0]
        _check_entry_name(payload)
        if not disk.is_file():
            raise BundleError(f"golden image {meta['name']!r}: {disk.name!r} is not a file", entry=payload)
        payloads.append((payload, str(meta["name"]), disk))
    _check_artifacts(named["planscript"], named["buildplan"], named["deploymentplan"], named["goldenimage"])
    manifest_bytes = _format_manifest(manifest)

    part = path.with_suffix(".part")
    date_time = _zip_date_time(time.time())
    sums: list[tuple[str, str]] = []

    def add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, date_time)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o100644 << 16
        zf.writestr(info, data)
        sums.append((name, hashlib.sha256(data).hexdigest()))

    try:
        with part.open("wb") as raw:
            with zipfile.ZipFile(raw, "w") as zf:
                for kind in ("planscript", "buildplan", "deploymentplan", "goldenimage"):
                    for name, artifact in named[kind]:
                        try:
                            data = json.dumps(artifact, indent=2, sort_keys=False, allow_nan=False).encode()
                        except (TypeError, ValueError) as exc:
                            raise BundleError(f"bundle entry {name!r} cannot be written as JSON: {exc}") from None
                        add(zf, name, data)
                for payload, image_name, disk in payloads:
                    sums.append((payload, _write_payload(zf, payload, image_name, disk)))
                add(zf, MANIFEST_ENTRY, manifest_bytes)
                info = zipfile.ZipInfo(SUMS_ENTRY, date_time)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o100644 << 16
                zf.writestr(info, "".join(f"{name}\t{digest}\n" for name, digest in sums).encode())
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; some filesystems cannot fsync a directory, which is fine."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
