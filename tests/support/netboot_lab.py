"""A network-boot lab: a network namespace with a bridge, one tap per VM, and Ingot itself running
inside the namespace with DHCP on that bridge — nothing of it touches the machine's own interfaces.

    with netboot_lab(work_dir, boot_image) as lab:
        vm = lab.start_vm(random_mac(), "vm1")
        wait_for(vm.serial_log, MARKER, 180, proc=vm.proc)
        leases = lab.api_get("/rest/dhcp/leases")

Layout (``<id>`` chosen free at start): namespace ``ingot-nb<id>``, bridge ``nbbr<id>`` with
``10.<x>.<y>.1/24`` (and ``fd00:<x>:<y>::1/64``), taps ``nbtap<n>`` in the namespace. Teardown stops
the VMs, the appliance and the router-advertisement sender by their own PIDs and deletes the
namespace, which takes the bridge and the taps with it.

Router advertisements: iPXE configures IPv6 alongside DHCPv4 and, on a segment without a router,
waits ~13 s for one. A few lines of Python (``python -m tests.support.netboot_lab ra BRIDGE PREFIX``,
run inside the namespace) advertise a ULA prefix once a second so iPXE finishes at once. It is not a
boot service: DHCP, TFTP, the iPXE script, kernel and initrd all come from Ingot.

API calls go to ``https://10.<x>.<y>.1:8443``, which exists only inside the namespace; ``in_netns``
runs a function on a short-lived thread that has joined the namespace (``setns(2)`` affects only the
calling thread), so the usual httpx helpers of ``LiveAppliance`` work unchanged.
"""

from __future__ import annotations

import ipaddress
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from tests.support.bootimage import BootImage
from tests.support.live import REPO, LiveAppliance, boot_services_env
from tests.support.netns import in_namespace
from tests.support.qemu import start_vm, stop_vm

T = TypeVar("T")
NETNS_DIR = Path("/run/netns")


def ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")


def in_netns(netns: str, fn: Callable[[], T], timeout: float = 120) -> T:
    """Run ``fn`` on a new thread that has entered ``netns``; sockets it opens live there."""
    return in_namespace(netns, fn, timeout)  # type: ignore[no-any-return]


def random_mac() -> str:
    """A locally administered unicast MAC in QEMU's 52:54:00 range."""
    return "52:54:00:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))


class NamespacedAppliance(LiveAppliance):
    """``LiveAppliance`` (INGOT_HOME, admin password, ready file, start/stop by PID, API helpers)
    started inside ``netns``; its URL is the bridge address, reachable only from inside the
    namespace (see ``in_netns``)."""

    def __init__(self, netns: str, address: str, home: Path, extra_env: dict[str, str]) -> None:
        super().__init__(home, None, extra_env=extra_env, netns=netns)
        self.address = address

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.https_port}"

    @property
    def host(self) -> str:
        return f"{self.address}:{self.https_port}"


@dataclass
class Vm:
    name: str
    mac: str
    tap: str
    serial_log: Path
    proc: subprocess.Popen[bytes]


@dataclass
class NetbootLab:
    netns: str
    bridge: str
    network: ipaddress.IPv4Network
    prefix6: ipaddress.IPv6Network
    work_dir: Path
    appliance: NamespacedAppliance | None = None
    vms: list[Vm] = field(default_factory=list)
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def dhcp_range(self) -> tuple[str, str]:
        base = self.network.network_address
        return str(base + 100), str(base + 150)

    def appliance_env(self, ramdisk_dir: Path) -> dict[str, str]:
        return {
            **boot_services_env(self.bridge, self.address, *self.dhcp_range),
            "INGOT_DHCP_DNS": self.address,
            "INGOT_DHCP_MODE": "server",
            "INGOT_BOOT__RAMDISK_DIR": str(ramdisk_dir),
        }

    def add_tap(self) -> str:
        tap = f"nbtap{len(self.vms)}"
        ip("tuntap", "add", "dev", tap, "mode", "tap", netns=self.netns)
        ip("link", "set", tap, "master", self.bridge, netns=self.netns)
        ip("link", "set", tap, "up", netns=self.netns)
        return tap

    def start_vm(self, mac: str, name: str, *, log_dir: Path | None = None, firmware: str = "bios",
                 memory_mb: int = 512) -> Vm:
        tap = self.add_tap()
        serial_log = (log_dir or self.work_dir) / f"{name}.serial.log"
        proc = start_vm(self.netns, tap, mac, serial_log, firmware=firmware, memory_mb=memory_mb)
        vm = Vm(name, mac, tap, serial_log, proc)
        self.vms.append(vm)
        return vm

    def call(self, fn: Callable[[], T], timeout: float = 120) -> T:
        return in_netns(self.netns, fn, timeout)

    def api_get(self, path: str, **params: str) -> Any:
        """GET ``path`` from the appliance's REST API as Administrator, from inside the namespace."""
        assert self.appliance is not None
        return self.appliance.api("GET", path, params=params)


def _free_lab_id() -> int:
    taken = {p.name for p in NETNS_DIR.iterdir()} if NETNS_DIR.is_dir() else set()
    for _ in range(50):
        n = random.randrange(1, 25600)
        if f"ingot-nb{n}" not in taken:
            return n
    raise RuntimeError("no free ingot-nb<id> namespace name")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@contextmanager
def netboot_lab(work_dir: Path, image: BootImage | None = None, *, router_advertisements: bool = True,
                appliance_env: dict[str, str] | None = None) -> Iterator[NetbootLab]:
    """The namespace, bridge and (with ``image``) Ingot serving it; see the module docstring.
    ``image`` becomes the discovery ramdisk (``vmlinuz`` + ``initrd.img``); without it no appliance
    is started (the caller runs its own servers with ``ip netns exec lab.netns``)."""
    n = _free_lab_id()
    x, y = 100 + n // 256, n % 256
    lab = NetbootLab(netns=f"ingot-nb{n}", bridge=f"nbbr{n}",
                     network=ipaddress.IPv4Network(f"10.{x}.{y}.0/24"),
                     prefix6=ipaddress.IPv6Network(f"fd00:{x}:{y}::/64"), work_dir=work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    ip("netns", "add", lab.netns)
    try:
        ns = lab.netns
        ip("link", "set", "lo", "up", netns=ns)
        ip("link", "add", lab.bridge, "type", "bridge", netns=ns)
        if router_advertisements:
            sysctl = f"net.ipv6.conf.{lab.bridge}"
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{sysctl}.disable_ipv6=0",
                            f"{sysctl}.accept_dad=0", f"{sysctl}.accept_ra=0"], check=True, timeout=30)
            ip("addr", "add", f"{lab.prefix6.network_address + 1}/64", "dev", lab.bridge, "nodad", netns=ns)
        ip("addr", "add", f"{lab.address}/{lab.network.prefixlen}", "dev", lab.bridge, netns=ns)
        ip("link", "set", lab.bridge, "up", netns=ns)
        if router_advertisements:
            with open(work_dir / "ra.log", "ab") as ra_log:
                lab.helpers.append(subprocess.Popen(
                    ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.support.netboot_lab", "ra",
                     lab.bridge, str(lab.prefix6)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=ra_log))
        if image is not None:
            ramdisk = work_dir / "ramdisk"
            ramdisk.mkdir(exist_ok=True)
            shutil.copyfile(image.kernel, ramdisk / "vmlinuz")
            shutil.copyfile(image.initrd, ramdisk / "initrd.img")
            lab.appliance = NamespacedAppliance(ns, lab.address, work_dir / "home",
                                                {**lab.appliance_env(ramdisk), **(appliance_env or {})})
            lab.appliance.start()
        yield lab
    finally:
        _teardown(lab)


def _teardown(lab: NetbootLab) -> None:
    """Stop what the lab started (by PID), then delete the namespace; every step is tried."""
    steps: list[Callable[[], object]] = [partial(stop_vm, vm.proc) for vm in lab.vms]
    if lab.appliance is not None:
        steps.append(lab.appliance.stop)
    steps += [partial(_stop, proc) for proc in lab.helpers]
    steps.append(partial(ip, "netns", "del", lab.netns))
    errors: list[BaseException] = []
    for step in steps:
        try:
            step()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


# --- router advertisements (run inside the namespace) ------------------------------------------

def router_advertisement(mac: bytes, prefix: ipaddress.IPv6Network) -> bytes:
    """ICMPv6 RA (RFC 4861): not a default router, one on-link autonomous prefix, our MAC.
    The checksum is left 0: the kernel fills it in for raw ICMPv6 sockets."""
    header = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 0, 0, 0)
    source_lla = struct.pack("!BB6s", 1, 1, mac)
    prefix_info = struct.pack("!BBBBIII16s", 3, 4, prefix.prefixlen, 0xC0, 3600, 1800, 0,
                              prefix.network_address.packed)
    return header + source_lla + prefix_info


def advertise(interface: str, prefix: ipaddress.IPv6Network, interval: float = 1.0,
              duration: float = 3600.0) -> None:
    mac = bytes.fromhex(Path(f"/sys/class/net/{interface}/address").read_text().strip().replace(":", ""))
    packet = router_advertisement(mac, prefix)
    index = socket.if_nametoindex(interface)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        try:
            sock.sendto(packet, ("ff02::1", 0, 0, index))
        except OSError as exc:  # no link-local address yet: the bridge has no carrier until a VM starts
            print(f"RA not sent: {exc}", file=sys.stderr, flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "ra":
        advertise(sys.argv[2], ipaddress.IPv6Network(sys.argv[3]))
    else:
        sys.exit("usage: python -m tests.support.netboot_lab ra INTERFACE PREFIX")
