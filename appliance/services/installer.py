"""Installer deploys, the appliance's side: the installer's boot script, its answer files, and the
callbacks it sends (docs/profiles.md, "Installer deploys").

An installer deploy opens an :class:`~appliance.models.InstallerSession` for the server. While the
server is deploying with a session open, its iPXE script boots the installer media's kernel with a
fresh token in the answer-file URL (``/installer/<token>/ks.cfg``; every script fetch replaces the
token, as boot tokens are). The installer fetches its answer file with that token, which is
rendered then, from the server profile's attribute values, with the same token as its callback's
bearer token. The answer file's callbacks (``POST /installer/events``, ``{"event": "start" |
"success" | "failure"}``) are recorded on the session; the deploy task reads them. The session
ends with the deploy, and its token with it.
"""

from __future__ import annotations

import re
import secrets as random_tokens
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.config import Settings
from appliance.errors import ApplianceError, Conflict, InvalidInput, NotFound
from appliance.models import DeploymentPlan, InstallerSession, ServerHardware, ServerProfile
from appliance.secretbox import SecretBox
from appliance.services.build_plans import definitions
from appliance.services.netboot import hash_token
from appliance.services.personalize import load_deployment_plan, resolve_deployment_plan
from appliance.services.server_profiles import plain_values
from appliance.states import ProvisionState
from plans.attributes import AttributeType
from plans.installer import INSTALLER_FILES, InstallerSpec, answer_args, parse_installer
from plans.render import KINDS, Rendered, RenderError, render

EVENTS = ("start", "success", "failure")
MAX_DETAIL = 2000
_NIC_NAME = re.compile(r"NIC([1-9][0-9]{0,2})")
INSTALLING = (ProvisionState.DEPLOYING, ProvisionState.DEPLOY_WAIT)


class InstallerTokenInvalid(ApplianceError):
    """An answer-file request or callback without a live installer token."""

    msg_fmt = "The installer token is missing, expired or of a deploy that has ended."
    error_code = "INSTALLER_TOKEN_INVALID"
    http_status = 401
    default_actions = ("Deploy the server again: its installer boot script carries a new token.",)


class InstallerFailed(ApplianceError):
    msg_fmt = "{name}: {reason}"
    error_code = "INSTALLER_FAILED"
    http_status = 409
    default_actions = ("Read the server's last error and its console, fix the cause, then deploy again.",)


def installers_dir(settings: Settings) -> Path:
    """Where installer media live: ``<media>/vmlinuz`` and ``<media>/initrd.img``."""
    return settings.home / "boot" / "installers"


def missing_media(settings: Settings, spec: InstallerSpec) -> list[str]:
    """The installer files the media directory lacks (empty when it can boot)."""
    directory = installers_dir(settings) / spec.media
    return [name for name in INSTALLER_FILES if not (directory / name).is_file()]


def answer_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/installer/{token}/"


def callback_url(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/installer/events"


@dataclass(frozen=True)
class InstallerBoot:
    """What the installer boot script holds."""

    kernel_url: str
    initrd_url: str
    kernel_args: list[str]
    spec: InstallerSpec


def render_attributes(names_and_types: list[tuple[str, AttributeType]], values: dict[str, Any],
                      macs: list[str]) -> dict[str, Any]:
    """The checked attribute values in the shape the answer-file templates take: every non-NIC value by
    its name, and the NIC attributes as ``NIC1``... (a build plan's ``NIC<n>`` keeps its number, the
    others follow in declaration order), each with ``dns`` from ``dns1``/``dns2`` and, when it names
    no MAC, the server's MAC of the same position."""
    out: dict[str, Any] = {}
    nics = [(name, values.get(name) or {}) for name, kind in names_and_types if kind is AttributeType.NIC]
    taken = {int(m.group(1)) for name, _ in nics if (m := _NIC_NAME.fullmatch(name))}
    following = iter(n for n in range(1, 1000) if n not in taken)
    for name, kind in names_and_types:
        if kind is not AttributeType.NIC and values.get(name) not in (None, ""):
            out[name] = values[name]
    for position, (name, fields) in enumerate(nics):
        match = _NIC_NAME.fullmatch(name)
        number = int(match.group(1)) if match else next(following)
        nic = dict(fields)
        dns = [str(nic.pop(key)) for key in ("dns1", "dns2") if nic.get(key)]
        if dns:
            nic["dns"] = dns
        if not nic.get("mac") and position < len(macs):
            nic["mac"] = macs[position]
        if nic.get("mac"):
            out[f"NIC{number}"] = nic
    return out


def installer_plan(db: Session, profile_id: str) -> tuple[ServerProfile, DeploymentPlan, InstallerSpec]:
    """The profile, its deployment plan and the plan's installer.

    :raises InstallerFailed: the profile or plan is gone, or the plan runs no installer.
    """
    profile = db.get(ServerProfile, profile_id)
    plan_id = profile.deployment_plan_id if profile is not None else None
    plan = db.get(DeploymentPlan, plan_id) if plan_id else None
    if profile is None or plan is None or not plan.installer:
        raise InstallerFailed(name=profile.name if profile else profile_id,
                              reason="the profile's deployment plan runs no installer")
    return profile, plan, parse_installer(plan.installer)


def installer_boot(db: Session, server: ServerHardware, base_url: str) -> InstallerBoot | None:
    """The installer boot for ``server`` when it is deploying with a session open (a new token each
    time), else None."""
    row = db.get(InstallerSession, server.id)
    if row is None or row.finished is not None or server.provision_state not in INSTALLING:
        return None
    _, _, spec = installer_plan(db, row.profile_id)
    token = random_tokens.token_urlsafe(24)
    row.token_hash = hash_token(token)
    db.flush()
    base = base_url.rstrip("/")
    media = f"{base}/boot/installers/{spec.media}"
    return InstallerBoot(f"{media}/vmlinuz", f"{media}/initrd.img",
                         [*spec.kernel_args, *answer_args(spec.kind, answer_url(base, token))], spec)


class InstallerService:
    def __init__(self, db: Session, secrets: SecretBox, settings: Settings, clock: Clock = system_clock) -> None:
        self.db = db
        self.secrets = secrets
        self.settings = settings
        self.clock = clock

    # --- the deploy's side ---------------------------------------------------------------------
    def open(self, server_id: str, profile_id: str) -> InstallerSession:
        """A new session for the server's deploy; an earlier one (and its token) ends."""
        self.close(server_id)
        row = InstallerSession(server_hardware_id=server_id, profile_id=profile_id, created=self.clock())
        self.db.add(row)
        self.db.flush()
        return row

    def close(self, server_id: str) -> None:
        row = self.db.get(InstallerSession, server_id)
        if row is not None:
            self.db.delete(row)
            self.db.flush()

    def session(self, server_id: str) -> InstallerSession | None:
        return self.db.get(InstallerSession, server_id)

    def spec(self, profile_id: str) -> tuple[ServerProfile, InstallerSpec]:
        """The profile and its deployment plan's installer.

        :raises InstallerFailed: the profile or plan is gone, or the plan runs no installer.
        """
        profile, _, spec = installer_plan(self.db, profile_id)
        return profile, spec

    def check(self, profile_id: str) -> InstallerSpec:
        """Everything an installer deploy needs before the server is booted: the media's files and an
        answer file that renders with the profile's values.

        :raises InstallerFailed: naming what is missing or which value is bad.
        """
        profile, spec = self.spec(profile_id)
        missing = missing_media(self.settings, spec)
        if missing:
            raise InstallerFailed(name=profile.name, reason=f"the installer media {spec.media} lacks "
                                  f"{', '.join(missing)} in {installers_dir(self.settings) / spec.media}")
        self.render(profile_id, "http://appliance.invalid/", "check")
        return spec

    def render(self, profile_id: str, base_url: str, token: str) -> Rendered:
        """The profile's answer files, calling back to ``base_url`` with ``token``.

        :raises InstallerFailed: an attribute the answer file cannot take (the renderer's message).
        """
        profile, plan, spec = installer_plan(self.db, profile_id)
        resolved = resolve_deployment_plan(self.db, self.secrets, plan.id, plain_values(profile),
                                           profile.sealed_attributes)
        _, build_plan = load_deployment_plan(self.db, plan.id)
        types = [(a.name, a.type) for a in definitions(build_plan)]
        server = self.db.get(ServerHardware, profile.server_hardware_id) if profile.server_hardware_id else None
        macs = [m.lower() for m in (server.mac_addresses or [])] if server is not None else []
        attributes = render_attributes(types, resolved.values, macs)
        try:
            return render(spec.kind, os=spec.os, version=spec.version, arch=spec.arch, attributes=attributes,
                          callback_url=callback_url(base_url), deploy_token=token)
        except RenderError as exc:
            raise InstallerFailed(name=profile.name, reason=f"the {spec.kind} answer file cannot be rendered: {exc}") \
                from None

    # --- the installer's side (boot listener) --------------------------------------------------
    def redeem(self, token: str) -> InstallerSession:
        """The live session ``token`` belongs to.

        :raises InstallerTokenInvalid: no such token, or its deploy has ended.
        """
        query = select(InstallerSession).where(InstallerSession.token_hash == hash_token(token))
        row = self.db.scalars(query).first() if token else None
        if row is None:
            raise InstallerTokenInvalid()
        return row

    def answer_file(self, token: str, name: str, base_url: str) -> tuple[InstallerSession, str]:
        """The answer file ``name`` of the deploy ``token`` belongs to (marks the session fetched).

        :raises InstallerTokenInvalid: see :meth:`redeem`.
        :raises NotFound: the installer's kind has no file of that name.
        """
        row = self.redeem(token)
        _, spec = self.spec(row.profile_id)
        if name not in KINDS[spec.kind].files:
            raise NotFound(kind="answer file", ident=name)
        files = self.render(row.profile_id, base_url, token).files
        if row.fetched is None:
            row.fetched = self.clock()
        return row, files[name]

    def report(self, token: str, body: dict[str, Any]) -> InstallerSession:
        """Record the installer's callback. ``start`` may come again (an installer retried); a second
        outcome must agree with the first.

        :raises InvalidInput: not one of :data:`EVENTS`, or a detail that is not short text.
        :raises Conflict: success after failure, or the other way round.
        """
        row = self.redeem(token)
        event, detail = body.get("event"), body.get("detail")
        if event not in EVENTS:
            raise InvalidInput(f"event must be one of {', '.join(EVENTS)}.")
        if detail is not None and (not isinstance(detail, str) or len(detail) > MAX_DETAIL):
            raise InvalidInput(f"detail must be a string of at most {MAX_DETAIL} characters.")
        now = self.clock()
        if event == "start":
            row.started = row.started or now
        elif row.outcome is not None and row.outcome != event:
            raise Conflict(reason=f"the installer already reported {row.outcome}.")
        else:
            row.outcome, row.finished = event, row.finished or now
            row.started = row.started or now
        if detail:
            row.detail = detail
        return row
