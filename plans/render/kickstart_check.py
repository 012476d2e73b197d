"""A rendered kickstart is parsed by pykickstart (the parser anaconda itself uses) before anyone
gets it: a template change or an attribute value that breaks the syntax fails the render with
pykickstart's own message, instead of an installer stopping at its first screen."""

from __future__ import annotations

from pykickstart.errors import KickstartError
from pykickstart.parser import KickstartParser
from pykickstart.version import makeVersion, versionMap

from plans.render.context import RenderError

DEFAULT_SYNTAX = "RHEL9"


def syntax_for(version: str | None, template: str) -> str:
    """pykickstart's syntax version: the RHEL major release asked for (``8.10`` → RHEL8), else
    the one the chosen template is written for."""
    major = (version or "").split(".", 1)[0].strip()
    if major.isdigit() and f"RHEL{int(major)}" in versionMap:
        return f"RHEL{int(major)}"
    return "RHEL7" if "rhel-7" in template else DEFAULT_SYNTAX


def check_kickstart(text: str, syntax: str) -> None:
    """Raise RenderError, with pykickstart's message, unless ``text`` parses as ``syntax``."""
    parser = KickstartParser(makeVersion(syntax), errorsAreFatal=True)
    try:
        parser.readKickstartFromString(text)
    except KickstartError as exc:
        detail = " ".join(str(exc).split())  # pykickstart's message spans lines
        raise RenderError(f"the rendered kickstart is not valid {syntax} kickstart syntax: {detail}") from None
