"""Choosing the disk the OS is written to, from the inventory's disks and a root device hint.

The hints are Ironic's root device hints, in a subset: a dict with any of

- ``name``: ``/dev/sda`` or ``sda`` (either spelling matches either);
- ``serial``, ``wwn``, ``model``, ``vendor``: equal to the disk's, ignoring case and the
  spaces around (Ironic's default ``s==``; its ``<in>``/``<or>`` operators are not supported);
- ``size``: in GiB, the disk's size rounded down as Ironic does (a "240 GB" disk is 223 GiB):
  an int meaning equal, or a string ``"<op> <n>"`` with ``op`` one of ``==``, ``!=``, ``>=``,
  ``<=``, ``>``, ``<`` (a bare ``"<n>"`` meaning ``==``);
- ``rotational``: a bool (or ``"true"``/``"false"``, as the hints may come from text).

A disk must match every hint given; of the disks that match, the first (the inventory's are
sorted by name) is the one, as Ironic takes the first match. With no hints the disk is the
smallest non-removable one of at least 4 GiB: Ironic's default, which keeps the OS off a big
data disk and off USB sticks and virtual media.

A hint that is not understood (an unknown key, a size that is not a comparison) is a
ValueError naming it, before any disk is looked at: a typo must not quietly pick a disk.

Runs on the target under ``python3-minimal``: ``re`` and ``collections.abc`` only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from agent.inventory import Disk

GIB = 1 << 30
DEFAULT_MIN_SIZE = 4 * GIB
STRING_HINTS = ("serial", "wwn", "model", "vendor")
HINTS = ("name", *STRING_HINTS, "size", "rotational")
_SIZE = re.compile(r"^\s*(==|!=|>=|<=|>|<)?\s*(\d+)\s*$")
_OPERATORS: dict[str, Callable[[int, int], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


class NoRootDevice(Exception):
    """No disk matches the hints (or, without hints, none is big enough); ``str()`` lists
    the hints and the disks seen."""


def _name(value: str) -> str:
    value = value.strip().lower()
    return value[len("/dev/"):] if value.startswith("/dev/") else value


def parse_size(value: object) -> tuple[str, int]:
    """``(operator, GiB)`` of a ``size`` hint; ValueError when it is not one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return "==", value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"root device hint size={value!r} is not a size in GiB with an optional "
                         "operator (==, !=, >=, <=, >, <), e.g. \">= 100\"")
    return match.group(1) or "==", int(match.group(2))


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"root device hint rotational={value!r} is not a bool")


def parse_hints(hints: Mapping[str, object] | None) -> dict[str, object]:
    """The hints checked and normalized (strings lowered and stripped, ``name`` without
    ``/dev/``, ``size`` as ``(operator, GiB)``); ValueError for one not understood."""
    parsed: dict[str, object] = {}
    for key, value in (hints or {}).items():
        if key not in HINTS:
            raise ValueError(f"unknown root device hint {key!r} (known: {', '.join(HINTS)})")
        if key == "size":
            parsed[key] = parse_size(value)
        elif key == "rotational":
            parsed[key] = _parse_bool(value)
        elif isinstance(value, str | int) and not isinstance(value, bool):
            text = str(value).strip()
            if not text:
                raise ValueError(f"root device hint {key} is empty")
            parsed[key] = _name(text) if key == "name" else text.lower()
        else:
            raise ValueError(f"root device hint {key}={value!r} is not a string")
    return parsed


def matches(disk: Disk, hints: Mapping[str, object]) -> bool:
    """Whether ``disk`` matches every one of the hints ``parse_hints`` returned."""
    for key, want in hints.items():
        if key == "name":
            ok = _name(disk["name"]) == want
        elif key == "size":
            assert isinstance(want, tuple)
            operator, gib = want
            ok = _OPERATORS[operator](disk["size_bytes"] // GIB, gib)
        elif key == "rotational":
            ok = disk["rotational"] == want
        else:
            have = disk.get(key)
            ok = isinstance(have, str) and have.strip().lower() == want
        if not ok:
            return False
    return True


def _describe(disks: Sequence[Disk]) -> str:
    if not disks:
        return "none"
    return ", ".join(f"{d['name']} ({d['size_bytes'] // GIB} GiB, serial {d['serial'] or 'unknown'}"
                     f"{', removable' if d['removable'] else ''})" for d in disks)


def choose_root_device(disks: Sequence[Disk], hints: Mapping[str, object] | None = None) -> Disk:
    """The disk to write the OS to, as the module docstring says. Raises NoRootDevice when
    none fits, ValueError for a hint not understood."""
    parsed = parse_hints(hints)
    if parsed:
        for d in disks:
            if matches(d, parsed):
                return d
        given = ", ".join(f"{key}={value!r}" for key, value in (hints or {}).items())
        raise NoRootDevice(f"no disk matches the root device hints {given}; disks seen: {_describe(disks)}")
    candidates = [d for d in disks if not d["removable"] and d["size_bytes"] >= DEFAULT_MIN_SIZE]
    if not candidates:
        raise NoRootDevice(f"no root device hints, and no non-removable disk of at least "
                           f"{DEFAULT_MIN_SIZE // GIB} GiB; disks seen: {_describe(disks)}")
    return min(candidates, key=lambda d: (d["size_bytes"], d["name"]))
