"""What ``bench.dhcp`` and ``bench.storm`` share: a lab segment with room for thousands of leases,
and the three DHCP servers they measure (Ingot's real ``ingot serve``, dnsmasq, kea-dhcp4), each
started inside the lab's server namespace, bound to the lab veth only, and stopped by its own PID.

The lab is :class:`tests.support.netns.Lab` (a bridge in a namespace, one namespace per host, both
ends of every veth created inside lab namespaces) with one change: its subnet is a ``/20``
(``10.x.y.0/20``, 4094 addresses) instead of a ``/24``, so a pool can hold a few thousand leases.
Nothing here touches an interface of the machine itself; every DHCP server runs inside the lab's
server namespace and is told the lab veth as its only interface.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, TypeVar

from tests.support.live import LiveAppliance, boot_services_env
from tests.support.netboot_lab import in_netns
from tests.support.netns import Host, Lab

__all__ = [
    "DNSMASQ",
    "KEA_DHCP4",
    "WideLab",
    "copy_bootloader",
    "dnsmasq_argv",
    "in_netns",
    "kea_config",
    "kea_env",
    "start_ingot",
    "start_server",
    "stop_pid",
    "total",
    "udp_rcvbuf_errors",
    "wait_udp_port",
]

T = TypeVar("T")
KEA_DHCP4 = "/usr/sbin/kea-dhcp4"
DNSMASQ = "/usr/sbin/dnsmasq"


class WideLab(Lab):
    """A :class:`Lab` whose segment 0 is a ``/20`` (room for ~4000 leases); segment 1 is unchanged."""

    def __init__(self, prefixlen: int = 20) -> None:
        super().__init__()
        if not 16 <= prefixlen <= 24:
            raise ValueError("prefixlen must be 16..24")
        block = 1 << (24 - prefixlen)  # /24s per network
        third = (self.number * block) % 256
        self.network = IPv4Network(f"10.{100 + os.getpid() % 100}.{third}.0/{prefixlen}")

    def __enter__(self) -> WideLab:
        super().__enter__()
        return self

    def pool(self, first_index: int, size: int) -> tuple[IPv4Address, IPv4Address]:
        """``size`` addresses from host index ``first_index`` (must stay inside the network)."""
        first, last = self.address(first_index), self.address(first_index + size - 1)
        if last >= self.network.broadcast_address:
            raise ValueError(f"pool of {size} from index {first_index} does not fit {self.network}")
        return first, last


def wait_udp_port(lab: Lab, host: Host, port: int, timeout: float,
                  process: subprocess.Popen[Any] | None = None) -> None:
    """Wait until something in ``host``'s namespace listens on UDP ``port`` (``ss``), or raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listening = lab.run_in(host, ["ss", "-Hlun", f"sport = :{port}"], timeout=5).stdout.strip()
        if listening:
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on UDP {port}")
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on UDP {port} in {host.ns} within {timeout} s")


def udp_rcvbuf_errors(lab: Lab, host: Host) -> int:
    """UDP datagrams the kernel dropped in ``host``'s namespace because a socket's receive buffer
    was full (``Udp: RcvbufErrors`` of /proc/net/snmp, which is per namespace)."""
    lines = [line.split() for line in lab.run_in(host, ["cat", "/proc/net/snmp"], timeout=5).stdout.splitlines()
             if line.startswith("Udp:")]
    if len(lines) < 2:
        return 0
    return int(dict(zip(lines[0][1:], lines[1][1:], strict=False)).get("RcvbufErrors", 0))


def stop_pid(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM the process we started (by its PID), SIGKILL it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(5)


def start_server(lab: Lab, host: Host, argv: list[str], log: Path, *, port: int = 67, timeout: float = 20.0,
                 env: dict[str, str] | None = None) -> subprocess.Popen[Any]:
    """Start a peer server in ``host``'s namespace (killed by PID at lab teardown at the latest)
    and wait until it listens on UDP ``port``."""
    # `ip netns exec` and env(1) both exec in place: the PID is the server's own.
    command = ["env", *(f"{key}={value}" for key, value in (env or {}).items()), *argv]
    with log.open("ab") as stream:
        process = lab.spawn_in(host, command, stdout=stream, stderr=stream, text=False)
    try:
        wait_udp_port(lab, host, port, timeout, process)
    except BaseException:
        stop_pid(process)
        raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text(errors='replace')[-3000:]}") from None
    return process


def dnsmasq_argv(srv: Host, first: IPv4Address, last: IPv4Address, work: Path, *extra: str) -> list[str]:
    """dnsmasq as a DHCP server on ``srv``'s veth only, DNS off, leases in ``work/dnsmasq.leases``."""
    return [DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--port=0", f"--interface={srv.ifname}",
            "--bind-interfaces", f"--dhcp-range={first},{last},1h", f"--dhcp-leasefile={work / 'dnsmasq.leases'}",
            "--dhcp-authoritative", f"--pid-file={work / 'dnsmasq.pid'}", *extra]


def kea_config(srv: Host, network: IPv4Network, first: IPv4Address, last: IPv4Address, work: Path) -> Path:
    """A kea-dhcp4 configuration: raw sockets on ``srv``'s veth, memfile leases persisted to a temp file."""
    config = {"Dhcp4": {
        "interfaces-config": {"interfaces": [srv.ifname], "dhcp-socket-type": "raw"},
        "lease-database": {"type": "memfile", "persist": True, "name": str(work / "kea-leases4.csv"),
                           "lfc-interval": 0},
        "valid-lifetime": 3600,
        "authoritative": True,
        "subnet4": [{"id": 1, "subnet": str(network), "pools": [{"pool": f"{first} - {last}"}],
                     "option-data": [{"name": "routers", "data": str(srv.ip)}]}],
        "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": str(work / "kea.log")}],
                     "severity": "WARN"}],
    }}
    path = work / "kea-dhcp4.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def kea_env(work: Path) -> dict[str, str]:
    """Lock and PID files in ``work``, not in /run/kea."""
    (work / "kea-run").mkdir(exist_ok=True)
    return {"KEA_LOCKFILE_DIR": str(work / "kea-run"), "KEA_PIDFILE_DIR": str(work / "kea-run")}


def start_ingot(lab: Lab, srv: Host, home: Path, first: IPv4Address, last: IPv4Address, *,
                extra_env: dict[str, str] | None = None, timeout: float = 60.0) -> LiveAppliance:
    """The real ``ingot serve`` in ``srv``'s namespace: SQLite under ``home``, DHCP on the lab veth only."""
    env = boot_services_env(srv.ifname, str(srv.ip), str(first), str(last))
    env |= {"INGOT_LOG_LEVEL": "WARNING", **(extra_env or {})}
    appliance = LiveAppliance(home, None, extra_env=env, with_test_handlers=False, netns=srv.ns)
    return appliance.start(timeout=timeout)


def total(appliance: LiveAppliance, path: str, filter: str | None = None) -> int:
    """``total`` of a collection (one member fetched), optionally filtered (``state='bound'``)."""
    params = {"count": "1", **({"filter": f'"{filter}"'} if filter else {})}
    return int(appliance.api("GET", path, params=params)["total"])


def copy_bootloader(name: str, root: Path) -> Path:
    """``/usr/lib/ipxe/<name>`` copied into a TFTP root (for the peers)."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    shutil.copyfile(Path("/usr/lib/ipxe") / name, target)
    return target
