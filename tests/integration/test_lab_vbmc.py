"""The emulated rack's virtual BMCs against real QEMU, driven by Debian's ipmitool on loopback.

``python -m lab.vbmc`` runs two BMCs in front of two BIOS servers (QEMU, ``-accel tcg``) without network:
node-0 has a NIC with no tap behind it, a blank qcow2 disk and a serial console socket (for Serial over
LAN), node-1 a NIC and no disk (and its own password). Every IPMI request must show in QEMU's own state,
read over a second QMP socket (the BMC holds the first): ``query-status`` for power, ``qom-get ...
bootindex`` for the persistent boot order, ``query-uuid`` and QEMU's command line for identity, and SeaBIOS's
debug console (the ``boot order:`` it prints at each POST) for the order the firmware actually used. Servers
stay off between tests, so the VMs are paused most of the time.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from appliance.drivers.types import BootDevice, BootSetting, PowerState
from lab.qemu import OVMF_CODE, QemuMachine, QemuSpec, boot_order, qemu_argv
from lab.qmp import QmpClient
from lab.vbmc import VbmcConfig
from tests.support.requirements import require_files, require_tools

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _installed() -> None:
    require_tools("qemu-system-x86_64", "ipmitool", "qemu-img")

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD, NODE1_PASSWORD = "admin", "secret", "other-secret"
READY_TIMEOUT_S = 60
BOOT_TIMEOUT_S = 60  # SeaBIOS prints its boot order about a second after a start under TCG


@dataclass
class Node:
    name: str
    address: str
    port: int
    pid: int
    password: str
    info: dict[str, Any]
    observer: QmpClient
    firmware_log: Path

    def qmp(self, command: str, **arguments: Any) -> Any:
        return self.observer.execute(command, arguments, timeout=10)

    def status(self) -> str:
        return str(self.qmp("query-status")["status"])

    def bootindex(self, device: str) -> int:
        return int(self.qmp("qom-get", path=f"/machine/peripheral/{device}", property="bootindex"))

    def boots(self) -> list[list[str]]:
        """The boot order SeaBIOS was given at each POST so far, oldest first."""
        text = self.firmware_log.read_text(errors="replace") if self.firmware_log.is_file() else ""
        return [re.findall(r"^\d+: (\S+)", block, re.M)
                for block in re.findall(r"^boot order:\n((?:\d+: .*\n)+)", text, re.M)]

    def wait_boots(self, count: int) -> list[list[str]]:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            boots = self.boots()
            if len(boots) >= count:
                return boots
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: {count} boots expected, the firmware log shows {self.boots()}")


@dataclass
class Lab:
    proc: subprocess.Popen[str]
    nodes: dict[str, Node]
    work: Path
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]


def ipmitool(node: Node, *args: str, password: str | None = None, timeout_s: int = 2,
             retries: int = 3) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ipmitool", "-I", "lanplus", "-C", "3", "-H", node.address, "-p", str(node.port), "-U", USER,
         "-P", password or node.password, "-N", str(timeout_s), "-R", str(retries), *args],
        capture_output=True, text=True, timeout=60, check=False)


def ok(node: Node, *args: str) -> str:
    result = ipmitool(node, *args)
    assert result.returncode == 0, f"ipmitool {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def is_nic(device_path: str) -> bool:
    return "/ethernet@" in device_path


def is_disk(device_path: str) -> bool:
    return "/disk@" in device_path


def read_ready_lines(proc: subprocess.Popen[str], count: int, timeout: float) -> list[dict[str, Any]]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for _ in range(count):
            lines.put(proc.stdout.readline() or None)

    threading.Thread(target=pump, daemon=True).start()
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"lab.vbmc printed {len(found)} of {count} ready lines in {timeout} s") from None
        if line is None:
            raise AssertionError(f"lab.vbmc ended before it was ready (exit {proc.wait(10)})")
        found.append(json.loads(line))
    return found


def pid_alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_lab(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    """SIGTERM to lab.vbmc by its PID, SIGKILL if it does not end; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def write_config(work: Path, servers: list[dict[str, Any]]) -> Path:
    path = work / "vbmc.json"
    path.write_text(json.dumps({"user": USER, "password": PASSWORD, "servers": servers}, indent=2))
    return path


def machine(work: Path, name: str, index: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "index": index, "memory_mb": 128, "serial_log": str(work / f"{name}.serial.log"),
            "qmp_socket": str(work / f"{name}.qmp"), "monitor_sockets": [str(work / f"{name}.obs")],
            "firmware_log": str(work / f"{name}.fw.log"), **extra}


@pytest.fixture(scope="module")
def work_dir(artifacts_dir: Path) -> Iterator[Path]:
    # Short: UNIX socket paths must stay under 108 bytes, and pytest's tmp_path may not.
    work = Path(tempfile.mkdtemp(prefix="vbmc", dir="/tmp"))
    try:
        yield work
    finally:
        keep = artifacts_dir / "lab-vbmc"
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True)
        for log in work.glob("*.log"):
            shutil.copyfile(log, keep / log.name)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(work_dir: Path) -> Iterator[Lab]:
    disk = work_dir / "node-0.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True, timeout=60)
    config = write_config(work_dir, [
        {"address": "127.0.0.1", "port": 0, "machine": machine(work_dir, "node-0", 0, disk=str(disk),
                                                                console_socket=str(work_dir / "node-0.con"))},
        {"address": "127.0.0.1", "port": 0, "password": NODE1_PASSWORD, "machine": machine(work_dir, "node-1", 1)},
    ])
    stderr_path = work_dir / "vbmc.stderr.log"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "lab.vbmc", str(config), "--log-level", "INFO"], cwd=REPO,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True)
    observers: list[QmpClient] = []
    try:
        ready = read_ready_lines(proc, 2, READY_TIMEOUT_S)
        nodes = {}
        for info in ready:
            observer = QmpClient(work_dir / f"{info['name']}.obs", timeout=10)
            observer.connect()
            observers.append(observer)
            nodes[info["name"]] = Node(
                name=info["name"], address=info["address"], port=info["port"], pid=info["pid"],
                password=NODE1_PASSWORD if info["name"] == "node-1" else PASSWORD, info=info, observer=observer,
                firmware_log=work_dir / f"{info['name']}.fw.log")
        yield Lab(proc, nodes, work_dir, stderr_path)
    finally:
        for observer in observers:
            observer.close()
        stop_lab(proc)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def node0(lab: Lab) -> Iterator[Node]:
    node = lab.nodes["node-0"]
    yield node
    # Leave it off, without an override, for the next test.
    ipmitool(node, "power", "off")
    ipmitool(node, "chassis", "bootdev", "none")


def test_ready_lines_name_each_bmc_and_its_qemu(lab: Lab) -> None:
    assert set(lab.nodes) == {"node-0", "node-1"}
    node0, node1 = lab.nodes["node-0"], lab.nodes["node-1"]
    assert node0.port != node1.port and node0.port > 0 and node1.port > 0
    for node in (node0, node1):
        assert pid_alive(node.pid), f"{node.name}: QEMU pid {node.pid} not running"
        assert node.qmp("query-uuid")["UUID"] == node.info["uuid"]
        assert node.status() == "prelaunch", "a server starts off: QEMU paused before its first instruction"
    assert node0.info["macs"] != node1.info["macs"]


def test_power_status_is_off_at_start(lab: Lab) -> None:
    for node in lab.nodes.values():
        assert "Chassis Power is off" in ok(node, "power", "status")
        assert "System Power         : off" in ok(node, "chassis", "status")


def test_persistent_pxe_then_power_on_and_off(node0: Node) -> None:
    boots_before = len(node0.boots())
    ok(node0, "chassis", "bootdev", "pxe", "options=persistent")
    assert node0.bootindex("nic0") < node0.bootindex("disk0"), "the override reaches QEMU at once"
    assert "Chassis Power Control: Up/On" in ok(node0, "power", "on")
    assert node0.status() == "running"
    assert node0.qmp("query-status")["running"] is True
    assert "Chassis Power is on" in ok(node0, "power", "status")
    assert "System Power         : on" in ok(node0, "chassis", "status")
    boots = node0.wait_boots(boots_before + 1)
    assert is_nic(boots[-1][0]) and is_disk(boots[-1][1]), f"firmware boot order {boots[-1]}"
    assert node0.bootindex("nic0") == 1 and node0.bootindex("disk0") == 2, "persistent: it stays"
    params = ok(node0, "chassis", "bootparam", "get", "5")
    assert "Force PXE" in params and "Options apply to all future boots" in params

    assert "Chassis Power Control: Down/Off" in ok(node0, "power", "off")
    assert node0.status() != "running"
    assert node0.qmp("query-status")["running"] is False
    assert "Chassis Power is off" in ok(node0, "power", "status")


def test_one_time_pxe_is_used_by_the_next_start_only(node0: Node) -> None:
    boots_before = len(node0.boots())
    ok(node0, "chassis", "bootdev", "pxe")
    assert "Options apply to only next boot" in ok(node0, "chassis", "bootparam", "get", "5")
    ok(node0, "power", "on")
    assert node0.status() == "running"
    boots = node0.wait_boots(boots_before + 1)
    assert is_nic(boots[-1][0]), f"the one-time override was not used: {boots[-1]}"
    assert "No override" in ok(node0, "chassis", "bootparam", "get", "5"), "consumed by the start"
    # QEMU gets the default order (disk first) back once the firmware has its own.
    deadline = time.monotonic() + 40  # at the firmware's reset, or FIRMWARE_RESET_GRACE_S after the start
    while node0.bootindex("disk0") != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert node0.bootindex("disk0") == 1 and node0.bootindex("nic0") == 2

    ok(node0, "power", "cycle")
    assert node0.status() == "running"
    boots = node0.wait_boots(boots_before + 2)
    assert is_disk(boots[-1][0]), f"the start after the one-time boot must use the default order: {boots[-1]}"


def test_reset_and_cycle_restart_the_firmware(node0: Node) -> None:
    ok(node0, "power", "reset")
    assert node0.status() == "prelaunch", "a reset of a server that is off does nothing"
    boots_before = len(node0.boots())
    ok(node0, "power", "on")
    node0.wait_boots(boots_before + 1)
    ok(node0, "chassis", "bootdev", "pxe")
    assert "Chassis Power Control: Reset" in ok(node0, "power", "reset")
    assert node0.status() == "running"
    boots = node0.wait_boots(boots_before + 2)
    assert is_nic(boots[-1][0]), f"a reset is a start: it honours the one-time override ({boots[-1]})"
    assert "Chassis Power Control: Cycle" in ok(node0, "power", "cycle")
    assert node0.status() == "running"
    boots = node0.wait_boots(boots_before + 3)
    assert is_disk(boots[-1][0]), boots[-1]
    assert node0.qmp("query-uuid")["UUID"] == node0.info["uuid"]


def test_soft_off_presses_the_acpi_power_button(node0: Node) -> None:
    ok(node0, "power", "on")
    node0.observer.take_events()
    assert "Chassis Power Control: Soft" in ok(node0, "power", "soft")
    assert node0.observer.wait_event("POWERDOWN", timeout=10)["event"] == "POWERDOWN"
    # Only firmware runs, and it ignores the button: the server stays on, as a real one would.
    assert node0.status() == "running"


def test_fru_guid_and_chassis_status_match_the_vm(lab: Lab) -> None:
    for node in lab.nodes.values():
        fru = ipmitool(node, "fru", "print").stdout  # exits 1 after FRU 0: there is no SDR repository to walk
        cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
        smbios = next(arg.decode() for arg in cmdline if arg.startswith(b"type=1,"))
        fields = dict(item.split("=", 1) for item in smbios.split(","))
        assert f"Product Serial        : {fields['serial']}" in fru
        assert f"Product Name          : {fields['product']}" in fru
        assert f"Product Manufacturer  : {fields['manufacturer']}" in fru
        assert fields["serial"] == node.info["serial"]
        for mac in node.info["macs"]:
            assert f"Product Extra         : {mac}" in fru
        guid = ok(node, "mc", "guid")
        vm_uuid = node.qmp("query-uuid")["UUID"]
        assert re.search(rf"System GUID\s*:\s*{vm_uuid}", guid), guid
        power = "on" if node.qmp("query-status")["running"] else "off"
        assert f"System Power         : {power}" in ok(node, "chassis", "status")


class SolConsole:
    """``ipmitool sol activate`` on a pseudo-terminal (it wants one for raw mode), read and typed into."""

    def __init__(self, node: Node) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.output = b""
        try:
            self.proc = subprocess.Popen(
                ["ipmitool", "-I", "lanplus", "-C", "3", "-H", node.address, "-p", str(node.port), "-U", USER,
                 "-P", node.password, "-N", "2", "-R", "3", "sol", "activate"],
                stdin=slave, stdout=slave, stderr=slave, close_fds=True)
        finally:
            os.close(slave)

    def expect(self, pattern: bytes, timeout: float) -> bool:
        """Read until ``pattern`` shows up in all output so far (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([self.master], [], [], min(0.1, remaining))
            if readable:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # ipmitool exited and the pty is gone
                    return bool(re.search(pattern, self.output))
                self.output += chunk
        return True

    def type(self, text: bytes) -> None:
        # One key at a time: the firmware's console keeps only ~16 keys (SeaBIOS's keyboard buffer).
        for key in text:
            os.write(self.master, bytes([key]))
            time.sleep(0.05)

    def close(self) -> int:
        """``~.`` (ipmitool's escape: deactivate and quit); killed by PID if it does not end."""
        with contextlib.suppress(OSError):
            os.write(self.master, b"\r~.")
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        os.close(self.master)
        return code


def sol_active(node: Node) -> bool:
    # Get Payload Activation Status (netfn 6, cmd 0x4a) for SOL: capacity, then the active-instance bitmap.
    answer = ok(node, "raw", "0x06", "0x4a", "0x01").split()
    assert answer[0] == "01", answer
    return answer[1] == "01"


def test_serial_over_lan_carries_the_console_both_ways(node0: Node) -> None:
    ok(node0, "chassis", "bootdev", "pxe", "options=persistent")  # iPXE's ROM runs: it has a command line
    console = SolConsole(node0)
    try:
        assert console.expect(rb"SOL Session operational", 20), console.output
        assert sol_active(node0)
        second = ipmitool(node0, "sol", "activate")
        assert "already active" in second.stderr + second.stdout, second.stderr

        ok(node0, "power", "on")
        assert console.expect(rb"SeaBIOS", BOOT_TIMEOUT_S), "the firmware's console did not reach SOL"
        # Ctrl-B within iPXE's 2 s prompt opens its shell; a busy machine may miss it, so retry with a reset.
        for _ in range(3):
            if console.expect(rb"Press Ctrl-B for the iPXE command line", BOOT_TIMEOUT_S):
                console.type(b"\x02")
                if console.expect(rb"iPXE> ", 10):
                    break
            console.output = b""
            ok(node0, "power", "reset")
        else:
            raise AssertionError(f"no iPXE prompt over SOL: {console.output[-2000:]!r}")
        console.type(b"echo ${platform}-sol\r")  # iPXE's answer ("pcbios-sol") is not what was typed
        assert console.expect(rb"pcbios-sol", 10), console.output[-2000:]
    finally:
        code = console.close()
    assert code == 0, console.output[-2000:]
    assert not sol_active(node0), "~. deactivates the payload"
    assert "pcbios-sol" in (node0.firmware_log.parent / "node-0.serial.log").read_text(errors="replace"), \
        "the serial log keeps the console while SOL is attached"


def test_serial_over_lan_needs_a_console_socket(lab: Lab) -> None:
    refused = ipmitool(lab.nodes["node-1"], "sol", "activate")
    assert refused.returncode != 0 and "SOL payload disabled" in refused.stderr, refused.stdout + refused.stderr


def test_wrong_password_is_refused(lab: Lab) -> None:
    node1 = lab.nodes["node-1"]
    refused = ipmitool(node1, "power", "status", password=PASSWORD)  # node-0's password, not node-1's
    assert refused.returncode != 0 and "Chassis Power" not in refused.stdout
    assert "Chassis Power is off" in ok(node1, "power", "status")


def test_a_boot_device_the_server_lacks_gets_a_completion_code(lab: Lab) -> None:
    node1 = lab.nodes["node-1"]
    refused = ipmitool(node1, "chassis", "bootdev", "cdrom")
    assert "Invalid data field in request" in refused.stderr, refused.stdout + refused.stderr
    assert "No override" in ok(node1, "chassis", "bootparam", "get", "5"), "nothing changed"


def test_diskless_server_netboots_first(lab: Lab) -> None:
    node1 = lab.nodes["node-1"]
    boots_before = len(node1.boots())
    try:
        ok(node1, "power", "on")
        boots = node1.wait_boots(boots_before + 1)
        assert len(boots[-1]) == 1 and is_nic(boots[-1][0])
    finally:
        ok(node1, "power", "off")
    assert node1.status() == "prelaunch"


def test_a_vanished_qemu_is_an_error_not_a_power_state(lab: Lab) -> None:
    """Runs last on node-1: its QEMU is killed (by PID, a child of the lab we started)."""
    node1 = lab.nodes["node-1"]
    os.kill(node1.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(node1.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    # Completion code 0xD3, "destination unavailable": the BMC is up, the server behind it is not.
    status = ipmitool(node1, "power", "status")
    assert "Chassis Power is" not in status.stdout, status.stdout
    assert "Destination unavailable" in status.stderr, status.stdout + status.stderr
    control = ipmitool(node1, "power", "on")
    assert "Destination unavailable" in control.stderr, control.stdout + control.stderr
    assert "Chassis Power is off" in ok(lab.nodes["node-0"], "power", "status"), "the other BMC carries on"


def test_sigterm_stops_the_bmcs_and_their_qemus(lab: Lab) -> None:
    pids = [node.pid for node in lab.nodes.values()]
    for node in lab.nodes.values():
        node.observer.close()
    assert stop_lab(lab.proc) == 0, lab.stderr()
    for pid in pids:
        assert not pid_alive(pid), f"QEMU pid {pid} outlived lab.vbmc"
    assert not list(lab.work.glob("*.qmp")) and not list(lab.work.glob("*.obs")), "sockets left behind"
    gone = ipmitool(lab.nodes["node-0"], "power", "status", timeout_s=1, retries=1)
    assert gone.returncode != 0 and "Chassis Power" not in gone.stdout


def test_a_killed_lab_leaves_no_qemu_behind(work_dir: Path) -> None:
    sub = work_dir / "killed"
    sub.mkdir()
    config = write_config(sub, [{"port": 0, "machine": machine(sub, "orphan", 11)}])
    proc = subprocess.Popen([sys.executable, "-m", "lab.vbmc", str(config)], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        [ready] = read_ready_lines(proc, 1, READY_TIMEOUT_S)
        assert pid_alive(ready["pid"])
        proc.kill()  # no chance to clean up: PR_SET_PDEATHSIG must take QEMU down
        proc.wait(10)
        deadline = time.monotonic() + 15
        while pid_alive(ready["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(ready["pid"]), f"QEMU {ready['pid']} outlived its killed lab"
    finally:
        stop_lab(proc)
        if proc.stdout is not None:
            proc.stdout.close()


# --- UEFI, through the Python API ------------------------------------------------------------------------------

UEFI_FIRST_BOOT = re.compile(r'>>Start PXE over IPv4|BdsDxe: (?:failed to load|loading) Boot\d+ "[^"]*"')


def first_uefi_boot_option(serial_log: Path, offset: int) -> str:
    """What OVMF tried first after ``offset`` in the console log: its own PXE client, or the disk."""
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        text = serial_log.read_bytes()[offset:].decode(errors="replace") if serial_log.is_file() else ""
        if found := UEFI_FIRST_BOOT.search(text):
            return found.group(0)
        time.sleep(0.2)
    raise AssertionError(f"OVMF tried no boot option within {BOOT_TIMEOUT_S} s: {serial_log.read_text()[-2000:]}")


def test_uefi_server_follows_the_boot_override(work_dir: Path) -> None:
    require_files(OVMF_CODE)  # Debian ovmf
    disk = work_dir / "uefi.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True, timeout=60)
    serial_log = work_dir / "uefi.serial.log"
    machine = QemuMachine.from_spec({"name": "uefi-0", "index": 9, "firmware": "uefi", "disk": str(disk),
                                     "memory_mb": 256, "serial_log": str(serial_log),
                                     "qmp_socket": str(work_dir / "uefi.qmp")})
    with machine:
        assert machine.pid is not None and pid_alive(machine.pid)
        before = machine.power_state
        assert machine.spec.uefi_vars_path.is_file(), "a private copy of the OVMF variable store"

        machine.set_boot(BootSetting(BootDevice.PXE))
        offset = serial_log.stat().st_size if serial_log.is_file() else 0
        machine.power_on()
        assert (before, machine.power_state) == (PowerState.OFF, PowerState.ON)
        assert first_uefi_boot_option(serial_log, offset) == ">>Start PXE over IPv4", "OVMF's own PXE (romfile=)"
        assert machine.boot == BootSetting(BootDevice.NONE)

        offset = serial_log.stat().st_size
        machine.cycle()
        assert "UEFI Misc Device" in first_uefi_boot_option(serial_log, offset), "back to the disk first"
        deadline = time.monotonic() + 40  # at the firmware's reset, or FIRMWARE_RESET_GRACE_S after the start
        while machine.bootindex() != {"disk0": 1, "nic0": 2} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert machine.bootindex() == {"disk0": 1, "nic0": 2}
        pid = machine.pid
    assert pid is not None and machine.pid is None and not pid_alive(pid)


# --- without QEMU running ------------------------------------------------------------------------------------


def run_vbmc(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.vbmc", str(config)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_bad_config_is_refused_with_the_reason(work_dir: Path) -> None:
    config = work_dir / "bad.json"
    config.write_text(json.dumps({"servers": [{"address": "10.0.0.1", "port": 623, "machine": {
        "name": "x", "index": 0, "serial_log": "/tmp/x.log", "qmp_socket": "/tmp/x.qmp", "colour": "blue"}}]}))
    result = run_vbmc(config)
    assert result.returncode == 2
    assert "loopback" in result.stderr and "colour" in result.stderr


def test_a_server_that_cannot_start_stops_the_others(work_dir: Path) -> None:
    sub = work_dir / "fail"
    sub.mkdir()
    config = write_config(sub, [
        {"port": 0, "machine": machine(sub, "ok", 7)},
        {"port": 0, "machine": machine(sub, "broken", 8, disk=str(sub / "missing.qcow2"))},
    ])
    result = run_vbmc(config)
    assert result.returncode == 1
    assert "missing.qcow2" in result.stderr
    assert result.stdout == "", "no ready line when not every server is up"
    assert (sub / "ok.serial.qemu.log").is_file(), "the first server had started"
    assert not list(sub.glob("*.qmp")), "and was stopped again"


def test_spec_and_command_line() -> None:
    spec = QemuSpec.model_validate({"name": "n", "index": 5, "taps": ["tap0", "tap1"], "disk": "/d.qcow2",
                                    "serial_log": "/s.log", "qmp_socket": "/q.sock", "serial_number": "SN,1"})
    assert spec.mac_addresses == ("52:54:01:00:00:50", "52:54:01:00:00:51")
    argv = qemu_argv(spec)
    assert argv[:2] == ["qemu-system-x86_64", "-name"] and "-S" in argv and "-no-shutdown" in argv
    assert "-accel" in argv and argv[argv.index("-accel") + 1] == "tcg"
    devices = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-device"]
    assert "virtio-net-pci,id=nic0,mac=52:54:01:00:00:50,netdev=net0,bootindex=2" in devices
    assert "virtio-net-pci,id=nic1,mac=52:54:01:00:00:51,netdev=net1,bootindex=3" in devices
    assert "virtio-blk-pci,id=disk0,drive=disk0-format,serial=SN,,1D0,bootindex=1" in devices  # commas doubled
    assert any("serial=SN,,1" in arg for arg in argv), "commas in option values are doubled"
    assert boot_order(spec, BootDevice.PXE) == ["nic0", "nic1", "disk0"]
    assert boot_order(spec, BootDevice.NONE) == ["disk0", "nic0", "nic1"]
    one_shot = qemu_argv(spec, standby=False)
    assert "-no-reboot" in one_shot and "-S" not in one_shot


@pytest.mark.parametrize(("change", "message"), [
    ({"macs": ["52:54:01:00:00:01", "52:54:01:00:00:01"]}, "must differ"),
    ({"macs": ["53:54:01:00:00:01"]}, "multicast"),
    ({"taps": ["a,b"]}, "tap name"),
    ({"macs": [], "taps": ["tap0"]}, "1 taps for 0 NICs"),
    ({"qmp_socket": "/" + "x" * 120}, "longer than a UNIX socket address"),
    ({"firmware": "coreboot"}, "firmware"),
])
def test_spec_refuses_bad_input(change: dict[str, Any], message: str) -> None:
    base = {"name": "n", "index": 1, "serial_log": "/s.log", "qmp_socket": "/q.sock"}
    with pytest.raises(ValidationError, match=message):
        QemuSpec.model_validate({**base, **change})


def test_config_refuses_clashing_servers() -> None:
    def server(name: str, index: int, port: int) -> dict[str, Any]:
        return {"port": port, "machine": {"name": name, "index": index, "serial_log": f"/{name}.log",
                                          "qmp_socket": f"/{name}.qmp"}}

    with pytest.raises(ValidationError, match="same address and port"):
        VbmcConfig.model_validate({"servers": [server("a", 1, 700), server("b", 2, 700)]})
    with pytest.raises(ValidationError, match="names must differ"):
        VbmcConfig.model_validate({"servers": [server("a", 1, 0), server("a", 2, 0)]})
    with pytest.raises(ValidationError, match="MAC addresses must differ"):
        VbmcConfig.model_validate({"servers": [server("a", 1, 0), server("b", 1, 0)]})

