"""Finds BMC drivers through the ``appliance.power`` entry-point group (STYLE.md §9).

An explicit registry, not introspection: a third-party package adds a driver by declaring an
entry point, and nothing here imports a vendor library until that driver is asked for.
"""

from __future__ import annotations

import concurrent.futures
from importlib.metadata import EntryPoint, entry_points

from appliance.drivers.base import BmcDriver, DriverPolicy
from appliance.drivers.types import BmcTarget
from appliance.errors import InvalidInput

GROUP = "appliance.power"


def driver_classes() -> dict[str, type[BmcDriver]]:
    """Every installed driver by name. Loading imports the driver's module (and its library)."""
    return {ep.name: _load(ep) for ep in entry_points(group=GROUP)}


def _load(ep: EntryPoint) -> type[BmcDriver]:
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, BmcDriver)):
        raise TypeError(f"entry point {ep.name} = {ep.value} is not a BmcDriver")
    return cls


def driver_names() -> list[str]:
    """Installed driver names, without importing any driver."""
    return sorted(ep.name for ep in entry_points(group=GROUP))


def make_driver(target: BmcTarget, policy: DriverPolicy, executor: concurrent.futures.Executor) -> BmcDriver:
    """Build the driver ``target.driver`` names.

    :raises InvalidInput: no driver of that name is installed.
    """
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == target.driver]
    if not matches:
        known = ", ".join(driver_names()) or "none"
        raise InvalidInput(reason=f"unknown BMC driver {target.driver!r}; installed drivers: {known}")
    return _load(matches[0])(target, policy, executor)
