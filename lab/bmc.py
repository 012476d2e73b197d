"""Simulated BMCs for the emulated rack: many IPMI-over-LAN BMCs in one process, on loopback only.

Two halves, so that the emulated rack can later put QEMU behind the same BMC code:

* the machine side: :class:`Machine` (what a BMC can do to a server) and :class:`MemoryMachine`, a server
  that exists only in memory with a deterministic identity (serial, MACs, system GUID) derived from its index;
* the BMC side: :class:`VirtualBmc`, a subclass of pyghmi's ``Bmc`` answering IPMI for one Machine, and
  :class:`BmcFleet`, which serves many of them from one thread.

Why not pyghmi's own ``listen()``: pyghmi keeps all I/O in module globals (one select() thread over every
socket it knows, then a dispatcher keyed by the client's address and the BMC's *port*). That select() cannot
take more than 1024 descriptors, and its per-port keying mixes up BMCs that share a port on different
addresses. So VirtualBmc opens its own socket, which pyghmi never sees, and BmcFleet runs one epoll loop
that hands each datagram to pyghmi's session code (RMCP+ handshake, integrity, AES) directly.

Run a fleet in the foreground (prints one JSON line when ready, serves until SIGTERM/SIGINT)::

    python -m lab.bmc --count 500 --address-base 127.10.0.1 --port 16230 --dead 2 --lossy 2
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import enum
import heapq
import ipaddress
import itertools
import json
import logging
import random
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol, runtime_checkable

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.serversession as pyghmi_serversession
import pyghmi.ipmi.private.session as pyghmi_session

from appliance.discovery import rmcp
from appliance.drivers.types import BootDevice, BootSetting, PowerState
from lab.netns import in_own_namespace

log = logging.getLogger(__name__)

LAB_IANA = 32473  # RFC 5612's "example" enterprise number: clearly not a real vendor
LAB_PRODUCT_ID = 0x1A2B
_UUID_NAMESPACE = uuid.UUID("6c0a52e4-1f0e-4c55-9d0b-6e9e0f1ab001")


# ============================================================================================================
# Machine side
# ============================================================================================================


@dataclass(frozen=True)
class Fru:
    """The identity printed on the server's FRU label."""

    manufacturer: str
    model: str
    serial_number: str
    part_number: str


@runtime_checkable
class Machine(Protocol):
    """What a BMC can see and do of the server it manages. Methods may be called from the fleet's thread."""

    @property
    def name(self) -> str: ...

    @property
    def power_state(self) -> PowerState: ...

    def power_on(self) -> None: ...

    def power_off(self) -> None:
        """Immediate, forced off."""

    def reset(self) -> None:
        """Warm reset; a start from the firmware's point of view (honours the boot override)."""

    def cycle(self) -> None:
        """Off, then on."""

    def shutdown(self) -> None:
        """ACPI power-button request; the OS decides."""

    @property
    def boot(self) -> BootSetting:
        """The boot override the next start will use (device NONE: the firmware's own order)."""

    def set_boot(self, setting: BootSetting) -> None: ...

    @property
    def system_guid(self) -> uuid.UUID: ...

    @property
    def fru(self) -> Fru: ...

    @property
    def mac_addresses(self) -> tuple[str, ...]: ...


def lab_mac(index: int, nic: int) -> str:
    """``52:54:00:xx:xx:xx`` (QEMU's prefix) from a machine index (< 2**20) and a NIC number (< 16)."""
    if not 0 <= index < 1 << 20 or not 0 <= nic < 16:
        raise ValueError(f"index {index} / nic {nic} out of range for a lab MAC")
    value = (index << 4) | nic
    return "52:54:00:" + ":".join(f"{(value >> shift) & 0xFF:02x}" for shift in (16, 8, 0))


class MemoryMachine:
    """A server that exists only in memory. Identity is a pure function of ``index``; state is lock-protected."""

    def __init__(self, index: int, *, nics: int = 2, manufacturer: str = "Ingot Lab",
                 model: str = "Virtual Server VS-1", name: str | None = None) -> None:
        self.index = index
        self._name = name or f"node-{index:04d}"
        self._fru = Fru(manufacturer=manufacturer, model=model, serial_number=f"INGLAB{index:06d}",
                        part_number="VS1-0001")
        self._macs = tuple(lab_mac(index, nic) for nic in range(nics))
        self._guid = uuid.uuid5(_UUID_NAMESPACE, f"machine-{index}")
        self._lock = threading.Lock()
        self._power = PowerState.OFF
        self._boot = BootSetting(BootDevice.NONE)
        # What each start booted from, oldest first: lets tests (and later QEMU) see the override honoured.
        self.boot_history: list[BootDevice] = []

    def __repr__(self) -> str:
        return f"MemoryMachine({self.index}, power={self._power.value}, boot={self._boot})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def power_state(self) -> PowerState:
        with self._lock:
            return self._power

    def _start(self) -> None:
        # Caller holds the lock. The firmware consumes a one-time override as it boots.
        self.boot_history.append(self._boot.device)
        if not self._boot.persistent:
            self._boot = BootSetting(BootDevice.NONE)
        self._power = PowerState.ON

    def power_on(self) -> None:
        with self._lock:
            if self._power != PowerState.ON:
                self._start()

    def power_off(self) -> None:
        with self._lock:
            self._power = PowerState.OFF

    def shutdown(self) -> None:
        # In memory the "OS" always obeys the power button at once.
        self.power_off()

    def reset(self) -> None:
        with self._lock:
            if self._power == PowerState.ON:  # a reset of a server that is off does nothing (as on real iron)
                self._start()

    def cycle(self) -> None:
        with self._lock:
            self._power = PowerState.OFF
            self._start()

    @property
    def boot(self) -> BootSetting:
        with self._lock:
            return self._boot

    def set_boot(self, setting: BootSetting) -> None:
        with self._lock:
            self._boot = setting

    @property
    def system_guid(self) -> uuid.UUID:
        return self._guid

    @property
    def fru(self) -> Fru:
        return self._fru

    @property
    def mac_addresses(self) -> tuple[str, ...]:
        return self._macs


# ============================================================================================================
# pyghmi server patch
# ============================================================================================================

_PATCH_MARK = "_ingot_cipher_suite_3_only"


def apply_client_interop_patch() -> None:
    """Make pyghmi's server refuse RMCP+ proposals other than cipher suite 3. Idempotent, process-wide.

    pyghmi's server implements only suite 3 (HMAC-SHA1 / HMAC-SHA1-96 / AES-CBC-128) but "accepts" any
    proposal, then answers in SHA-1. pyghmi's own client proposes SHA-256 first and crashes on the SHA-1
    RAKP2 (``struct.error``). Answering status 0x11 ("no cipher suite match") makes the client fall back
    to SHA-1, and makes ipmitool ``-C 17`` fail fast instead of failing the HMAC later.
    """
    cls = pyghmi_serversession.ServerSession
    original = cls.create_open_session_response
    if getattr(original, _PATCH_MARK, False):
        return

    def create_open_session_response(self: Any, request: bytearray) -> bytearray:
        # Open Session Request: tag, role, 2 reserved, console session id (4), then three 8-byte
        # proposals (auth, integrity, confidentiality) whose algorithm is at byte 4 of each.
        if len(request) >= 32 and (request[12], request[20], request[28]) != (1, 1, 1):
            self.clientsessionid = request[4:8]
            return bytearray([request[0], 0x11, 0, 0]) + request[4:8]
        result: bytearray = original(self, request)
        return result

    setattr(create_open_session_response, _PATCH_MARK, True)
    cls.create_open_session_response = create_open_session_response


# ============================================================================================================
# BMC side
# ============================================================================================================


class Fault(enum.StrEnum):
    NONE = "none"
    DEAD = "dead"  # bound, but drops everything: looks like a hung BMC (no ICMP, just timeouts)
    SLOW = "slow"  # every reply leaves ``slow_s`` seconds late
    WRONG_PASSWORD = "wrong_password"  # noqa: S105  (a fault name) its password differs from the fleet's
    LOSSY = "lossy"  # drops a fraction ``loss`` of incoming datagrams (seeded RNG)


# IPMI boot device selector (boot flags data 2, bits 5..2) <-> our values.
_BOOT_CODES: dict[BootDevice, int] = {BootDevice.NONE: 0, BootDevice.PXE: 1, BootDevice.DISK: 2,
                                      BootDevice.CD: 5, BootDevice.BIOS: 6}
_BOOT_FROM_CODE = {code: device for device, code in _BOOT_CODES.items()}
# pyghmi's names for the same selectors (pyghmi.ipmi.command.boot_devices), for its hook methods.
_PYGHMI_BOOT_NAMES: dict[str, BootDevice] = {"default": BootDevice.NONE, "network": BootDevice.PXE,
                                             "hd": BootDevice.DISK, "optical": BootDevice.CD,
                                             "setup": BootDevice.BIOS}

_MAX_SESSIONS_PER_BMC = 64  # pyghmi never closes server sessions; keep the newest few per BMC

# Completion codes (IPMI table 5-2).
CC_OK = 0x00
CC_PARAM_UNSUPPORTED = 0x80
CC_INVALID_COMMAND = 0xC1
CC_NOT_PRESENT = 0xCB
CC_OUT_OF_RANGE = 0xC9
CC_INVALID_DATA = 0xCC


def _tlv(text: str) -> bytes:
    raw = text.encode("latin-1")[:63]
    return bytes([0xC0 | len(raw)]) + raw  # type 3 (8-bit ASCII + Latin-1), length in bits 5..0


def _area(body: bytes) -> bytes:
    """Close a FRU area: end marker, pad to a multiple of 8 with the checksum last, fix the length byte."""
    body = body + b"\xc1"
    total = -(-(len(body) + 1) // 8) * 8
    body = body + bytes(total - len(body) - 1)
    body = body[:1] + bytes([total // 8]) + body[2:]
    return body + bytes([rmcp.checksum(body)])


def build_fru(fru: Fru, macs: Sequence[str]) -> bytes:
    """FRU inventory (Platform Management FRU Information Storage Definition v1.0) with the MACs as
    product-area custom fields, which pyghmi returns as ``product_extra`` and ipmitool as "Product Extra"."""
    chassis = _area(bytes([1, 0, 0x17]) + _tlv(fru.part_number) + _tlv(fru.serial_number))  # 0x17: rack mount
    board = _area(bytes([1, 0, 0, 0, 0, 0]) + _tlv(fru.manufacturer) + _tlv(fru.model)
                  + _tlv(fru.serial_number) + _tlv(fru.part_number) + _tlv(""))
    product = _area(bytes([1, 0, 0]) + _tlv(fru.manufacturer) + _tlv(fru.model) + _tlv(fru.part_number)
                    + _tlv("1.0") + _tlv(fru.serial_number) + _tlv("") + _tlv("")
                    + b"".join(_tlv(mac) for mac in macs))
    offsets = [1, 1 + len(chassis) // 8, 1 + (len(chassis) + len(board)) // 8]
    header = bytes([1, 0, *offsets, 0, 0])
    return header + bytes([rmcp.checksum(header)]) + chassis + board + product


class _FaultySocket:
    """The socket pyghmi's session code writes to: a real UDP socket plus the send-side faults.

    pyghmi calls ``setblocking(1)`` before each send and uses ``fd`` if present (eventlet); we offer
    neither, so the fleet's socket stays non-blocking and every send goes through :meth:`sendto`.
    """

    def __init__(self, sock: socket.socket, bmc: VirtualBmc) -> None:
        self.sock = sock
        self._bmc = bmc

    def fileno(self) -> int:
        return self.sock.fileno()

    def getsockname(self) -> Any:
        return self.sock.getsockname()

    def setblocking(self, flag: bool) -> None:
        pass

    def sendto(self, packet: bytes, addr: Any) -> int:
        if self._bmc.fault == Fault.DEAD:
            return len(packet)
        if self._bmc.fault == Fault.SLOW:
            data = bytes(packet)

            def send_late() -> None:
                self._send_now(data, addr)

            self._bmc.call_later(self._bmc.slow_s, send_late)
            return len(packet)
        return self._send_now(packet, addr)

    def _send_now(self, packet: bytes, addr: Any) -> int:
        try:
            return self.sock.sendto(packet, addr)
        except OSError as exc:  # a full buffer or a vanished client must not stop the loop
            log.debug("send to %s failed: %s", addr, exc)
            return 0

    def close(self) -> None:
        self.sock.close()


class VirtualBmc(pyghmi_bmc.Bmc):  # type: ignore[misc]  # pyghmi is untyped
    """An IPMI v2.0 (RMCP+, cipher suite 3) BMC for one :class:`Machine`, bound to one loopback address.

    It does not start pyghmi's I/O thread: feed it datagrams with :meth:`datagram_received` (the fleet does).
    """

    def __init__(self, machine: Machine, *, address: str, port: int, users: Mapping[str, str],
                 fault: Fault = Fault.NONE, slow_s: float = 1.0, loss: float = 0.5, seed: int = 0,
                 answer_asf_ping: bool = True, bmc_guid: uuid.UUID | None = None) -> None:
        # Deliberately not calling IpmiServer.__init__: it binds through pyghmi's global socket pool and
        # starts its I/O thread. The attributes below are the ones pyghmi's server code reads.
        apply_client_interop_patch()
        require_safe_bind(address)
        self.machine = machine
        self.fault = fault
        self.slow_s = slow_s
        self.loss = loss
        self.answer_asf_ping = answer_asf_ping
        self._rng = random.Random(seed)
        self.call_later: Callable[[float, Callable[[], None]], None] = _call_now
        self.revision = 1
        self.deviceid = 0x20
        self.firmwaremajor = 1
        self.firmwareminor = 0
        self.ipmiversion = 2
        self.additionaldevices = 0
        self.mfgid = LAB_IANA
        self.prodid = LAB_PRODUCT_ID
        self.pktqueue: collections.deque[Any] = collections.deque()
        self.uuid = bmc_guid or uuid.uuid5(_UUID_NAMESPACE, f"bmc-{machine.system_guid}")
        self.authdata = dict(users)
        # Static answer to Get Channel Auth Caps (completion, channel 1, v2.0 extended, non-null users,
        # RMCP+ only, no OEM): pyghmi's send_auth_cap appends it verbatim.
        self.authcap = struct.pack("9B", 0, 1, 0x80, 0x04, 0x02, 0, 0, 0, 0)
        self.kg = None
        self.timeout = 60
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((address, port))
        except OSError:
            sock.close()
            raise
        self.address = address
        self.port: int = sock.getsockname()[1]
        self.serversocket = _FaultySocket(sock, self)
        self._fru_data = build_fru(machine.fru, machine.mac_addresses)
        self._sessions: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"VirtualBmc({self.machine.name}, {self.address}:{self.port}, fault={self.fault.value})"

    def close(self) -> None:
        self._sessions.clear()
        self.serversocket.close()

    # --- datagram dispatch ---------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.fault == Fault.DEAD:
            return
        if self.fault == Fault.LOSSY and self._rng.random() < self.loss:
            return
        if len(data) < 5 or data[0] != rmcp.RMCP_VERSION:
            return
        if data[3] == rmcp.CLASS_ASF:
            self._asf_received(data, addr)
            return
        if data[3] != rmcp.CLASS_IPMI:
            return
        if data[4] == rmcp.AUTHTYPE_RMCP_PLUS and len(data) >= 10:
            payload_type = data[5] & 0x3F
            session_id = int.from_bytes(data[6:10], "little")
            # 0x10 Open Session Request starts a session; RAKP 1/3 (0x12/0x14) carry session id 0 but belong
            # to the session their Open Session Request created; payloads with a session id belong to it.
            if payload_type in (0x12, 0x14) or (payload_type != 0x10 and session_id != 0):
                session = self._sessions.get(addr)
                if session is not None:
                    session._handle_ipmi_packet(bytearray(data), sockaddr=addr, qent=(data, addr, self.serversocket))
                return
        # Session-less: auth caps, cipher suites (answered by pyghmi) or a new RMCP+ session.
        self.sessionless_data(bytearray(data), addr)
        handlers = pyghmi_session.Session.bmc_handlers
        # pyghmi files the new session under (client address, BMC port) in a process-wide dict; move it
        # into our own per-BMC table so that BMCs sharing a port number cannot see each other's sessions.
        per_client = handlers.get(addr)
        if per_client is not None:
            session = per_client.pop(self.port, None)
            if not per_client:
                handlers.pop(addr, None)
            if session is not None:
                self._sessions.pop(addr, None)
                self._sessions[addr] = session
                while len(self._sessions) > _MAX_SESSIONS_PER_BMC:
                    self._sessions.pop(next(iter(self._sessions)))

    def _asf_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.answer_asf_ping:
            return
        try:
            message = rmcp.decode(data)
        except rmcp.DecodeError:
            return
        if isinstance(message, rmcp.PresencePing):
            pong = rmcp.PresencePong(tag=message.tag, sequence=message.sequence, entities=0x81)
            self.serversocket.sendto(rmcp.encode_presence_pong(pong), addr)

    # --- pyghmi hooks: power and boot ----------------------------------------------------------------------

    def get_power_state(self) -> str:
        return "on" if self.machine.power_state == PowerState.ON else "off"

    def power_on(self) -> None:
        self.machine.power_on()

    def power_off(self) -> None:
        self.machine.power_off()

    def power_reset(self) -> None:
        self.machine.reset()

    def power_cycle(self) -> None:
        self.machine.cycle()

    def power_shutdown(self) -> None:
        self.machine.shutdown()

    def get_boot_device(self) -> str:
        device = self.machine.boot.device
        return next(name for name, value in _PYGHMI_BOOT_NAMES.items() if value == device)

    def set_boot_device(self, bootdevice: str) -> None:
        device = _PYGHMI_BOOT_NAMES.get(bootdevice, BootDevice.NONE)
        self.machine.set_boot(BootSetting(device, persistent=self.machine.boot.persistent))

    def get_system_guid(self) -> uuid.UUID:
        return self.machine.system_guid

    def cold_reset(self) -> int:
        return CC_OK

    # --- raw commands pyghmi's server does not cover (or covers without the persistent flag) --------------

    def handle_raw_request(self, request: dict[str, Any], session: Any) -> None:
        netfn, command, data = request["netfn"], request["command"], bytes(request.get("data", b""))
        handler = self._RAW.get((netfn, command))
        if handler is None:
            super().handle_raw_request(request, session)
            return
        try:
            code, reply = handler(self, data)
        except Exception:  # a bug here must cost one reply, never the fleet's loop
            log.exception("%r: handling netfn 0x%02x cmd 0x%02x failed", self, netfn, command)
            code, reply = 0xFF, b""
        session.send_ipmi_response(code=code, data=list(reply))

    def _device_id(self, data: bytes) -> tuple[int, bytes]:
        # Byte 1 bit 7: "provides device SDRs"; additional-device byte without the SDR repository bit.
        # Together they tell pyghmi's client there is no SDR repository to walk (we do not serve one).
        return CC_OK, bytes([self.deviceid, 0x80 | self.revision, self.firmwaremajor, self.firmwareminor,
                             0x02, 0x08]) + LAB_IANA.to_bytes(3, "little") + LAB_PRODUCT_ID.to_bytes(2, "little")

    def _device_guid(self, data: bytes) -> tuple[int, bytes]:
        return CC_OK, self.uuid.bytes_le

    def _system_guid(self, data: bytes) -> tuple[int, bytes]:
        return CC_OK, self.machine.system_guid.bytes_le

    def _get_boot_options(self, data: bytes) -> tuple[int, bytes]:
        if not data:
            return CC_INVALID_DATA, b""
        selector = data[0] & 0x7F
        if selector != 5:
            return CC_PARAM_UNSUPPORTED, b""
        setting = self.machine.boot
        if setting.device == BootDevice.NONE:
            flags = bytes(5)  # "boot flags valid" clear: no override
        else:
            flags = bytes([0x80 | (0x40 if setting.persistent else 0), _BOOT_CODES[setting.device] << 2, 0, 0, 0])
        return CC_OK, bytes([1, 5]) + flags

    def _set_boot_options(self, data: bytes) -> tuple[int, bytes]:
        if not data:
            return CC_INVALID_DATA, b""
        selector = data[0] & 0x7F
        if selector in (0, 3, 4):  # set-in-progress, service partition, boot info ack: accepted, no effect
            return CC_OK, b""
        if selector != 5:
            return CC_PARAM_UNSUPPORTED, b""
        if len(data) < 3:
            return CC_INVALID_DATA, b""
        flags, code = data[1], (data[2] >> 2) & 0x0F
        if not flags & 0x80:
            self.machine.set_boot(BootSetting(BootDevice.NONE))
            return CC_OK, b""
        device = _BOOT_FROM_CODE.get(code)
        if device is None:
            return CC_INVALID_DATA, b""
        self.machine.set_boot(BootSetting(device, persistent=bool(flags & 0x40)))
        return CC_OK, b""

    def _fru_area_info(self, data: bytes) -> tuple[int, bytes]:
        if data[:1] != b"\x00":
            return CC_NOT_PRESENT, b""
        return CC_OK, len(self._fru_data).to_bytes(2, "little") + b"\x00"  # accessed by bytes

    def _read_fru(self, data: bytes) -> tuple[int, bytes]:
        if len(data) < 4:
            return CC_INVALID_DATA, b""
        if data[0] != 0:
            return CC_NOT_PRESENT, b""
        offset, count = int.from_bytes(data[1:3], "little"), data[3]
        if offset > len(self._fru_data):
            return CC_OUT_OF_RANGE, b""
        chunk = self._fru_data[offset:offset + min(count, 224)]
        return CC_OK, bytes([len(chunk)]) + chunk

    _RAW: dict[tuple[int, int], Callable[[VirtualBmc, bytes], tuple[int, bytes]]] = {
        (0x06, 0x01): _device_id,
        (0x06, 0x08): _device_guid,
        (0x06, 0x37): _system_guid,
        (0x00, 0x08): _set_boot_options,
        (0x00, 0x09): _get_boot_options,
        (0x0A, 0x10): _fru_area_info,
        (0x0A, 0x11): _read_fru,
    }


def _call_now(delay: float, callback: Callable[[], None]) -> None:
    callback()  # without a fleet there is no timer to wait on


def drain(bmc: VirtualBmc) -> None:
    """Hand a BMC the datagrams waiting on its socket (its event loop saw it readable)."""
    sock = bmc.serversocket.sock
    for _ in range(64):  # bounded, so one flooded BMC cannot starve the others
        try:
            data, addr = sock.recvfrom(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # ICMP errors surface here on Linux; nothing to do
            log.debug("%r: recv failed: %s", bmc, exc)
            return
        try:
            bmc.datagram_received(data, addr)
        except Exception:
            log.exception("%r: datagram from %s failed", bmc, addr)


def require_safe_bind(address: str) -> None:
    """Refuse an address a lab BMC must not listen on: anything but loopback in the machine's own
    network namespace. Inside a lab's namespace every interface is the lab's, so there the BMCs
    take their management addresses."""
    if not ipaddress.ip_address(address).is_loopback and not in_own_namespace():
        raise ValueError(f"lab BMCs bind loopback addresses only (outside a lab namespace), not {address}")


# ============================================================================================================
# Fleet
# ============================================================================================================


@dataclass(frozen=True)
class BmcInfo:
    """What a test or the demo needs to reach one fleet member (the CLI prints a list of these as JSON)."""

    name: str
    address: str
    port: int
    fault: str
    serial: str
    macs: tuple[str, ...]
    uuid: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "port": self.port, "fault": self.fault,
                "serial": self.serial, "macs": list(self.macs), "uuid": self.uuid}


def fault_plan(count: int, *, dead: int = 0, slow: int = 0, wrong_password: int = 0,
               lossy: int = 0) -> dict[int, Fault]:
    """Faults for the *last* members, in the order dead, slow, wrong_password, lossy (healthy ones first)."""
    faults = [Fault.DEAD] * dead + [Fault.SLOW] * slow + [Fault.WRONG_PASSWORD] * wrong_password
    faults += [Fault.LOSSY] * lossy
    if len(faults) > count:
        raise ValueError(f"{len(faults)} faulty BMCs requested in a fleet of {count}")
    start = count - len(faults)
    return {start + i: fault for i, fault in enumerate(faults)}


class BmcFleet:
    """Many VirtualBmcs served by one epoll loop (one thread), each on its own loopback address or port.

    Layouts: distinct addresses ``address_base``, ``address_base + 1``, ... all on ``port`` (``port=0``: the
    first socket picks a free port and the others reuse its number), or with ``consecutive_ports`` one
    address and ports ``port``, ``port + 1``, ...

    Use as a context manager, or :meth:`start`/:meth:`stop` (background thread), or :meth:`bind` then
    :meth:`serve_forever` in the calling thread (the CLI does, so signals stop it).
    """

    def __init__(self, count: int, *, address_base: str = "127.10.0.1", port: int = 0,
                 consecutive_ports: bool = False, user: str = "admin",
                 password: str = "secret",  # noqa: S107  loopback-only lab default, printed by the CLI
                 faults: Mapping[int, Fault] | None = None, slow_s: float = 1.0, loss: float = 0.5,
                 seed: int = 0, answer_asf_ping: bool = True,
                 machine_factory: Callable[[int], Machine] = MemoryMachine) -> None:
        if count < 1:
            raise ValueError("a fleet needs at least one BMC")
        if consecutive_ports and not 0 < port <= 65535 - count + 1:
            raise ValueError("consecutive ports need an explicit base port with room for the whole fleet")
        base = ipaddress.IPv4Address(address_base)
        last = base + (0 if consecutive_ports else count - 1)
        if not (base.is_loopback and last.is_loopback):
            raise ValueError(f"fleet addresses {base}..{last} leave 127.0.0.0/8")
        self.count = count
        self.user = user
        self.password = password
        self._base = base
        self._port = port
        self._consecutive = consecutive_ports
        self._faults = dict(faults or {})
        self._slow_s = slow_s
        self._loss = loss
        self._seed = seed
        self._asf = answer_asf_ping
        self.machines: list[Machine] = [machine_factory(i) for i in range(count)]
        self.bmcs: list[VirtualBmc] = []
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._timer_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------

    def bind(self) -> None:
        """Open every BMC's socket. On failure, closes what it opened and re-raises."""
        if self.bmcs:
            raise RuntimeError("fleet already bound")
        self._stopping.clear()
        selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._selector = selector
        try:
            port = self._port
            for i, machine in enumerate(self.machines):
                address = str(self._base if self._consecutive else self._base + i)
                fault = self._faults.get(i, Fault.NONE)
                password = self.password + "-not" if fault == Fault.WRONG_PASSWORD else self.password
                bmc = VirtualBmc(machine, address=address, port=port + i if self._consecutive else port,
                                 users={self.user: password}, fault=fault, slow_s=self._slow_s, loss=self._loss,
                                 seed=self._seed * 100_003 + i, answer_asf_ping=self._asf)
                if not self._consecutive and port == 0:
                    port = bmc.port  # the first free port becomes everyone's port
                bmc.call_later = self.call_later
                self.bmcs.append(bmc)
                selector.register(bmc.serversocket.sock, selectors.EVENT_READ, bmc)
        except BaseException:
            self.close()
            raise

    def serve_forever(self) -> None:
        """Run the loop in the calling thread until :meth:`shutdown`."""
        selector = self._selector
        if selector is None:
            raise RuntimeError("bind() the fleet first")
        while not self._stopping.is_set():
            for key, _ in selector.select(self._next_timeout()):
                bmc = key.data
                if bmc is None:
                    self._drain_wake()
                else:
                    self._drain(bmc)
            self._run_due_timers()

    def shutdown(self) -> None:
        """Ask the loop to return. Safe from any thread and from a signal handler."""
        self._stopping.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    def close(self) -> None:
        for bmc in self.bmcs:
            bmc.close()
        self.bmcs = []
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        self._timers.clear()

    def start(self) -> BmcFleet:
        """Bind and serve from a daemon thread; returns once every socket is bound."""
        self.bind()
        self._thread = threading.Thread(target=self.serve_forever, name="lab-bmc-fleet", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self.shutdown()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.close()

    def __enter__(self) -> BmcFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- information ---------------------------------------------------------------------------------------

    def info(self) -> list[BmcInfo]:
        return [BmcInfo(name=bmc.machine.name, address=bmc.address, port=bmc.port, fault=bmc.fault.value,
                        serial=bmc.machine.fru.serial_number, macs=bmc.machine.mac_addresses,
                        uuid=str(bmc.machine.system_guid)) for bmc in self.bmcs]

    def __iter__(self) -> Iterator[VirtualBmc]:
        return iter(self.bmcs)

    def __getitem__(self, index: int) -> VirtualBmc:
        return self.bmcs[index]

    # --- loop internals ------------------------------------------------------------------------------------

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> None:
        with self._timer_lock:
            heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._timer_seq), callback))
        # Called from the loop thread in practice; a wake-up makes it safe from others too.
        if threading.current_thread() is not self._thread and self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"t")

    def _next_timeout(self) -> float:
        with self._timer_lock:
            if not self._timers:
                return 1.0  # bounded, so a missed wake-up costs at most a second
            return max(0.0, min(1.0, self._timers[0][0] - time.monotonic()))

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while True:
            with self._timer_lock:
                if not self._timers or self._timers[0][0] > now:
                    return
                _, _, callback = heapq.heappop(self._timers)
            try:
                callback()
            except Exception:
                log.exception("fleet timer failed")

    def _drain_wake(self) -> None:
        if self._wake_r is not None:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(512):
                    pass

    def _drain(self, bmc: VirtualBmc) -> None:
        drain(bmc)


# ============================================================================================================
# CLI
# ============================================================================================================


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bmc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--address-base", default="127.10.0.1", help="first loopback address")
    parser.add_argument("--port", type=int, default=16230, help="UDP port (0: any free port)")
    parser.add_argument("--consecutive-ports", action="store_true",
                        help="one address, ports --port, --port+1, ... instead of one address per BMC")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="secret")
    for fault in ("dead", "slow", "wrong-password", "lossy"):
        parser.add_argument(f"--{fault}", type=int, default=0, metavar="K", help=f"make the last K BMCs {fault}")
    parser.add_argument("--slow-seconds", type=float, default=1.0)
    parser.add_argument("--loss", type=float, default=0.5, help="fraction of datagrams a lossy BMC drops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-asf", action="store_true", help="do not answer ASF Presence Ping")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    faults = fault_plan(args.count, dead=args.dead, slow=args.slow, wrong_password=args.wrong_password,
                        lossy=args.lossy)
    fleet = BmcFleet(args.count, address_base=args.address_base, port=args.port,
                     consecutive_ports=args.consecutive_ports, user=args.user, password=args.password,
                     faults=faults, slow_s=args.slow_seconds, loss=args.loss, seed=args.seed,
                     answer_asf_ping=not args.no_asf)

    def _stop(signum: int, frame: FrameType | None) -> None:
        fleet.shutdown()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    fleet.bind()
    try:
        sys.stdout.write(json.dumps([member.as_json() for member in fleet.info()]) + "\n")
        sys.stdout.flush()
        fleet.serve_forever()
    finally:
        fleet.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
