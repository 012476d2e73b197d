"""The ``ingot`` command line (typer + rich)."""

from __future__ import annotations

from appliance.cli.main import app


def main() -> None:
    app()


__all__ = ["app", "main"]
