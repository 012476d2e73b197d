"""Installer deploys: what a deployment plan says about the installer it boots, and how the
installer is told where its answer file is.

A deployment plan without a golden image may name an installer instead (Ingot's addition to the
Image Streamer shape, ``installer`` on ``/rest/deployment-plans``)::

    {"kind": "kickstart", "os": "rhel", "version": "9", "arch": "x86_64",
     "media": "rhel-9.4", "kernelArgs": "inst.repo=http://mirror.example/rhel/9.4/BaseOS/x86_64/os"}

``kind``/``os``/``version``/``arch`` choose the answer-file template (:mod:`plans.render`);
``media`` names a directory of the appliance's ``boot/installers`` holding the installer's
``vmlinuz`` and ``initrd.img``; ``kernelArgs`` are passed to that kernel before the argument
that points it at its answer file (:func:`answer_args`). Pure data and checks: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["ARCHES", "BOOTABLE_KINDS", "INSTALLER_FILES", "MEDIA_NAME", "InstallerSpec", "InstallerSpecError",
           "answer_args", "installer_summary", "parse_installer"]

INSTALLER_FILES = ("vmlinuz", "initrd.img")
"""What an installer media directory must hold."""

MEDIA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The characters an iPXE script can carry in a kernel argument (pxe.ipxe checks again).
_ARG_RE = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!&'()*+,;=%-]+")
_MAX_ARGS = 2048

# How each kind's installer finds its answer file on the kernel command line. ``{url}`` is the
# directory the answer files are served from, with a trailing slash.
_ANSWER_ARGS: dict[str, tuple[str, ...]] = {
    "kickstart": ("inst.ks={url}ks.cfg",),  # anaconda, RHEL 7 and later
    "preseed": ("auto=true", "priority=critical", "url={url}preseed.cfg"),  # debian-installer
    "autoinstall": ("autoinstall", "ds=nocloud-net;s={url}"),  # subiquity reads user-data, meta-data there
}

BOOTABLE_KINDS = tuple(_ANSWER_ARGS)
"""The answer-file kinds whose installer Ingot boots (unattend is rendered only)."""
ARCHES = ("x86_64", "aarch64")


class InstallerSpecError(ValueError):
    """An ``installer`` object that cannot be used; ``field`` names the offending member."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"installer.{field}: {message}")
        self.field = f"installer.{field}"
        self.message = message


@dataclass(frozen=True)
class InstallerSpec:
    kind: str
    os: str | None
    version: str | None
    arch: str
    media: str
    kernel_args: tuple[str, ...]

    def public(self) -> dict[str, Any]:
        return {"kind": self.kind, "os": self.os, "version": self.version, "arch": self.arch, "media": self.media,
                "kernelArgs": " ".join(self.kernel_args)}


def _text(raw: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise InstallerSpecError(key, "is required")
        return None
    if not isinstance(value, str):
        raise InstallerSpecError(key, "must be a string")
    return value.strip()


def parse_installer(raw: object) -> InstallerSpec:
    """Check an ``installer`` object as a client sent it (or as it was stored).

    :raises InstallerSpecError: naming the first bad member.
    """
    from plans.render import KINDS, RenderError, check_target  # Jinja2 only where it is needed

    if not isinstance(raw, dict):
        raise InstallerSpecError("kind", "installer must be an object with kind, media and optionally os, version, "
                                         "arch and kernelArgs")
    kind = _text(raw, "kind", required=True) or ""
    if kind not in KINDS:
        raise InstallerSpecError("kind", f"unknown kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    if kind not in _ANSWER_ARGS:
        raise InstallerSpecError(
            "kind", f"{kind} answer files are rendered (`ingot render {kind}`), but Ingot does not boot that "
                    "installer: Windows Setup needs wimboot and a share with its installation media")
    os_name, version = _text(raw, "os"), _text(raw, "version")
    arch = _text(raw, "arch") or "x86_64"
    if version is not None and os_name is None:
        raise InstallerSpecError("version", "a version needs an os")
    try:
        check_target(kind, os=os_name, version=version, arch=arch)
    except RenderError as exc:
        field = "arch" if "arch" in str(exc) else "version" if version and "version" in str(exc) else "os"
        raise InstallerSpecError(field, str(exc)) from None
    media = _text(raw, "media", required=True) or ""
    if not MEDIA_NAME.fullmatch(media):
        raise InstallerSpecError("media", "must be a directory name under boot/installers: letters, digits, '.', "
                                          "'_' and '-', 64 at most, not starting with a punctuation mark")
    args_text = raw.get("kernelArgs") or ""
    if not isinstance(args_text, str) or len(args_text) > _MAX_ARGS:
        raise InstallerSpecError("kernelArgs", f"must be a string of at most {_MAX_ARGS} characters")
    args = tuple(args_text.split())
    bad = [arg for arg in args if not _ARG_RE.fullmatch(arg) or "${" in arg]
    if bad:
        raise InstallerSpecError("kernelArgs", f"{bad[0]!r} cannot be passed through an iPXE script (no quotes, "
                                               "'$' or non-ASCII characters)")
    return InstallerSpec(kind, os_name.lower() if os_name else None, version.lower() if version else None,
                         arch.lower(), media, args)


def installer_summary(stored: dict[str, Any] | None) -> str | None:
    """One line for people: ``kickstart (rhel 9 x86_64) from media rhel-9.4``; None for no installer."""
    if not stored:
        return None
    target = " ".join(str(stored[key]) for key in ("os", "version", "arch") if stored.get(key))
    return f"{stored['kind']} ({target}) from media {stored['media']}"


def answer_args(kind: str, answer_url: str) -> list[str]:
    """The kernel arguments that point ``kind``'s installer at its answer files under ``answer_url``."""
    url = answer_url if answer_url.endswith("/") else answer_url + "/"
    return [arg.format(url=url) for arg in _ANSWER_ARGS[kind]]
