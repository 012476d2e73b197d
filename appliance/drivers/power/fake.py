"""An in-memory BMC for unit tests and demos, registered exactly like the real drivers.

Machines live in a module-level registry keyed by ``BmcTarget.key`` and are created on first
use with identity values derived from the address (stable across runs). Tests change a
machine's fields to inject faults:

* ``dead``: every call fails as if the BMC did not answer;
* ``password``: calls with a different password fail authentication (set on first use to the
  password of the first caller);
* ``slow_s``: every call blocks this long first (exercises timeouts and pacing);
* ``flaky``: every other call fails with a connection error;
* ``stuck``: power and boot commands are accepted but change nothing (verification fails);
* ``settle_reads``: power changes become visible only after this many reads.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

from appliance.drivers.base import BmcDriver, ConsoleFeed, ConsoleIO, ErrorRule
from appliance.drivers.types import (
    BmcTarget,
    BootDevice,
    BootSetting,
    Inventory,
    PowerAction,
    PowerState,
    Sensor,
)
from appliance.errors import BmcAuthError, BmcConnectionError


class FakeBmcDown(ConnectionError):
    """The fake's stand-in for a BMC that does not answer."""


class FakeBmcAuth(PermissionError):
    """The fake's stand-in for refused credentials."""


@dataclass
class FakeMachine:
    address: str
    password: str
    power: PowerState = PowerState.OFF
    boot: BootSetting = field(default_factory=lambda: BootSetting(BootDevice.NONE))
    dead: bool = False
    slow_s: float = 0.0
    flaky: bool = False
    stuck: bool = False
    settle_reads: int = 0
    calls: int = 0
    commands: list[str] = field(default_factory=list)  # every accepted change, for assertions
    _pending: tuple[PowerState, int] | None = None  # a change not yet visible, reads left

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.address.encode()).digest()

    @property
    def serial_number(self) -> str:
        return "FAKE" + self.digest[:5].hex().upper()

    @property
    def uuid(self) -> str:
        return str(uuid.UUID(bytes=self.digest[:16]))

    @property
    def mac_addresses(self) -> tuple[str, ...]:
        # 52:54:00 is the locally administered prefix QEMU uses; the rest is from the address.
        return tuple(":".join(f"{b:02x}" for b in (0x52, 0x54, 0x00, *self.digest[16 + 3 * i:19 + 3 * i]))
                     for i in range(2))


_machines: dict[str, FakeMachine] = {}
_lock = threading.Lock()  # hooks run on executor threads


def get_machine(target: BmcTarget) -> FakeMachine:
    """The machine behind ``target``, created on first use."""
    with _lock:
        machine = _machines.get(target.key)
        if machine is None:
            machine = _machines[target.key] = FakeMachine(target.address, target.password)
        return machine


def machines() -> dict[str, FakeMachine]:
    with _lock:
        return dict(_machines)


def reset_machines() -> None:
    """Forget every machine (call between tests)."""
    with _lock:
        _machines.clear()


class _FakeConsole:
    """Echoes what is typed, like a login prompt with local echo."""

    def __init__(self, feed: ConsoleFeed, machine: FakeMachine) -> None:
        self._feed = feed
        feed.feed(f"Fake serial console on {machine.address} ({machine.serial_number})\r\nlogin: ".encode())

    def send(self, data: bytes) -> None:
        self._feed.feed(data)

    def close(self) -> None:
        self._feed.feed_eof()


class FakePower(BmcDriver):
    name = "fake"
    default_port = 623
    error_rules: ClassVar[tuple[ErrorRule, ...]] = ((FakeBmcAuth, BmcAuthError), (FakeBmcDown, BmcConnectionError))

    def _machine(self) -> FakeMachine:
        """Apply the faults, then return the machine. Runs on an executor thread."""
        machine = get_machine(self.target)
        if machine.slow_s:
            time.sleep(machine.slow_s)
        with _lock:
            machine.calls += 1
            calls = machine.calls
        if machine.dead or (machine.flaky and calls % 2 == 1):
            raise FakeBmcDown("no answer (fake)")
        if self.target.password != machine.password:
            raise FakeBmcAuth("incorrect password (fake)")
        return machine

    def _get_power(self) -> PowerState:
        machine = self._machine()
        with _lock:
            if machine._pending is not None:
                state, reads_left = machine._pending
                if reads_left <= 0:
                    machine.power, machine._pending = state, None
                else:
                    machine._pending = (state, reads_left - 1)
            return machine.power

    def _set_power(self, action: PowerAction) -> None:
        machine = self._machine()
        with _lock:
            machine.commands.append(f"power {action.value}")
            if machine.stuck:
                return
            if machine.settle_reads:
                machine._pending = (action.expected, machine.settle_reads)
            else:
                machine.power = action.expected

    def _get_boot(self) -> BootSetting:
        return self._machine().boot

    def _set_boot(self, setting: BootSetting) -> None:
        machine = self._machine()
        with _lock:
            machine.commands.append(f"boot {setting.device.value}")
            if not machine.stuck:
                machine.boot = setting

    def _inventory(self) -> Inventory:
        machine = self._machine()
        return Inventory(
            manufacturer="Ingot",
            model="Fake Server 1000",
            serial_number=machine.serial_number,
            part_number="FS-1000",
            uuid=machine.uuid,
            bmc_firmware="1.0",
            bios_version="F1",
            mac_addresses=machine.mac_addresses,
            sensors=(Sensor("Inlet Temp", "Temperature", 22.0, "C", "OK"),
                     Sensor("Fan 1", "Fan", 4200.0, "RPM", "OK")),
        )

    def _open_console(self, feed: ConsoleFeed) -> ConsoleIO:
        return _FakeConsole(feed, self._machine())

    def _close(self) -> None:
        pass
