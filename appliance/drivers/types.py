"""Values shared by the BMC drivers and the services that use them. No I/O here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class PowerState(enum.StrEnum):
    """OneView's power states (the subset a BMC can report plus the transitions Ingot shows)."""

    ON = "On"
    OFF = "Off"
    POWERING_ON = "PoweringOn"
    POWERING_OFF = "PoweringOff"
    RESETTING = "Resetting"
    UNKNOWN = "Unknown"


class PowerAction(enum.StrEnum):
    """What a driver can be asked to do to a server's power."""

    ON = "on"
    SOFT_OFF = "soft-off"  # ACPI shutdown request; the OS decides
    OFF = "off"  # forced, immediate
    CYCLE = "cycle"  # off then on (OneView ColdBoot)
    RESET = "reset"  # warm reset

    @property
    def expected(self) -> PowerState:
        """The state the server must reach for the action to count as done."""
        return PowerState.OFF if self in (PowerAction.OFF, PowerAction.SOFT_OFF) else PowerState.ON


class BootDevice(enum.StrEnum):
    PXE = "pxe"
    DISK = "disk"
    CD = "cd"
    BIOS = "bios"  # firmware setup
    NONE = "none"  # no override: the firmware's own order


class BootMode(enum.StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


@dataclass(frozen=True)
class BootSetting:
    device: BootDevice
    persistent: bool = False
    mode: BootMode | None = None  # None: the BMC did not say / leave as is


@dataclass(frozen=True)
class BmcTarget:
    """How to reach one BMC. ``password`` is plaintext only in memory, never logged (repr hides it)."""

    driver: str
    address: str  # host name or IP; a Redfish driver also accepts an http(s):// URL
    port: int | None  # None: the driver's default (623 for IPMI, 443 for Redfish)
    username: str
    password: str = field(repr=False)
    verify_tls: bool = False  # BMCs ship self-signed certificates

    @property
    def key(self) -> str:
        return bmc_key(self.driver, self.address, self.port)

    @property
    def where(self) -> str:
        """The BMC as people name it in messages: host:port, or the URL given."""
        return self.address if "://" in self.address else f"{self.address}:{self.port or 'default port'}"


def bmc_key(driver: str, address: str, port: int | None) -> str:
    """Identity of a BMC for pooling, pacing and the circuit breaker."""
    if "://" in address:  # a Redfish URL already names its port
        return f"{driver}+{address}"
    return f"{driver}://{address}:{port or ''}"


@dataclass(frozen=True)
class Sensor:
    name: str
    kind: str  # Temperature, Fan, Voltage, ...
    value: float | None
    units: str
    health: str  # OK, Warning, Critical, Unknown


@dataclass(frozen=True)
class Inventory:
    """What the BMC tells about the server it manages. Every field may be unknown."""

    manufacturer: str | None = None
    model: str | None = None
    serial_number: str | None = None
    part_number: str | None = None
    uuid: str | None = None  # system GUID, canonical lower-case 8-4-4-4-12
    bmc_firmware: str | None = None
    bios_version: str | None = None
    mac_addresses: tuple[str, ...] = ()  # lower-case aa:bb:cc:dd:ee:ff
    sensors: tuple[Sensor, ...] = ()
