"""A real IPMI BMC for tests: OpenIPMI's ``ipmi_sim`` on 127.0.0.1 and a free UDP port.

What the simulator is given (machine-notes §5a):

* ``lan.conf``: one LAN channel on loopback, user ``admin`` with admin rights, a system GUID, an
  SOL port, and a ``chassis_control`` script (without it, power and boot-device commands fail
  with "Invalid data field in request");
* ``sim.emu``: the BMC itself and FRU 0 with product manufacturer, name, part, serial and a MAC
  in a custom field, so inventory can be read back;
* ``chassis.sh``: keeps power and boot device in files (and logs every ``set``), so a test can
  cross-check what the driver did with ``ipmitool`` or by reading the files;
* a TCP server that stands in for the server's serial port: ipmi_sim connects to it, and bytes
  written with :meth:`IpmiSim.write_serial` come out over SOL.

The process is started with ``-n`` (no console on stdio) and stopped by its PID.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "admin"
PASSWORD = "s3cret-ipmi"
GUID = "a1234567-89ab-cdef-a123-456789abcdef"
FRU = {
    "manufacturer": "Ingot Labs",
    "product": "SimServer 9000",
    "part": "SS-9000",
    "version": "1.0",
    "serial": "SIM0001234",
    "asset": "asset-7",
    "mac": "52:54:00:aa:bb:01",
}

CHASSIS_SCRIPT = """#!/bin/sh
# Called by ipmi_sim: chassis.sh MC get power boot | chassis.sh MC set power 1 [boot pxe ...]
dir="$(dirname "$0")"
shift
op="$1"; shift
case "$op" in
get)
  for what in "$@"; do
    case "$what" in
      power) echo "power:$(cat "$dir/power")" ;;
      boot) echo "boot:$(cat "$dir/boot")" ;;
    esac
  done ;;
set)
  while [ $# -ge 2 ]; do
    echo "$1 $2" >> "$dir/chassis.log"
    case "$1" in
      power) echo "$2" > "$dir/power" ;;
      boot) echo "$2" > "$dir/boot" ;;
    esac
    shift 2
  done ;;
esac
"""


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fru_bytes(fields: dict[str, str]) -> bytes:
    """FRU 0 in IPMI Platform Management FRU format v1: a common header and a product area."""

    def text(value: str) -> bytes:
        raw = value.encode("ascii")
        return bytes([0xC0 | len(raw)]) + raw  # type/length byte: 8-bit ASCII, length

    area = bytearray([0x01, 0x00, 0x00])  # version, length (filled in below), language English
    for key in ("manufacturer", "product", "part", "version", "serial", "asset"):
        area += text(fields[key])
    area += text("")  # FRU file ID
    area += text(f"MAC: {fields['mac']}")  # custom field: pyghmi lists it under product_extra
    area += b"\xc1"  # end of fields
    while (len(area) + 1) % 8:
        area += b"\x00"
    area[1] = (len(area) + 1) // 8
    area.append((-sum(area)) & 0xFF)
    header = bytearray([0x01, 0, 0, 0, 1, 0, 0])  # product area at offset 1 * 8
    header.append((-sum(header)) & 0xFF)
    return bytes(header + area)


class SerialPort:
    """The "serial port" behind SOL: a TCP server ipmi_sim connects to."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        self._clients: list[socket.socket] = []
        self.received = bytearray()  # what the SOL client typed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ipmi-sim-serial", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                pass
            else:
                conn.settimeout(0.05)
                self._clients.append(conn)
            for conn in list(self._clients):
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    data = b""
                if data:
                    self.received += data
                else:
                    self._clients.remove(conn)
                    conn.close()

    def connected(self) -> bool:
        return bool(self._clients)

    def write(self, data: bytes) -> None:
        for conn in list(self._clients):
            conn.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._clients:
            conn.close()
        self._server.close()


class IpmiSim:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ingot-ipmisim-"))
        self.port = free_port()
        self.serial = SerialPort()
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        script = self.root / "chassis.sh"
        script.write_text(CHASSIS_SCRIPT)
        script.chmod(0o755)
        (self.root / "power").write_text("0\n")
        (self.root / "boot").write_text("none\n")  # ipmi_sim: "default" means the default hard drive
        (self.root / "state").mkdir()
        auths = "none md2 md5 straight"
        (self.root / "lan.conf").write_text(
            f'name "ingotsim"\n'
            f"set_working_mc 0x20\n"
            f"  startlan 1\n"
            f"    addr 127.0.0.1 {self.port}\n"
            f"    priv_limit admin\n"
            + "".join(f"    allowed_auths_{lvl} {auths}\n" for lvl in ("callback", "user", "operator", "admin"))
            + f"    guid {GUID.replace('-', '')}\n"
            f"  endlan\n"
            f'  chassis_control "{script} 0x20"\n'
            f'  sol "tcp:127.0.0.1:{self.serial.port}" 115200\n'
            f'user 1 true  ""      "test"   user  10 {auths}\n'
            f'user 2 true  "{USER}" "{PASSWORD}" admin 10 {auths}\n'
        )
        fru = fru_bytes(FRU)
        (self.root / "sim.emu").write_text(
            "mc_setbmc 0x20\n"
            "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n"
            f"mc_add_fru_data 0x20 0 {len(fru)} data {' '.join(f'0x{b:02x}' for b in fru)}\n"
            "sel_enable 0x20 1000 0x0a\n"
            "mc_enable 0x20\n"
        )

    def start(self) -> None:
        self._write_config()
        log = open(self.root / "ipmi_sim.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            ["ipmi_sim", "-c", str(self.root / "lan.conf"), "-f", str(self.root / "sim.emu"), "-n",
             "-s", str(self.root / "state")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        for _ in range(100):  # up to ~10 s
            if self.proc.poll() is not None:
                raise RuntimeError(f"ipmi_sim exited: {(self.root / 'ipmi_sim.log').read_text()}")
            if self.ipmitool("chassis", "power", "status", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("ipmi_sim did not answer within 10 s")

    def ipmitool(self, *args: str, check: bool = True, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        # -C 3: without it ipmitool probes cipher suites and every call takes 10 s (machine-notes §5a).
        return subprocess.run(
            ["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(self.port),
             "-U", USER, "-P", password, "-N", "1", "-R", "1", *args],
            capture_output=True, text=True, timeout=30, check=check,
        )

    def power_file(self) -> str:
        return (self.root / "power").read_text().strip()

    def boot_file(self) -> str:
        return (self.root / "boot").read_text().strip()

    def write_serial(self, text: str) -> None:
        """Write to the server's serial port: the text comes out of the SOL console."""
        deadline = time.monotonic() + 10
        while not self.serial.connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.serial.connected():
            raise RuntimeError("ipmi_sim never connected to the serial port")
        self.serial.write(text.encode())

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()  # ipmi_sim can take seconds to honour SIGTERM with SOL open
                try:
                    self.proc.wait(2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            self.serial.close()
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module", name="ipmi_sim")
def ipmi_sim_fixture() -> Iterator[IpmiSim]:
    """A running ipmi_sim for the test module (import this name into the module to use ``ipmi_sim``)."""
    sim = IpmiSim()
    try:
        sim.start()
        yield sim
    finally:
        sim.stop()
