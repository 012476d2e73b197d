"""Redfish power driver over sushy.

One ``sushy.Sushy`` root (one HTTP session) is kept per driver and reused; the server is the
first member of the Systems collection. sushy is blocking, so the base class runs these hooks
on executor threads.

NOTE: quirks met with sushy-tools and real BMCs:
* power changes are asynchronous on most BMCs (sushy-tools' fake driver applies them 1-11 s
  later on purpose): ``reset_system`` returns at once and the base class verifies;
* ``BootSourceOverrideEnabled=Once`` may read back as ``Continuous``, so verification compares
  the device only;
* sushy retries 5xx responses itself (10 times, 3 s apart, by default); that is disabled here
  because the base class owns retries.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
import sushy
from sushy import exceptions as sushy_exc

from appliance.drivers.base import BmcDriver, ErrorRule
from appliance.drivers.types import BootDevice, BootMode, BootSetting, Inventory, PowerAction, PowerState
from appliance.errors import BmcAuthError, BmcConnectionError, BmcError

log = logging.getLogger(__name__)

_POWER_STATES: dict[Any, PowerState] = {
    sushy.PowerState.ON: PowerState.ON,
    sushy.PowerState.OFF: PowerState.OFF,
    sushy.PowerState.POWERING_ON: PowerState.POWERING_ON,
    sushy.PowerState.POWERING_OFF: PowerState.POWERING_OFF,
}
_RESETS: dict[PowerAction, Any] = {
    PowerAction.ON: sushy.ResetType.ON,
    PowerAction.OFF: sushy.ResetType.FORCE_OFF,
    PowerAction.SOFT_OFF: sushy.ResetType.GRACEFUL_SHUTDOWN,
    PowerAction.RESET: sushy.ResetType.FORCE_RESTART,
    PowerAction.CYCLE: sushy.ResetType.POWER_CYCLE,  # falls back to ForceRestart when not offered
}
_BOOT_TARGETS: dict[BootDevice, Any] = {
    BootDevice.PXE: sushy.BootSource.PXE,
    BootDevice.DISK: sushy.BootSource.HDD,
    BootDevice.CD: sushy.BootSource.CD,
    BootDevice.BIOS: sushy.BootSource.BIOS_SETUP,
    BootDevice.NONE: sushy.BootSource.NONE,
}
_BOOT_DEVICES: dict[Any, BootDevice] = {v: k for k, v in _BOOT_TARGETS.items()}
_BOOT_MODES: dict[BootMode, Any] = {
    BootMode.BIOS: sushy.BootSourceOverrideMode.LEGACY,
    BootMode.UEFI: sushy.BootSourceOverrideMode.UEFI,
}


def base_url(address: str, port: int | None) -> str:
    """``scheme://host:port`` of the BMC: an http(s) URL is taken as given (any path dropped)."""
    if address.startswith(("http://", "https://")):
        parts = urlsplit(address)
        netloc = parts.netloc if parts.port or port is None else f"{parts.netloc}:{port}"
        return f"{parts.scheme}://{netloc}"
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port or RedfishPower.default_port}"


class RedfishPower(BmcDriver):
    """Power, boot override and inventory of a server with a Redfish BMC. No console."""

    name = "redfish"
    default_port = 443
    error_rules: ClassVar[tuple[ErrorRule, ...]] = (
        (sushy_exc.AccessError, BmcAuthError),  # 401/403
        (sushy_exc.ConnectionError, BmcConnectionError),
        (requests.exceptions.Timeout, BmcConnectionError),
        (requests.exceptions.ConnectionError, BmcConnectionError),
        (sushy_exc.SushyError, BmcError),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._root: Any = None  # sushy.Sushy
        self._system: Any = None  # sushy System
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        """The (cached) System resource, refreshed so reads are current."""
        with self._lock:
            if self._root is None:
                self._root = sushy.Sushy(
                    base_url(self.target.address, self.target.port),
                    username=self.target.username, password=self.target.password,
                    verify=self.target.verify_tls, server_side_retries=0, server_side_retries_delay=0,
                    read_timeout=self.policy.timeout_s, connect_timeout=self.policy.timeout_s,
                )
                self._system = None
            if self._system is None:
                members = self._root.get_system_collection().get_members()
                if not members:
                    raise sushy_exc.SushyError(message="the Systems collection is empty")
                self._system = members[0]
            else:
                self._system.refresh()
            return self._system

    def _forget_session(self) -> None:
        self._root = None
        self._system = None

    def _close(self) -> None:
        with self._lock:
            root, self._root, self._system = self._root, None, None
        if root is not None:
            root.close()

    def _get_power(self) -> PowerState:
        return _POWER_STATES.get(self._connect().power_state, PowerState.UNKNOWN)

    def _set_power(self, action: PowerAction) -> None:
        system = self._connect()
        reset = _RESETS[action]
        if action is PowerAction.CYCLE and reset not in system.get_allowed_reset_system_values():
            reset = sushy.ResetType.FORCE_RESTART
        if action is PowerAction.CYCLE and system.power_state == sushy.PowerState.OFF:
            reset = sushy.ResetType.ON  # restarting a server that is off does nothing on many BMCs
        system.reset_system(reset)

    def _get_boot(self) -> BootSetting:
        boot = self._connect().boot
        enabled = boot.enabled
        if enabled in (None, sushy.BootSourceOverrideEnabled.DISABLED):
            return BootSetting(BootDevice.NONE)
        mode = {v: k for k, v in _BOOT_MODES.items()}.get(boot.mode)
        return BootSetting(device=_BOOT_DEVICES.get(boot.target, BootDevice.NONE),
                           persistent=enabled == sushy.BootSourceOverrideEnabled.CONTINUOUS, mode=mode)

    def _set_boot(self, setting: BootSetting) -> None:
        system = self._connect()
        if setting.device is BootDevice.NONE:
            system.set_system_boot_options(sushy.BootSource.NONE,
                                           enabled=sushy.BootSourceOverrideEnabled.DISABLED)
            return
        enabled = (sushy.BootSourceOverrideEnabled.CONTINUOUS if setting.persistent
                   else sushy.BootSourceOverrideEnabled.ONCE)
        mode = _BOOT_MODES[setting.mode] if setting.mode is not None else None
        system.set_system_boot_options(_BOOT_TARGETS[setting.device], enabled=enabled, mode=mode)

    def _inventory(self) -> Inventory:
        system = self._connect()
        macs: dict[str, None] = {}
        try:
            for nic in system.ethernet_interfaces.get_members():
                mac = nic.mac_address or nic.permanent_mac_address
                if mac:
                    macs[str(mac).lower()] = None
        except sushy_exc.SushyError as exc:  # optional resource; its absence is not a failure
            log.debug("no EthernetInterfaces on %s: %s", self.target.key, type(exc).__name__)
        return Inventory(
            manufacturer=system.manufacturer,
            model=system.model,
            serial_number=system.serial_number,
            part_number=system.part_number or system.sku,
            uuid=str(system.uuid).lower() if system.uuid else None,
            bmc_firmware=self._manager_firmware(),
            bios_version=system.bios_version,
            mac_addresses=tuple(macs),
        )

    def _manager_firmware(self) -> str | None:
        try:
            managers = self._root.get_manager_collection().get_members()
        except sushy_exc.SushyError:
            return None
        return str(managers[0].firmware_version) if managers and managers[0].firmware_version else None
