"""Virtual BMCs for QEMU servers: ``python -m lab.vbmc CONFIG.json``.

One process runs one :class:`QemuBmc` (a :class:`lab.bmc.VirtualBmc`) per server, each on its own loopback
address and UDP port (inside a lab's namespace: its own management address), in front of a
:class:`lab.qemu.QemuMachine` it starts. Ingot (or ``ipmitool -I lanplus``)
then powers and boots the VMs exactly as it would real servers. It prints one JSON line per BMC when ready::

    {"name": "node-0", "address": "127.0.0.1", "port": 16230, "pid": 4242, "serial": "INGQEMU000000",
     "macs": ["52:54:01:00:00:00"], "uuid": "...", "qmp_socket": "/lab/node-0.qmp",
     "serial_log": "/lab/node-0.serial.log", "fault": "none", "memory_mb": 768, "disk_serial": "INGQEMU000000D0"}

(``pid`` is QEMU's, for the caller's bookkeeping.)
and serves until SIGTERM or SIGINT; then it closes the BMCs and stops its QEMUs by PID (QMP ``quit``, then
SIGTERM, then SIGKILL) and exits 0. If a server cannot start, the ones already started are stopped and it exits
1 with the reason on stderr. QEMU processes also get SIGTERM if this process dies (``PR_SET_PDEATHSIG``).

The config (validated; unknown keys are errors)::

    {
      "user": "admin", "password": "secret",          # defaults for every BMC
      "argv_prefix": ["ip", "netns", "exec", "lab0"],  # optional: how to run QEMU (taps live in that netns)
      "servers": [
        {"address": "127.0.0.1", "port": 0,            # 0: any free port (printed in the ready line)
         "user": "admin", "password": "secret",        # optional, per BMC
         "machine": {"name": "node-0", "index": 0, "taps": ["tap0"], "disk": "/lab/node-0.qcow2",
                     "firmware": "bios", "memory_mb": 512, "serial_log": "/lab/node-0.serial.log",
                     "qmp_socket": "/lab/node-0.qmp", "console_socket": "/lab/node-0.console"}}
      ]                                                # "machine": any lab.qemu.QemuSpec field
    }

Errors the server reports (QEMU refused, QEMU gone, a boot device the server does not have) are answered with
the IPMI completion code :class:`lab.qemu.MachineError` carries.

Serial over LAN (``ipmitool -I lanplus ... sol activate``) works for servers with a ``console_socket``: the BMC
connects to QEMU's serial chardev when the SOL payload is activated and carries the bytes both ways in SOL
packets (:class:`SolBridge`). Servers without one answer Activate Payload with 0x81 ("payload disabled").
pyghmi's own server console (``pyghmi.ipmi.console.ServerConsole``) is not used: it waits for each
acknowledgement inside pyghmi's global I/O thread, which the lab's BMCs deliberately do not run (lab/bmc.py),
so it would stall the loop. The bridge rides on pyghmi's session code (RMCP+ integrity and AES) and keeps its
own sequence numbers, acknowledgements and retransmissions, driven by this process's loop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lab.bmc import VirtualBmc, drain, require_safe_bind
from lab.qemu import MachineError, QemuMachine, QemuSpec, QemuStartError

log = logging.getLogger(__name__)

_RawHandler = Callable[[VirtualBmc, bytes], tuple[int, bytes]]


class _Loop(Protocol):
    def watch(self, sock: socket.socket, callback: Callable[[], None]) -> None: ...

    def unwatch(self, sock: socket.socket) -> None: ...


# ============================================================================================================
# Config
# ============================================================================================================


class ServerConfig(BaseModel):
    """One BMC and the server behind it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str = Field(default="127.0.0.1",
                         description="address the BMC binds: loopback, or any inside a lab's own namespace")
    port: int = Field(default=623, ge=0, le=65535, description="UDP port; 0 picks a free one")
    user: str | None = None
    password: str | None = Field(default=None, repr=False)
    machine: QemuSpec

    @field_validator("address")
    @classmethod
    def _safe_address(cls, value: str) -> str:
        require_safe_bind(value)
        return value


class VbmcConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str = "admin"
    password: str = Field(default="secret", repr=False)
    argv_prefix: tuple[str, ...] = ()
    servers: tuple[ServerConfig, ...] = Field(min_length=1)

    @field_validator("servers")
    @classmethod
    def _distinct(cls, servers: tuple[ServerConfig, ...]) -> tuple[ServerConfig, ...]:
        names = [s.machine.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError("server names must differ")
        endpoints = [(s.address, s.port) for s in servers if s.port]
        if len(set(endpoints)) != len(endpoints):
            raise ValueError("two BMCs on the same address and port")
        macs = [mac for s in servers for mac in s.machine.mac_addresses]
        if len(set(macs)) != len(macs):
            raise ValueError("MAC addresses must differ across servers")
        sockets = [sock for s in servers for sock in s.machine.sockets]
        if len(set(sockets)) != len(sockets):
            raise ValueError("each server needs its own QMP/console sockets")
        return servers

    @classmethod
    def load(cls, path: Path) -> VbmcConfig:
        """Read and validate ``path``. :raises ValueError: with every problem in the message."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            # Without the input values: they may hold passwords.
            problems = "; ".join(f"{'.'.join(str(part) for part in error['loc']) or '(file)'}: {error['msg']}"
                                 for error in exc.errors(include_url=False, include_input=False))
            raise ValueError(f"{path}: {problems}") from None


# ============================================================================================================
# BMC
# ============================================================================================================


def _guarded(handler: _RawHandler) -> _RawHandler:
    def run(bmc: VirtualBmc, data: bytes) -> tuple[int, bytes]:
        try:
            return handler(bmc, data)
        except MachineError as exc:
            log.warning("%r: %s (completion code 0x%02x)", bmc, exc, exc.completion_code)
            return exc.completion_code, b""

    return run


# SOL payload (IPMI v2.0 section 15.9): byte 0 packet sequence number (1-15, 0: ack-only), byte 1 the
# sequence number acknowledged, byte 2 how many characters of it were accepted, byte 3 operation/status.
SOL_PAYLOAD = 0x01
_SOL_NACK = 0x40  # status bit 6 (both directions): not all characters accepted
_SOL_DEACTIVATING = 0x10  # BMC-to-console status bit 4: "SOL deactivating"


@dataclass
class _Outstanding:
    seq: int
    size: int
    sent_at: float
    tries: int


class SolBridge:
    """One active SOL payload: SOL packets on one RMCP+ session <-> the server's serial console socket.

    Runs in the server loop's thread only (pyghmi calls :meth:`received` from the datagram it is handed, the loop
    calls :meth:`console_readable` and :meth:`tick`). Console output waits in a bounded buffer (the oldest bytes
    go first, as a real BMC's SOL buffer overruns) and leaves one packet at a time, resent until acknowledged.
    """

    CHUNK = 200  # characters per SOL packet (inbound and outbound payload size minus the 4 header bytes)
    RETRY_S = 1.0  # resend an unacknowledged packet after this long
    RETRIES = 5  # then give up: the console has gone away
    IDLE_S = 60.0  # nothing at all on its session for this long (ipmitool's keepalive is every 15 s): gone
    BUFFER = 64 * 1024

    def __init__(self, bmc: QemuBmc, session: Any, console: socket.socket) -> None:
        self.bmc = bmc
        self.session = session
        self.console = console
        self.closed = False
        self._pending = bytearray()
        self._outstanding: _Outstanding | None = None
        self._packet = b""
        self._seq = 0
        self._last_rx_seq: int | None = None
        self.last_heard = time.monotonic()
        session.sol_handler = self.received

    # --- from the console (ipmitool): keystrokes and acknowledgements ------------------------------------------

    def received(self, payload: Any) -> None:
        if self.closed or not isinstance(payload, (bytes, bytearray)) or len(payload) < 4:
            return  # pyghmi passes a dict on its own errors; nothing for us then
        self.last_heard = time.monotonic()
        seq, ack_seq, accepted, status = payload[0] & 0x0F, payload[1] & 0x0F, payload[2], payload[3]
        log.debug("%r: SOL in: seq %d ack %d accepted %d status 0x%02x, %d characters", self.bmc, seq, ack_seq,
                  accepted, status, len(payload) - 4)
        if seq:
            data = bytes(payload[4:])
            if seq != self._last_rx_seq and data:  # the same sequence number again is a retransmission
                try:
                    self.console.sendall(data)
                except OSError as exc:
                    log.warning("%r: SOL: the serial console refused input: %s", self.bmc, exc)
                    self.bmc.end_sol(notify=True)
                    return
            self._last_rx_seq = seq
            self._send(bytes([0, seq, len(data), 0]))
        outstanding = self._outstanding
        if ack_seq and outstanding is not None and ack_seq == outstanding.seq:
            taken = min(accepted, outstanding.size) if status & _SOL_NACK else outstanding.size
            del self._pending[:taken]
            self._outstanding = None
            if status & _SOL_NACK:
                log.debug("%r: SOL: console took %d of %d characters", self.bmc, taken, outstanding.size)
            self._send_next()

    # --- from the server: its serial output ------------------------------------------------------------------

    def console_readable(self) -> None:
        try:
            data = self.console.recv(4096)
        except BlockingIOError:
            return
        except OSError as exc:
            data = b""
            log.info("%r: SOL: serial console read failed: %s", self.bmc, exc)
        if not data:
            log.info("%r: SOL: the server's serial console closed", self.bmc)
            self.bmc.end_sol(notify=True)
            return
        self._pending += data
        overrun = len(self._pending) - self.BUFFER
        if overrun > 0 and self._outstanding is None:
            del self._pending[:overrun]
        self._send_next()

    def tick(self, now: float) -> None:
        outstanding = self._outstanding
        if outstanding is not None and now - outstanding.sent_at >= self.RETRY_S:
            if outstanding.tries >= self.RETRIES:
                log.info("%r: SOL: no acknowledgement after %d tries, deactivating", self.bmc, outstanding.tries)
                self.bmc.end_sol(notify=False)
                return
            outstanding.tries += 1
            outstanding.sent_at = now
            self._send(self._packet)
        elif now - self.last_heard > self.IDLE_S:
            log.info("%r: SOL: nothing from the console for %.0f s, deactivating", self.bmc, self.IDLE_S)
            self.bmc.end_sol(notify=False)

    def _send_next(self) -> None:
        if self._outstanding is not None or not self._pending:
            return
        chunk = bytes(self._pending[:self.CHUNK])
        self._seq = self._seq % 15 + 1  # 1..15; 0 means "no data"
        self._packet = bytes([self._seq, 0, 0, 0]) + chunk
        self._outstanding = _Outstanding(self._seq, len(chunk), time.monotonic(), 1)
        self._send(self._packet)

    def _send(self, packet: bytes) -> None:
        try:
            self.session.send_payload(bytearray(packet), payload_type=SOL_PAYLOAD, retry=False)
        except Exception as exc:  # a session pyghmi considers broken must not break the loop
            log.warning("%r: SOL: send failed: %s", self.bmc, exc)

    def close(self, notify: bool) -> None:
        if self.closed:
            return
        self.closed = True
        if notify:  # tell ipmitool, which then ends with "SOL session closed by BMC"
            self._seq = self._seq % 15 + 1
            self._send(bytes([self._seq, 0, 0, _SOL_DEACTIVATING]))
        if getattr(self.session, "sol_handler", None) == self.received:
            self.session.sol_handler = None
        with contextlib.suppress(OSError):
            self.console.close()


class QemuBmc(VirtualBmc):
    """A VirtualBmc whose machine may fail (a :class:`MachineError` becomes its completion code in the reply),
    with Serial over LAN when the server has a console socket.

    :param loop: registers and unregisters the SOL console socket with the serving loop (``VbmcServer``).
    """

    _RAW: dict[tuple[int, int], _RawHandler] = {key: _guarded(h) for key, h in VirtualBmc._RAW.items()}

    def __init__(self, machine: QemuMachine, *, loop: _Loop | None = None, **kwargs: Any) -> None:
        super().__init__(machine, **kwargs)
        self.qemu = machine
        self.loop = loop
        self.sol: SolBridge | None = None

    def _guard(self, action: Callable[[], None]) -> int:
        try:
            action()
        except MachineError as exc:
            log.warning("%r: %s (completion code 0x%02x)", self, exc, exc.completion_code)
            return exc.completion_code
        return 0

    # pyghmi's chassis control sends whatever these return as the completion code.
    def power_on(self) -> int:  # type: ignore[override]
        return self._guard(self.machine.power_on)

    def power_off(self) -> int:  # type: ignore[override]
        return self._guard(self.machine.power_off)

    def power_reset(self) -> int:  # type: ignore[override]
        return self._guard(self.machine.reset)

    def power_cycle(self) -> int:  # type: ignore[override]
        return self._guard(self.machine.cycle)

    def power_shutdown(self) -> int:  # type: ignore[override]
        return self._guard(self.machine.shutdown)

    def get_chassis_status(self, session: Any) -> None:
        try:
            state = self.get_power_state()
        except MachineError as exc:
            log.warning("%r: %s (completion code 0x%02x)", self, exc, exc.completion_code)
            session.send_ipmi_response(code=exc.completion_code)
            return
        # Current power state (bit 0), last power event, misc chassis state: as pyghmi answers.
        session.send_ipmi_response(data=[1 if state == "on" else 0, 0, 0])

    # --- Serial over LAN ---------------------------------------------------------------------------------------

    def activate_payload(self, request: Any, session: Any) -> None:
        data = bytes(request.get("data", b""))
        if len(data) < 2 or data[0] & 0x3F != SOL_PAYLOAD or data[1] != 1:
            session.send_ipmi_response(code=0xCC)  # only SOL, instance 1
            return
        path = self.qemu.spec.console_socket
        if path is None or self.loop is None:
            session.send_ipmi_response(code=0x81)  # payload disabled: this server has no console socket
            return
        if self.sol is not None:
            if time.monotonic() - self.sol.last_heard <= SolBridge.IDLE_S or self.sol.session is session:
                session.send_ipmi_response(code=0x80)  # already active on another (live) session
                return
            self.end_sol(notify=False)  # its console went away without deactivating: take over
        console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            console.settimeout(2.0)
            console.connect(str(path))
            console.setblocking(False)
        except OSError as exc:
            console.close()
            log.warning("%r: SOL: cannot reach the serial console %s: %s", self, path, exc)
            session.send_ipmi_response(code=0xD5)  # not in the present state (QEMU is not up)
            return
        self.sol = SolBridge(self, session, console)
        self.loop.watch(console, self.sol.console_readable)
        size = (SolBridge.CHUNK + 4).to_bytes(2, "little")
        # Auxiliary data (4), inbound and outbound payload size, the UDP port SOL uses (this one), VLAN (none).
        session.send_ipmi_response(data=list(bytes(4) + size + size + self.port.to_bytes(2, "little")
                                             + b"\xff\xff"))
        log.info("%r: SOL activated", self)

    def deactivate_payload(self, request: Any, session: Any) -> None:
        if self.sol is None:
            session.send_ipmi_response(code=0x80)  # payload already deactivated
            return
        session.send_ipmi_response()
        self.end_sol(notify=False)

    def end_sol(self, *, notify: bool) -> None:
        sol, self.sol = self.sol, None
        if sol is None:
            return
        if self.loop is not None:
            self.loop.unwatch(sol.console)
        sol.close(notify)
        log.info("%r: SOL deactivated", self)

    def handle_raw_request(self, request: dict[str, Any], session: Any) -> None:
        if self.sol is not None and session is self.sol.session:
            self.sol.last_heard = time.monotonic()  # ipmitool's keepalive is a Get Device ID every 15 s
        super().handle_raw_request(request, session)

    def _payload_activation_status(self, data: bytes) -> tuple[int, bytes]:
        if not data or data[0] & 0x3F != SOL_PAYLOAD:
            return 0xCC, b""
        # Instance capacity 1; bitmap of the active instances.
        return 0, bytes([1, 1 if self.sol is not None else 0, 0])

    def tick(self, now: float) -> None:
        if self.sol is not None:
            self.sol.tick(now)

    def close(self) -> None:
        self.end_sol(notify=True)
        super().close()

    _RAW[(0x06, 0x4A)] = _payload_activation_status


# ============================================================================================================
# Server
# ============================================================================================================


class VbmcServer:
    """The machines and BMCs of one config, served from one thread.

    :meth:`start` starts every QEMU (off) and binds every BMC; :meth:`serve_forever` runs the loop until
    :meth:`shutdown` (safe from signal handlers and other threads); :meth:`close` stops everything.
    """

    def __init__(self, config: VbmcConfig, *, machine_factory: Callable[[QemuSpec], QemuMachine] | None = None
                 ) -> None:
        self.config = config
        self._factory = machine_factory or (lambda spec: QemuMachine(spec, argv_prefix=config.argv_prefix))
        self.machines: list[QemuMachine] = []
        self.bmcs: list[QemuBmc] = []
        self._selector: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = threading.Event()

    def start(self) -> None:
        """Start every server (off) and bind every BMC. On failure closes what it opened and re-raises."""
        try:
            for server in self.config.servers:
                machine = self._factory(server.machine)
                machine.start()
                self.machines.append(machine)
            selector = selectors.DefaultSelector()
            self._selector = selector
            selector.register(self._wake_r, selectors.EVENT_READ, None)
            for server, machine in zip(self.config.servers, self.machines, strict=True):
                users = {server.user or self.config.user: server.password or self.config.password}
                bmc = QemuBmc(machine, loop=self, address=server.address, port=server.port, users=users)
                self.bmcs.append(bmc)
                selector.register(bmc.serversocket.sock, selectors.EVENT_READ, bmc)
        except BaseException:
            self.close()
            raise

    def info(self) -> list[dict[str, Any]]:
        """One JSON-able object per BMC: what a test or the e2e needs to reach it and its server."""
        result = []
        for bmc, machine in zip(self.bmcs, self.machines, strict=False):
            result.append({"name": machine.name, "address": bmc.address, "port": bmc.port, "pid": machine.pid,
                           "serial": machine.fru.serial_number, "macs": list(machine.mac_addresses),
                           "uuid": str(machine.system_guid), "qmp_socket": str(machine.spec.qmp_socket),
                           "serial_log": str(machine.spec.serial_log), "fault": bmc.fault.value,
                           "memory_mb": machine.spec.memory_mb,
                           "disk_serial": machine.spec.disk_serial if machine.spec.has_disk else None})
        return result

    def serve_forever(self) -> None:
        selector = self._selector
        if selector is None:
            raise RuntimeError("start() the server first")
        while not self._stopping.is_set():
            # Bounded waits: a missed wake-up costs at most a second; SOL retransmissions need a finer tick.
            timeout = 0.2 if any(bmc.sol is not None for bmc in self.bmcs) else 1.0
            for key, _ in selector.select(timeout):
                target = key.data
                if target is None:
                    with contextlib.suppress(OSError):
                        while self._wake_r.recv(512):
                            pass
                elif isinstance(target, QemuBmc):
                    drain(target)
                else:
                    try:
                        target()
                    except Exception:
                        log.exception("console callback failed")
            now = time.monotonic()
            for bmc in self.bmcs:
                try:
                    bmc.tick(now)
                except Exception:
                    log.exception("%r: tick failed", bmc)

    def watch(self, sock: socket.socket, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the loop's thread) whenever ``sock`` is readable."""
        if self._selector is not None:
            self._selector.register(sock, selectors.EVENT_READ, callback)

    def unwatch(self, sock: socket.socket) -> None:
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)

    def shutdown(self) -> None:
        """Ask :meth:`serve_forever` to return. Safe from any thread and from a signal handler."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        """Close the BMCs, then stop every QEMU by its PID. Idempotent."""
        for bmc in self.bmcs:
            bmc.close()  # ends an active SOL session first, telling its console
        self.bmcs = []
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for machine in reversed(self.machines):
            try:
                code = machine.close()
                log.info("%s: QEMU stopped (exit %s)", machine.name, code)
            except Exception:
                log.exception("%s: stopping QEMU failed", machine.name)
        self.machines = []
        for sock in (self._wake_r, self._wake_w):
            sock.close()


# ============================================================================================================
# CLI
# ============================================================================================================


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.vbmc", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="JSON file: see the module docstring")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = VbmcConfig.load(args.config)
    except (OSError, ValueError) as exc:
        print(f"lab.vbmc: bad config: {exc}", file=sys.stderr)
        return 2
    server = VbmcServer(config)

    def _stop(signum: int, frame: FrameType | None) -> None:
        server.shutdown()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server.start()
    except (QemuStartError, OSError, ValueError, MachineError) as exc:
        print(f"lab.vbmc: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        for line in server.info():
            sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        server.serve_forever()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
