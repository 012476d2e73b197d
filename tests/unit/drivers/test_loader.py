"""Drivers are found through the appliance.power entry-point group."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from appliance.drivers.base import DriverPolicy
from appliance.drivers.loader import driver_classes, make_driver
from appliance.drivers.power.fake import FakePower
from appliance.drivers.types import BmcTarget
from appliance.errors import InvalidInput


def test_builtin_drivers_are_registered() -> None:
    classes = driver_classes()
    assert {"ipmi", "redfish", "fake"} <= set(classes)
    assert all(cls.name == name for name, cls in classes.items())


def test_make_driver(executor: ThreadPoolExecutor) -> None:
    driver = make_driver(BmcTarget("fake", "10.0.0.1", None, "u", "p"), DriverPolicy(), executor)
    assert isinstance(driver, FakePower) and driver.port == 623


def test_unknown_driver_lists_the_known_ones(executor: ThreadPoolExecutor) -> None:
    with pytest.raises(InvalidInput, match=r"unknown BMC driver 'ilo9'.*fake, ipmi, redfish"):
        make_driver(BmcTarget("ilo9", "10.0.0.1", None, "u", "p"), DriverPolicy(), executor)
