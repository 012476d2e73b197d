"""Reading passwords without putting them in argv: a hidden prompt, or one line per password
from stdin (``--password-stdin``) for scripts."""

from __future__ import annotations

import sys

import typer

from appliance.cli.errors import UsageError


def read_password(label: str, *, from_stdin: bool, confirm: bool = False) -> str:
    """One password: the next line of stdin, or a hidden prompt (twice if ``confirm``).

    :raises UsageError: if stdin has no line left, the password is empty, or there is no
        terminal to prompt on.
    """
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError(f"Expected the {label.lower()} as a line on standard input.")
        password = line.rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise UsageError(f"No terminal to ask for the {label.lower()}.",
                             hints=["Pass --password-stdin and write the password to standard input."])
        password = typer.prompt(label, hide_input=True, confirmation_prompt=confirm)
    if not password:
        raise UsageError(f"The {label.lower()} is empty.")
    return password
