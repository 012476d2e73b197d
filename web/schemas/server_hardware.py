"""Server hardware on the wire (OneView ``server-hardware-12`` shape plus Ingot's BMC fields).
Credentials are write-only: no response carries the BMC user name or password."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from appliance.drivers.base import BmcDriver
from appliance.models import ServerHardware
from appliance.services.server_hardware import DiscoveryRequest, Enrollment, server_uri
from appliance.states import TARGET, ProvisionState, allowed_events
from web.schemas.common import Strict, resource_header, ts


class ServerHardwareAdd(Strict):
    """OneView's rack-server add body, plus ``port``, ``driver`` and ``name``."""

    hostname: str = Field(min_length=1, max_length=255)
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(max_length=256)
    port: int | None = Field(None, ge=1, le=65535)
    driver: str = Field("ipmi", max_length=32)
    name: str | None = Field(None, min_length=1, max_length=255)
    force: bool = False
    # Accepted for OneView compatibility; Ingot has no licences or monitored-only mode.
    licensing_intent: str | None = Field(None, alias="licensingIntent", max_length=32)
    configuration_state: str | None = Field(None, alias="configurationState", max_length=32)
    type: str | None = Field(None, max_length=64)
    initial_scope_uris: list[str] | None = Field(None, alias="initialScopeUris", max_length=16)

    def enrollment(self) -> Enrollment:
        return Enrollment(hostname=self.hostname, username=self.username, password=self.password,
                          driver=self.driver, port=self.port, name=self.name, force=self.force)


class PowerStateChange(Strict):
    power_state: Literal["On", "Off"] = Field(alias="powerState")
    power_control: Literal["MomentaryPress", "PressAndHold", "ColdBoot", "Reset"] = Field(
        "MomentaryPress", alias="powerControl")


class RefreshStateChange(Strict):
    refresh_state: Literal["RefreshPending"] = Field(alias="refreshState")


class BootDeviceChange(Strict):
    device: Literal["pxe", "disk", "cd", "bios", "none"]
    persistent: bool = False
    mode: Literal["bios", "uefi"] | None = None


class ProvisionEvent(Strict):
    """An operator's provision event: manage, inspect, maintain, unmaintain, abort or retire."""

    event: str = Field(min_length=1, max_length=32)


class DiscoveryScan(Strict):
    cidr: str = Field(min_length=3, max_length=64)
    ipmi_ports: list[int] = Field([623], alias="ipmiPorts", max_length=8)
    redfish_ports: list[int] = Field([], alias="redfishPorts", max_length=8)

    def request(self) -> DiscoveryRequest:
        return DiscoveryRequest(self.cidr, tuple(self.ipmi_ports), tuple(self.redfish_ports))


def server_hardware_public(server: ServerHardware, driver: BmcDriver | None = None) -> dict[str, Any]:
    body = resource_header(
        "server-hardware-12", "server-hardware", server_uri(server.id), server.id, server.name, server.etag,
        server.created, server.modified, state=server.state, status=server.status,
    )
    body.update({
        "stateReason": server.state_reason,
        "powerState": server.power_state,
        "powerLock": False,
        "serverProfileUri": None,
        "serverHardwareTypeUri": None,
        "serverGroupUri": None,
        "driver": server.driver,
        "mpHostInfo": {
            "mpHostName": server.address,
            "mpIpAddresses": [{"address": server.address, "type": "Static"}],
        },
        "mpPort": server.port,
        "mpModel": server.driver.upper() if server.driver != "fake" else "Fake BMC",
        "mpFirmwareVersion": server.bmc_firmware,
        "manufacturer": server.manufacturer,
        "model": server.model,
        "serialNumber": server.serial_number,
        "partNumber": server.part_number,
        "uuid": server.uuid,
        "romVersion": server.rom_version,
        "macAddresses": list(server.mac_addresses or []),
        "bootDevice": server.boot_device,
        "sensors": list(server.sensors or []),
        "lastContact": ts(server.last_contact),
        "bmcCircuit": driver.circuit.state if driver is not None else "closed",
        **_provisioning(server),
    })
    return body


def _provisioning(server: ServerHardware) -> dict[str, Any]:
    """Ingot's provision state and what inspection found, with the OneView fields it answers."""
    state = ProvisionState(server.provision_state)
    inventory = server.hardware_inventory or {}
    memory = inventory.get("physical_memory_bytes") or inventory.get("memory_bytes")
    cpu = inventory.get("cpu") or {}
    return {
        "provisionState": state.value,
        "targetProvisionState": TARGET[state].value if state in TARGET else None,
        "provisionStateUpdated": ts(server.provision_updated),
        "provisionEvents": [e.value for e in allowed_events(state)],
        "maintenanceFrom": server.provision_previous,
        "lastError": server.last_error,
        "memoryMb": memory // (1 << 20) if memory else None,
        "processorCoreCount": cpu.get("count"),
        "processorType": cpu.get("model"),
        "hardwareInventory": server.hardware_inventory,
        "inspected": ts(server.inspected),
    }
