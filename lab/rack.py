"""The emulated rack as one unit: what ``ingot lab up``, ``down``, ``status`` and ``console`` do.

``up`` puts together what the other lab modules make, in this order, recording every piece in the
lab's record (:mod:`lab.state`) the moment it exists, so that ``down`` - or ``up`` itself, when a
step fails - removes exactly what was made, by PID and by name:

1. the deploy ramdisk, built or taken from the cache (:mod:`lab.images`);
2. the network namespace with its provisioning and management bridges and router advertisements
   (:mod:`lab.network`);
3. ``ingot serve`` inside the namespace, with its own INGOT_HOME under the lab's directory, DHCP on
   the provisioning bridge and the ramdisk as its boot ramdisk;
4. one tap, one BMC address and one empty system disk per server, and ``python -m lab.vbmc``
   inside the namespace running a virtual BMC per QEMU server (:mod:`lab.vbmc`), every server
   powered off;
5. a forwarder that makes the appliance's HTTPS port reachable on the machine's loopback
   (:mod:`lab.forward`): the only way into the lab from outside.

The servers are *not* enrolled: staff enroll servers by their BMC addresses, and so does the demo.
The long-lived processes are started in their own sessions and write to files, so the lab stays
up after the command that made it has exited.

Layout under ``INGOT_HOME/lab``: ``state/<name>.json`` (the record), ``cache/`` (built images, kept
across labs), ``<name>/`` (everything else of one lab: the appliance's home, logs, disks, serial
logs, sockets; removed by ``down``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.forward import Route, forward_argv
from lab.images import build_ramdisk
from lab.netns import exec_argv, unavailable_reason
from lab.network import DEFAULT_LAB_NAME, LabNetwork
from lab.state import LabRecord, record_path, start_process, teardown

ADMIN_USER = "Administrator"
BMC_USER = "admin"
APPLIANCE_HTTPS_PORT = 8443  # inside the namespace (lab.network.boot_services_env)
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 30.0
MAX_SERVERS = 32
DISK_BYTES = 8 << 30  # each server's system disk
_REPO = Path(__file__).resolve().parents[1]

Say = Callable[[str], None]
#: The lab processes this program started, by PID: kept so that ``down`` in the same program (the
#: demo, the tests) collects their exit status; ``ingot lab up`` exits and leaves them to init.
_children: dict[int, subprocess.Popen[bytes]] = {}


class LabError(RuntimeError):
    """The lab could not be brought up, found or taken down; the message says why."""


@dataclass(frozen=True)
class LabPaths:
    home: Path  # INGOT_HOME
    name: str = DEFAULT_LAB_NAME

    @property
    def root(self) -> Path:
        return self.home / "lab"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def instance(self) -> Path:
        return self.root / self.name

    @property
    def record(self) -> Path:
        return record_path(self.state, self.name)


def _wait_lines(path: Path, count: int, proc: subprocess.Popen[bytes], what: str, timeout: float,
                log: Path) -> list[str]:
    """The first ``count`` lines a process writes to ``path``; LabError (with the end of its
    ``log``, which the teardown that follows removes) if it exits or stalls."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines[:count]
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:] if log.exists() else []
            happened = f"exited ({proc.returncode})" if proc.poll() is not None else f"stalled for {timeout:.0f} s"
            raise LabError(f"{what} {happened} before it was ready. Its log ends:\n  " + "\n  ".join(tail))
        time.sleep(0.1)


def _clean_env() -> dict[str, str]:
    """This process's environment without INGOT_* (the lab's appliance has its own settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGOT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
    return env


def _server_plans(paths: LabPaths, network: LabNetwork, servers: int, uefi: int, memory_mb: int,
                  password: str) -> list[dict[str, Any]]:
    """One vbmc server entry per server (the machine's spec plus its BMC), taps and addresses made."""
    plans = []
    disks = paths.instance / "disks"
    disks.mkdir(exist_ok=True)
    for index in range(servers):
        name = f"node-{index + 1}"
        tap = network.add_tap(f"tap{index}")
        address = network.add_bmc_address(index)
        disk = disks / f"{name}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(DISK_BYTES)], check=True, timeout=60)
        firmware = "uefi" if index >= servers - uefi else "bios"
        plans.append({
            "address": address, "port": 623, "user": BMC_USER, "password": password,
            "machine": {"name": name, "index": network.number * MAX_SERVERS + index, "taps": [tap],
                        "disk": str(disk), "firmware": firmware, "memory_mb": memory_mb,
                        "serial_log": str(paths.instance / f"{name}.serial.log"),
                        "qmp_socket": str(paths.instance / f"{name}.qmp"),
                        "console_socket": str(paths.instance / f"{name}.console")},
        })
    return plans


def up(home: Path, *, name: str = DEFAULT_LAB_NAME, servers: int = 3, uefi: int = 1, memory_mb: int = 768,
       port: int = 0, cache: Path | None = None, say: Say = print) -> dict[str, Any]:
    """Bring a lab up (see the module docstring) and return its :func:`status`. ``cache`` is where
    built images are kept (default INGOT_HOME/lab/cache)."""
    if reason := unavailable_reason():
        raise LabError(f"the lab cannot run here: {reason}")
    if not 1 <= servers <= MAX_SERVERS or not 0 <= uefi <= servers:
        raise LabError(f"a lab has 1 to {MAX_SERVERS} servers, of which at most all are UEFI")
    paths = LabPaths(home, name)
    cache = cache or paths.cache
    paths.state.mkdir(parents=True, exist_ok=True)
    paths.state.chmod(0o700)  # records hold the lab's admin and BMC passwords
    cache.mkdir(parents=True, exist_ok=True)
    try:
        record = LabRecord.new(paths.state, name)
    except FileExistsError:
        raise LabError(f"lab {name!r} is up already (or was not taken down): run `ingot lab down`") from None
    try:
        return _build(paths, record, cache, servers, uefi, memory_mb, port, say)
    except BaseException:
        say("Something failed: taking the lab down again.")
        pids = [process.pid for process in record.processes]
        teardown(record)
        _collect(pids)
        raise


def _build(paths: LabPaths, record: LabRecord, cache: Path, servers: int, uefi: int, memory_mb: int, port: int,
           say: Say) -> dict[str, Any]:
    started = time.monotonic()
    if paths.instance.exists():
        raise LabError(f"{paths.instance} exists but no lab record names it: remove it first")
    record.add_path(paths.instance)
    paths.instance.mkdir(mode=0o750)

    say("Deploy ramdisk: building it, or taking it from the cache …")
    ramdisk = build_ramdisk(cache, log=lambda line: say(f"  {line}"))
    boot = paths.instance / "ramdisk"
    boot.mkdir()
    shutil.copyfile(ramdisk.kernel, boot / "vmlinuz")
    shutil.copyfile(ramdisk.initrd, boot / "initrd.img")

    network = LabNetwork.allocate(paths.name)
    network.create(record)
    advertiser = network.start_router_advertisements(record, paths.instance / "ra.log")
    _children[advertiser.pid] = advertiser
    say(f"Network: namespace {network.namespace}, provisioning {network.provisioning_network} on "
        f"{network.provisioning_bridge}, BMCs on {network.management_network}")

    admin_password = secrets.token_urlsafe(12)
    bmc_password = secrets.token_urlsafe(9)
    home = paths.instance / "appliance"
    home.mkdir()
    ready = paths.instance / "appliance.ready"
    env = {**_clean_env(), **network.serve_env(), "INGOT_HOME": str(home), "INGOT_ADMIN_PASSWORD": admin_password,
           "INGOT_BOOT__RAMDISK_DIR": str(boot), "INGOT_IMAGES__NBD_ADDRESS": network.address,
           "INGOT_LOG_FORMAT": "text"}
    with (paths.instance / "appliance.log").open("ab") as log:
        serve = [sys.executable, "-m", "appliance", "serve", "--ready-file", str(ready)]
        appliance = _start(record, "appliance", serve, netns=network.namespace, env=env, stdout=log, stderr=log)
    _wait_lines(ready, 1, appliance, "the appliance", START_TIMEOUT_S, paths.instance / "appliance.log")
    say(f"Appliance: running in the namespace on https://{network.address}:{APPLIANCE_HTTPS_PORT}")

    plans = _server_plans(paths, network, servers, uefi, memory_mb, bmc_password)
    config = paths.instance / "vbmc.json"
    config.write_text(json.dumps({"user": BMC_USER, "password": bmc_password, "servers": plans}))
    config.chmod(0o600)
    bmc_ready = paths.instance / "vbmc.out"
    with bmc_ready.open("wb") as out, (paths.instance / "vbmc.log").open("ab") as log:
        vbmc = _start(record, "vbmc", [sys.executable, "-m", "lab.vbmc", str(config)], netns=network.namespace,
                      env=_clean_env(), stdout=out, stderr=log)
    bmcs = [json.loads(line) for line in _wait_lines(bmc_ready, servers, vbmc, "the virtual BMCs", START_TIMEOUT_S,
                                                     paths.instance / "vbmc.log")]
    say(f"Servers: {servers} QEMU servers ({servers - uefi} BIOS, {uefi} UEFI), powered off, each behind a "
        "virtual BMC")

    forward_out = paths.instance / "forward.out"
    with forward_out.open("wb") as out, (paths.instance / "forward.log").open("ab") as log:
        routes = [Route(("127.0.0.1", port), (network.address, APPLIANCE_HTTPS_PORT))]
        forwarder = _start(record, "forward", forward_argv(network.namespace, routes), env=_clean_env(), stdout=out,
                           stderr=log)
    listening = json.loads(_wait_lines(forward_out, 1, forwarder, "the port forwarder", 30,
                                       paths.instance / "forward.log")[0])["listen"][0]

    record.details.update({
        "url": f"https://{listening}",
        "ca_cert": str(home / "tls" / "tls.crt"),  # the appliance's own, valid for 127.0.0.1
        "admin": {"user": ADMIN_USER, "password": admin_password},
        "servers": [{"name": plan["machine"]["name"], "firmware": plan["machine"]["firmware"],
                     "bmc": {"address": plan["address"], "port": plan["port"], "user": BMC_USER,
                             "password": bmc_password},
                     "macs": bmc["macs"], "serial": bmc["serial"], "uuid": bmc["uuid"],
                     "memory_mb": bmc["memory_mb"], "disk_serial": bmc["disk_serial"],
                     "disk_bytes": DISK_BYTES, "serial_log": plan["machine"]["serial_log"]}
                    for plan, bmc in zip(plans, bmcs, strict=True)],
        "up_s": round(time.monotonic() - started, 1),
    })
    record.save()
    say(f"Lab {paths.name} is up in {time.monotonic() - started:.1f} s: {record.details['url']} "
        f"(user {ADMIN_USER})")
    return status(paths.home, name=paths.name)


def _start(record: LabRecord, role: str, argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start and record a lab process in its own session (it outlives ``ingot lab up``)."""
    proc = start_process(record, role, argv, cwd=_REPO, detach=True, **options)
    _children[proc.pid] = proc
    return proc


def _collect(pids: list[int]) -> None:
    """Collect the exit status of the lab processes this program started (teardown stopped them)."""
    for pid in pids:
        child = _children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)


def load(home: Path, name: str = DEFAULT_LAB_NAME) -> LabRecord:
    paths = LabPaths(home, name)
    if not paths.record.exists():
        raise LabError(f"lab {name!r} is not up (no record at {paths.record})")
    return LabRecord.load(paths.record)


def _power_state(namespace: str, server: dict[str, Any]) -> str:
    bmc = server["bmc"]
    argv = exec_argv(namespace, ["ipmitool", "-I", "lanplus", "-H", bmc["address"], "-p", str(bmc["port"]),
                                 "-U", bmc["user"], "-E", "-N", "2", "-R", "1", "power", "status"])
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False,
                              env={**os.environ, "IPMI_PASSWORD": bmc["password"]})
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    words = done.stdout.strip().split()
    return words[-1] if done.returncode == 0 and words else "unknown"


def status(home: Path, *, name: str = DEFAULT_LAB_NAME, power: bool = True) -> dict[str, Any]:
    """What a lab is: its URL, admin user, network, processes and servers (with their power state
    read from their BMCs when ``power``)."""
    record = load(home, name)
    details = record.details
    network = LabNetwork.from_dict(details["network"]) if "network" in details else None
    servers = [dict(server) for server in details.get("servers", [])]
    if power and network is not None and record.namespace_present():
        with ThreadPoolExecutor(max_workers=8) as pool:
            for server, state in zip(servers, pool.map(lambda s: _power_state(network.namespace, s), servers),
                                     strict=True):
                server["power"] = state
    return {
        "name": record.name,
        "url": details.get("url"),
        "ca_cert": details.get("ca_cert"),
        "admin": details.get("admin"),
        "namespace": record.namespace,
        "provisioning_network": str(network.provisioning_network) if network else None,
        "management_network": str(network.management_network) if network else None,
        "processes": [{"role": p.role, "pid": p.pid, "running": p.running()} for p in record.processes],
        "servers": servers,
        "complete": "url" in details,
    }


def down(home: Path, *, name: str = DEFAULT_LAB_NAME, say: Say = print) -> None:
    """Stop every process of the lab by PID, delete its namespace and its files."""
    record = load(home, name)
    pids = [process.pid for process in record.processes]
    # The appliance winds down its tasks, BMC sessions and connections before it exits: more
    # than the 10 s teardown allows by default when its BMCs go at the same moment.
    teardown(record, grace=STOP_GRACE_S)
    _collect(pids)
    say(f"Lab {name} is down: processes stopped, namespace {record.namespace} and {LabPaths(home, name).instance} "
        "removed.")


def serial_log(home: Path, server: str, *, name: str = DEFAULT_LAB_NAME) -> Path:
    for entry in load(home, name).details.get("servers", []):
        if entry["name"] == server:
            return Path(entry["serial_log"])
    raise LabError(f"lab {name!r} has no server {server!r}")
