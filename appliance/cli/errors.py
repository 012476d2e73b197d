"""Errors the CLI reports, how they look on stderr, and the exit codes they map to.

Exit codes (scripts may rely on them):

- ``0``: success.
- ``1``: the operation failed: an API error such as 404, 409, 412 or 5xx, a task that ended
  ``Error``/``Terminated``/``Killed``, a download that did not verify, or an unreachable appliance
  (connection refused, timeout, TLS verification failure).
- ``2``: usage or input error: bad options (typer's own usage errors are 2 as well), a missing
  password on stdin, an unknown role, or a request the API rejected as invalid (400, 413, 422).
- ``3``: authentication or authorization: not logged in, wrong user name or password, a session
  that expired or was revoked (401), or a role that does not allow the action (403).

The API's OneView error body ``{errorCode, message, details, recommendedActions, nestedErrors}``
is rendered as ``error: <message>`` followed by its details, field problems and recommended
actions, so nothing the appliance explains is lost. Never put a secret into a :class:`CliError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from rich.console import Console
from rich.text import Text

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3

_USAGE_STATUSES = frozenset({400, 413, 422})
_AUTH_STATUSES = frozenset({401, 403})


class CliError(Exception):
    """A failure to report to the user, then exit with ``exit_code``.

    :param message: one line saying what went wrong.
    :param details: longer explanation, printed under the message.
    :param hints: what the user can do about it, one per line.
    :param problems: individual problems (e.g. one per invalid field).
    :param code: a machine-readable code (the API's ``errorCode``), shown in brackets.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: int = EXIT_FAILED,
        details: str = "",
        hints: Sequence[str] = (),
        problems: Sequence[str] = (),
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = details
        self.hints = list(hints)
        self.problems = list(problems)
        self.code = code


class UsageError(CliError):
    def __init__(self, message: str, *, hints: Sequence[str] = ()) -> None:
        super().__init__(message, exit_code=EXIT_USAGE, hints=hints)


class NotLoggedIn(CliError):
    def __init__(self) -> None:
        super().__init__(
            "Not logged in.",
            exit_code=EXIT_AUTH,
            hints=["Run `ingot login` first, or set INGOT_TOKEN (and INGOT_URL) to use an API token."],
        )


class ApiError(CliError):
    """An error response from the appliance."""

    def __init__(self, status: int, message: str, **kwargs: Any) -> None:
        super().__init__(message, exit_code=exit_code_for_status(status), **kwargs)
        self.status = status

    @classmethod
    def from_response(cls, status: int, body: Any, reason: str = "") -> ApiError:
        """Build from a status and the decoded body; anything that is not a OneView error body
        (a proxy's HTML page, an empty body) still gives a readable message."""
        if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
            nested = body.get("nestedErrors") or []
            problems = [str(n.get("message")) for n in nested if isinstance(n, dict) and n.get("message")]
            actions = body.get("recommendedActions") or []
            return cls(
                status,
                body["message"],
                details=str(body.get("details") or ""),
                hints=[str(a) for a in actions if a],
                problems=problems,
                code=str(body["errorCode"]) if body.get("errorCode") else None,
            )
        try:
            phrase = reason or HTTPStatus(status).phrase
        except ValueError:
            phrase = reason
        return cls(status, f"The appliance answered HTTP {status} {phrase}".rstrip() + ".")


def exit_code_for_status(status: int) -> int:
    if status in _AUTH_STATUSES:
        return EXIT_AUTH
    if status in _USAGE_STATUSES:
        return EXIT_USAGE
    return EXIT_FAILED


def render_error(error: CliError, console: Console) -> None:
    """Print ``error`` for a person. Text is never interpreted as rich markup (API messages can
    contain brackets)."""
    head = Text("error: ", style="bold red")
    head.append(error.message)
    suffix = []
    if error.code:
        suffix.append(error.code)
    if isinstance(error, ApiError):
        suffix.append(f"HTTP {error.status}")
    if suffix:
        head.append(f" [{', '.join(suffix)}]", style="dim")
    console.print(head, highlight=False)
    if error.details:
        console.print(Text(f"  {error.details}"), highlight=False)
    for problem in error.problems:
        console.print(Text(f"  - {problem}"), highlight=False)
    for hint in error.hints:
        line = Text("hint: ", style="yellow")
        line.append(hint)
        console.print(line, highlight=False)
