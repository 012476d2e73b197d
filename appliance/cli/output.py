"""How commands print: rich tables for people, the API's own JSON for scripts.

With ``--json`` a command writes exactly the JSON the API returned to stdout and nothing else;
progress bars, notes and errors always go to stderr. Table cells are plain text, never rich
markup, because names and messages come from users.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TextIO

import typer
from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]


# Not on a terminal (a pipe, a log file, CI): lay tables out this wide instead of 80 columns, so
# rows stay on one line for grep and IDs are never cut.
PIPE_WIDTH = 200
_WRAP_MIN = 12  # a wrapped column narrower than this is hard to read
_GAP = 2  # between columns


def stdout() -> Console:
    return Console(highlight=False, width=_width(sys.stdout))


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))


def _width(stream: TextIO) -> int | None:
    isatty = getattr(stream, "isatty", None)
    if (isatty is not None and isatty()) or os.environ.get("COLUMNS"):
        return None  # rich asks the terminal (or honours COLUMNS)
    return PIPE_WIDTH


@dataclass(frozen=True)
class Column:
    """One table column: a header and a dotted path into the resource (or a function of it)."""

    header: str
    value: str | Callable[[dict[str, Any]], Any]
    no_wrap: bool = False
    justify: JustifyMethod = "left"
    drop: int = 0  # on a narrow terminal, columns with the highest ``drop`` are left out first

    def cell(self, item: dict[str, Any]) -> str:
        raw = self.value(item) if callable(self.value) else lookup(item, self.value)
        return format_value(raw)


def lookup(item: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(item, dict):
            return None
        item = item.get(part)
    return item


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def when(value: Any) -> str:
    """An API timestamp (``2026-01-01T12:00:00.000Z``) in local time, to the second."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def size(value: Any) -> str:
    if not isinstance(value, int):
        return ""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)  # pragma: no cover - the loop always returns


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def print_table(items: Iterable[dict[str, Any]], columns: Sequence[Column], *, empty: str) -> None:
    rows = list(items)
    if not rows:
        stderr().print(Text(empty, style="dim"))
        return
    console = stdout()
    cells = [[column.cell(item) for column in columns] for item in rows]
    shown = fitting_columns(columns, cells, console.width)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", pad_edge=False, collapse_padding=True)
    for index in shown:
        table.add_column(columns[index].header, no_wrap=columns[index].no_wrap, justify=columns[index].justify)
    for row in cells:
        table.add_row(*(Text(row[index]) for index in shown))
    console.print(table)


def fitting_columns(columns: Sequence[Column], cells: Sequence[Sequence[str]], width: int) -> list[int]:
    """Indexes of the columns to show in ``width``: all of them if they fit (unwrapped columns at
    their widest cell, wrapped ones at up to ``_WRAP_MIN`` characters); else leave out droppable
    columns, highest ``drop`` first, rather than squeezing every column to nothing."""
    def need(index: int) -> int:
        widest = max([len(columns[index].header), *(len(row[index]) for row in cells)])
        return (widest if columns[index].no_wrap else min(widest, _WRAP_MIN)) + _GAP

    shown = list(range(len(columns)))
    for index in sorted((i for i in shown if columns[i].drop), key=lambda i: (-columns[i].drop, -i)):
        if sum(need(i) for i in shown) <= width:
            break
        shown.remove(index)
    return shown


def print_collection(body: Any, columns: Sequence[Column], *, as_json: bool, empty: str) -> None:
    """A OneView collection (``{members, total, ...}``): raw JSON, or a table of its members."""
    if as_json:
        print_json(body)
        return
    members = body.get("members", []) if isinstance(body, dict) else []
    print_table(members, columns, empty=empty)
    total = body.get("total") if isinstance(body, dict) else None
    if isinstance(total, int) and total > len(members):
        stderr().print(Text(f"Showing {len(members)} of {total}.", style="dim"))


def print_resource(body: Any, fields: Sequence[Column], *, as_json: bool) -> None:
    """One resource: raw JSON, or a two-column table of its fields."""
    if as_json:
        print_json(body)
        return
    table = Table(show_header=False, show_edge=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for column in fields:
        table.add_row(Text(column.header), Text(column.cell(body)))
    stdout().print(table)


def note(message: str) -> None:
    """A line for a person (done, saved, ...): stdout, so it can be captured like any output."""
    stdout().print(Text(message), soft_wrap=True)


def warn(message: str) -> None:
    line = Text("warning: ", style="yellow")
    line.append(message)
    stderr().print(line)
