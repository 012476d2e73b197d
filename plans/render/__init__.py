"""Answer-file renderers: kickstart, preseed, Ubuntu autoinstall + NoCloud, Windows unattend.xml.

One sandboxed Jinja2 environment renders templates shipped in ``plans/render/templates``.
Attributes are checked and normalised first (:mod:`plans.render.context`), then handed to the
templates as data: a value is never parsed as template code, and every template quotes each
value for where it lands (``shquote`` for shell lines, ``json`` for YAML, XML escaping for
unattend.xml).

Templates are chosen most specific first, per file of the kind::

    templates/<kind>/<os>-<version>-<arch>/<file>.j2
    templates/<kind>/<os>/<file>.j2
    templates/<kind>/default/<file>.j2

Every template reports back to ``callback_url`` with ``Authorization: Bearer <deploy_token>``
and a JSON body ``{"event": "start" | "success" | "failure"}``.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from plans.render.context import RenderError, build_context
from plans.render.kickstart_check import check_kickstart, syntax_for
from plans.render.passwords import sha512_crypt, windows_password

__all__ = ["KINDS", "Kind", "RenderError", "Rendered", "check_target", "environment", "render", "sha512_crypt",
           "windows_password"]


@dataclass(frozen=True)
class Kind:
    """An answer-file format: the fixed names of the files it produces and the OSes it serves."""

    files: tuple[str, ...]
    oses: frozenset[str]
    arches: frozenset[str] = frozenset({"x86_64", "aarch64"})
    versions: frozenset[str] | None = None  # None: any version token


KINDS: dict[str, Kind] = {
    "kickstart": Kind(("ks.cfg",), frozenset({"rhel", "centos", "rocky", "almalinux", "oracle", "fedora"})),
    "preseed": Kind(("preseed.cfg",), frozenset({"debian"})),
    "autoinstall": Kind(("user-data", "meta-data", "network-config"), frozenset({"ubuntu"})),
    "unattend": Kind(("unattend.xml",), frozenset({"windows"}), frozenset({"x86_64", "amd64"}),
                     frozenset({"2016", "2019", "2022", "2025"})),
}

_TOKEN_RE = re.compile(r"[a-z0-9][a-z0-9._]{0,31}")


@dataclass(frozen=True)
class Rendered:
    """Rendered answer files by fixed file name, and the template directory the first came from."""

    files: dict[str, str]
    template: str


def _json(value: Any) -> str:
    """A YAML/JSON-safe scalar or flow collection: a value can never add keys or lines."""
    return json.dumps(value, ensure_ascii=False)


def _pwsh_quote(value: Any) -> str:
    """A PowerShell single-quoted string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def _pwsh_encode(script: Any) -> str:
    """The argument for ``powershell.exe -EncodedCommand``: base64 of UTF-16LE."""
    return base64.b64encode(str(script).encode("utf-16-le")).decode("ascii")


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith(".xml.j2")


_ENV = ImmutableSandboxedEnvironment(
    loader=jinja2.PackageLoader("plans.render", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=_autoescape,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENV.filters.update(shquote=lambda value: shlex.quote(str(value)), json=_json, pwsh_quote=_pwsh_quote,
                    pwsh_encode=_pwsh_encode, windows_password=windows_password)


def environment() -> ImmutableSandboxedEnvironment:
    """The one sandboxed environment every answer file is rendered in."""
    return _ENV


def _token(name: str, value: str) -> str:
    value = value.strip().lower()
    if not _TOKEN_RE.fullmatch(value):
        raise RenderError(f"{name} must be a short token like 'rhel' or '9.4', not {value!r}")
    return value


def _candidates(kind: str, spec: Kind, os: str | None, version: str | None, arch: str) -> list[str]:
    arch = _token("arch", arch)
    if arch not in spec.arches:
        raise RenderError(f"{kind} does not support arch {arch!r}; supported: {', '.join(sorted(spec.arches))}")
    if os is None:
        return [f"{kind}/default"]
    os = _token("os", os)
    if os not in spec.oses:
        raise RenderError(f"{kind} has no templates for os {os!r}; known: {', '.join(sorted(spec.oses))}")
    names = [f"{kind}/{os}", f"{kind}/default"]
    if version is not None:
        version = _token("version", version)
        if spec.versions is not None and version not in spec.versions:
            raise RenderError(f"{kind} does not support {os} {version}; supported: "
                              f"{', '.join(sorted(spec.versions))}")
        names.insert(0, f"{kind}/{os}-{version}-{arch}")
    return names


def check_target(kind: str, *, os: str | None = None, version: str | None = None, arch: str = "x86_64") -> None:
    """Raise :class:`RenderError` unless *kind* has templates for this os/version/arch."""
    spec = KINDS.get(kind)
    if spec is None:
        raise RenderError(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    _candidates(kind, spec, os, version, arch)


def _select(candidates: list[str], file: str) -> jinja2.Template:
    try:
        return _ENV.select_template([f"{name}/{file}.j2" for name in candidates])
    except jinja2.TemplatesNotFound:
        raise RenderError(f"no template for {file}; looked for {', '.join(candidates)}") from None


def render(kind: str, *, os: str | None = None, version: str | None = None, arch: str = "x86_64",
           attributes: dict[str, Any], callback_url: str, deploy_token: str) -> Rendered:
    """Render the answer file(s) of *kind* for one node.

    Raises :class:`RenderError` for an unknown kind/os/version/arch, a missing or malformed
    attribute, or a template that fails.
    """
    spec = KINDS.get(kind)
    if spec is None:
        raise RenderError(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    candidates = _candidates(kind, spec, os, version, arch)
    context = build_context(attributes, callback_url, deploy_token)
    if kind == "unattend" and not context.admin_password:
        raise RenderError("missing attribute 'AdminPassword' (a clear-text password; Windows cannot use a crypt hash)")
    if kind == "unattend" and len(context.hostname) > 15:
        raise RenderError(f"attribute 'Hostname' is too long for a Windows computer name (15 at most): "
                          f"{context.hostname!r}")
    variables = context.as_dict() | {"arch": "amd64" if kind == "unattend" else arch}
    files: dict[str, str] = {}
    chosen = ""
    for file in spec.files:
        template = _select(candidates, file)
        try:
            files[file] = template.render(variables)
        except jinja2.UndefinedError as exc:
            raise RenderError(f"template {template.name} needs a value it was not given: {exc.message}") from None
        except SecurityError as exc:
            raise RenderError(f"template {template.name} did something the sandbox forbids: {exc}") from None
        chosen = chosen or (template.name or "").rsplit("/", 1)[0]
    if kind == "kickstart":
        check_kickstart(files["ks.cfg"], syntax_for(version, chosen))
    return Rendered(files=files, template=chosen)
