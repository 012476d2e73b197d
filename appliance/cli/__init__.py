"""The ``ingot`` command line (typer + rich)."""

from __future__ import annotations

import sys

from appliance.cli.errors import CliError, render_error
from appliance.cli.main import app
from appliance.cli.output import stderr


def main() -> None:
    """The console script: run the app; a :class:`CliError` is printed (never a traceback) and
    becomes the exit code."""
    try:
        app()
    except CliError as exc:
        render_error(exc, stderr())
        sys.exit(exc.exit_code)


__all__ = ["app", "main"]
