"""IPMI 2.0 (RMCP+) power driver over pyghmi.

pyghmi is blocking and keeps module-global session state and an I/O thread; the base class
runs every hook here on an executor thread. One ``Command`` (one RMCP+ session) is kept per
driver and reused: the login handshake is four round trips, a command on a live session one.

NOTE: pyghmi gotchas this module works around (machine-notes §5):
* credentials are passed as *bytes*: with ``str`` a second ``Command`` for the same BMC in one
  process hangs forever in ``Session.__init__`` (its session cache compares the encoded values);
* ``set_power(..., wait=True)`` polls inside the library; we pass ``wait=False`` and let the base
  class verify within its own deadline;
* pyghmi has no power-cycle state, so CYCLE sends chassis control 02h itself;
* pyghmi's ``get_bootdev`` reports "default" whenever the boot-flags-valid bit is clear, and
  some BMCs (ipmi_sim among them) never return that bit, so the boot flags are decoded here;
* pyghmi's FRU reader only shrinks its chunks on completion codes C9h/CAh; BMCs that answer C8h
  (ipmi_sim) fail, so FRU 0 is read again here in small chunks.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any, ClassVar

from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command as ipmi_command
from pyghmi.ipmi import console as ipmi_console
from pyghmi.ipmi import fru as ipmi_fru
from pyghmi.ipmi.private import util as ipmi_util

from appliance.drivers.base import BmcDriver, ConsoleFeed, ConsoleIO, ErrorRule
from appliance.drivers.power import pyghmi_fixes
from appliance.drivers.types import BootDevice, BootMode, BootSetting, Inventory, PowerAction, PowerState, Sensor
from appliance.errors import BmcAuthError, BmcConnectionError, BmcError

log = logging.getLogger(__name__)
pyghmi_fixes.install()

_POWER_REQUESTS: dict[PowerAction, str] = {
    PowerAction.ON: "on",
    PowerAction.OFF: "off",
    PowerAction.SOFT_OFF: "shutdown",  # chassis control 05h: ACPI soft shutdown
    PowerAction.RESET: "reset",  # chassis control 03h: hard reset
}
_CHASSIS_CONTROL_CYCLE = 0x02  # IPMI 2.0 §28.3 Chassis Control, data 1 = 02h power cycle

_BOOT_REQUESTS: dict[BootDevice, str] = {
    BootDevice.PXE: "network",
    BootDevice.DISK: "hd",
    BootDevice.CD: "optical",
    BootDevice.BIOS: "setup",
    BootDevice.NONE: "default",  # selector 0: no override
}
# IPMI 2.0 §28.13 boot option parameter 5, data 2 bits 5:2 (boot device selector).
_BOOT_SELECTORS: dict[int, BootDevice] = {
    0x0: BootDevice.NONE,
    0x1: BootDevice.PXE,
    0x2: BootDevice.DISK,  # "default hard drive"
    0x3: BootDevice.DISK,  # hard drive, safe mode
    0x5: BootDevice.CD,
    0x6: BootDevice.BIOS,
}
_FRU_CHUNK = 16  # bytes per Read FRU Data; small enough for every BMC met so far
_MAC = re.compile(r"\b[0-9a-f]{2}(?:[:-][0-9a-f]{2}){5}\b", re.IGNORECASE)
_HEALTH = {0: "OK", 1: "Warning", 2: "Critical", 4: "Critical"}  # pyghmi.constants.Health bits


class IpmiPower(BmcDriver):
    """Power, boot device, FRU inventory and SOL of a server with an IPMI 2.0 BMC."""

    name = "ipmi"
    default_port = 623
    error_rules: ClassVar[tuple[ErrorRule, ...]] = (
        (re.compile(r"incorrect password|unauthorized name|invalid user|privilege|authentication", re.I),
         BmcAuthError),
        (re.compile(r"timeout|timed out|no longer connected|unreachable|unable to establish|^None$", re.I),
         BmcConnectionError),
        (OSError, BmcConnectionError),  # socket errors: no route, refused, name resolution
        (pyghmi_exc.IpmiException, BmcError),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cmd: Any = None  # pyghmi Command; untyped library
        self._cmd_lock = threading.Lock()

    # --- session -------------------------------------------------------------------------------
    def _credentials(self) -> dict[str, Any]:
        return {"bmc": self.target.address, "userid": self.target.username.encode(),
                "password": self.target.password.encode(), "port": self.port}

    def _command(self) -> Any:
        with self._cmd_lock:
            if self._cmd is None:
                self._cmd = ipmi_command.Command(**self._credentials())
            return self._cmd

    def _forget_session(self) -> None:
        cmd, self._cmd = self._cmd, None
        if cmd is not None:
            # Left alone, pyghmi keeps a dead session in its keepalive table and retries and
            # re-logs it in the background indefinitely, which delays every other session's
            # packets and made new logins in the process fail. Break it off, off the event loop.
            self._executor.submit(_break_off, cmd)

    def _close(self) -> None:
        with self._cmd_lock:
            cmd, self._cmd = self._cmd, None
        if cmd is not None:
            cmd.ipmi_session.logout()

    # --- power ---------------------------------------------------------------------------------
    def _get_power(self) -> PowerState:
        state = self._command().get_power()["powerstate"]
        return {"on": PowerState.ON, "off": PowerState.OFF}.get(state, PowerState.UNKNOWN)

    def _set_power(self, action: PowerAction) -> None:
        cmd = self._command()
        if action is PowerAction.CYCLE:
            if cmd.get_power()["powerstate"] == "off":
                cmd.set_power("on", wait=False)  # many BMCs ignore a cycle of a server that is off
            else:
                cmd.xraw_command(netfn=0x00, command=0x02, data=[_CHASSIS_CONTROL_CYCLE])
            return
        cmd.set_power(_POWER_REQUESTS[action], wait=False)

    # --- boot device ---------------------------------------------------------------------------
    def _get_boot(self) -> BootSetting:
        # Get System Boot Options (chassis netfn 00h, cmd 09h), parameter 5 "boot flags".
        data = self._command().xraw_command(netfn=0x00, command=0x09, data=(5, 0, 0))["data"]
        flags, device = data[2], data[3]
        valid = bool(flags & 0x80)
        return BootSetting(
            device=_BOOT_SELECTORS.get((device >> 2) & 0x0F, BootDevice.NONE),
            persistent=valid and bool(flags & 0x40),
            mode=(BootMode.UEFI if flags & 0x20 else BootMode.BIOS) if valid else None,
        )

    def _set_boot(self, setting: BootSetting) -> None:
        result = self._command().set_bootdev(_BOOT_REQUESTS[setting.device], persist=setting.persistent,
                                             uefiboot=setting.mode is BootMode.UEFI)
        if isinstance(result, dict) and "error" in result:  # pyghmi returns, not raises, this one
            raise pyghmi_exc.IpmiException(result["error"])

    # --- inventory -----------------------------------------------------------------------------
    def _inventory(self) -> Inventory:
        cmd = self._command()
        fru = self._system_fru(cmd)

        def text(*keys: str) -> str | None:
            for key in keys:
                value = fru.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
            return None

        return Inventory(
            manufacturer=text("Manufacturer", "Board manufacturer"),
            model=text("Product name", "Board product name"),
            serial_number=text("Serial Number", "Board serial number", "Chassis serial number"),
            part_number=text("Model", "Board model", "Chassis part number"),
            uuid=(text("UUID") or self._system_guid(cmd) or "").lower() or None,
            bmc_firmware=self._firmware(cmd),
            mac_addresses=_macs(fru.values()),
            sensors=self._sensors(cmd),
        )

    def _system_fru(self, cmd: Any) -> dict[str, Any]:
        try:
            return dict(cmd.get_inventory_of_component("System") or {})
        except pyghmi_exc.IpmiException as exc:
            log.debug("pyghmi could not read FRU 0 from %s (%s); reading it in small chunks", self.target.key, exc)
        size_rsp = cmd.xraw_command(netfn=0x0A, command=0x10, data=[0])["data"]  # Get FRU Inventory Area Info
        size = size_rsp[0] | (size_rsp[1] << 8)
        raw = bytearray()
        for offset in range(0, min(size, 4096), _FRU_CHUNK):  # bounded: FRU areas are small
            count = min(_FRU_CHUNK, size - offset)
            chunk = cmd.xraw_command(netfn=0x0A, command=0x11,  # Read FRU Data
                                     data=[0, offset & 0xFF, offset >> 8, count])["data"]
            raw += bytes(chunk[1:1 + chunk[0]])
        return dict(ipmi_fru.FRU(rawdata=raw).info or {})

    @staticmethod
    def _system_guid(cmd: Any) -> str | None:
        rsp = cmd.raw_command(netfn=0x06, command=0x37)  # Get System GUID
        if "error" in rsp or len(rsp["data"]) < 16:
            return None
        return str(ipmi_util.decode_wireformat_uuid(rsp["data"]))

    @staticmethod
    def _firmware(cmd: Any) -> str | None:
        data = cmd.xraw_command(netfn=0x06, command=0x01)["data"]  # Get Device ID
        return f"{data[2] & 0x7F}.{data[3]:02x}" if len(data) > 3 else None  # minor revision is BCD

    def _sensors(self, cmd: Any) -> tuple[Sensor, ...]:
        try:
            readings = list(cmd.get_sensor_data())
        except pyghmi_exc.IpmiException as exc:  # no SDRs is common and not a failure of the inventory
            log.debug("no sensors from %s: %s", self.target.key, exc)
            return ()
        return tuple(
            Sensor(name=str(r.name), kind=str(r.type), value=float(r.value) if r.value is not None else None,
                   units=str(r.units or ""), health=_HEALTH.get(int(r.health), "Critical"))
            for r in readings
        )

    # --- console -------------------------------------------------------------------------------
    def _open_console(self, feed: ConsoleFeed) -> ConsoleIO:
        return _SolConsole(feed, self._credentials(), self.policy.timeout_s)


def _break_off(cmd: Any) -> None:
    try:
        cmd.ipmi_session._mark_broken()
    except Exception:  # the session is being discarded; nothing useful to report
        log.debug("discarding a dead IPMI session failed", exc_info=True)


def _macs(values: Iterable[Any]) -> tuple[str, ...]:
    """Every MAC address in FRU values, including lists such as ``product_extra``."""
    found: dict[str, None] = {}
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                for match in _MAC.finditer(item):
                    found[match.group().replace("-", ":").lower()] = None
    return tuple(found)


class _SolConsole:
    """pyghmi SOL bridged to a :class:`ConsoleFeed`.

    pyghmi only processes incoming packets inside ``wait_for_rsp``; a console has no caller
    waiting, so a daemon thread pumps it until the console is closed.
    """

    def __init__(self, feed: ConsoleFeed, credentials: dict[str, Any], timeout_s: float) -> None:
        self._feed = feed
        self._error: str | None = None
        self._stop = threading.Event()
        self._sol = ipmi_console.Console(iohandler=self._output, **credentials)
        self._pump = threading.Thread(target=self._run, name=f"sol-{credentials['bmc']}", daemon=True)
        self._pump.start()
        # Activation completes asynchronously; wait (bounded) so errors surface to the caller.
        for _ in range(max(1, int(timeout_s / 0.05))):
            if self._sol.connected or self._error is not None:
                break
            self._stop.wait(0.05)
        if not self._sol.connected:
            self.close()
            raise pyghmi_exc.IpmiException(self._error or "timeout activating SOL")

    def _output(self, data: Any) -> None:
        if isinstance(data, bytes | bytearray):
            self._feed.feed(bytes(data))
        elif isinstance(data, dict) and "error" in data:
            self._error = str(data["error"])
            self._feed.feed_eof()

    def _run(self) -> None:
        while not self._stop.is_set():
            ipmi_console.Console.wait_for_rsp(0.2)

    def send(self, data: bytes) -> None:
        if self._error is not None:
            raise pyghmi_exc.IpmiException(self._error)
        self._sol.send_data(data)

    def close(self) -> None:
        self._stop.set()
        try:
            self._sol.close()
        finally:
            self._pump.join(2)
            self._feed.feed_eof()
