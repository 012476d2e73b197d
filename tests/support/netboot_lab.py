"""A network-boot lab: a network namespace with a bridge, one tap per VM, and Ingot itself running
inside the namespace with DHCP on that bridge — nothing of it touches the machine's own interfaces.

    with netboot_lab(work_dir, boot_image) as lab:
        vm = lab.start_vm(random_mac(), "vm1")
        wait_for(vm.serial_log, MARKER, 180, proc=vm.proc)
        leases = lab.api_get("/rest/dhcp/leases")

The network is the emulated rack's own (:class:`lab.network.LabNetwork`, number ``<n>`` chosen free
at start): namespace ``ingot-nb<n>``, provisioning bridge ``prov<n>`` with ``10.<x>.<y>.1/24`` (and
``fd00:<x>:<y>::1/64``, advertised by :mod:`lab.ra` so iPXE does not wait ~13 s for IPv6), taps
``nbtap<i>`` in the namespace. What the lab creates is written to a :class:`lab.state.LabRecord`
under the work dir; teardown stops the VMs and the appliance by their own PIDs, then
:func:`lab.state.teardown` stops the router-advertisement sender and deletes the namespace, which
takes the bridges and the taps with it.

API calls go to ``https://10.<x>.<y>.1:8443``, which exists only inside the namespace; ``in_netns``
runs a function on a short-lived thread that has joined the namespace (``setns(2)`` affects only the
calling thread), so the usual httpx helpers of ``LiveAppliance`` work unchanged.
"""

from __future__ import annotations

import ipaddress
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from lab.netns import in_namespace
from lab.network import LabNetwork
from lab.state import LabRecord, teardown
from tests.support.bootimage import BootImage
from tests.support.live import LiveAppliance
from tests.support.qemu import start_vm, stop_vm

T = TypeVar("T")
RA_DURATION_S = 3600.0  # bounds the advertisement loop should teardown never run


def in_netns(netns: str, fn: Callable[[], T], timeout: float = 120) -> T:
    """Run ``fn`` on a new thread that has entered ``netns``; sockets it opens live there."""
    return in_namespace(netns, fn, timeout)


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
    net: LabNetwork
    record: LabRecord
    work_dir: Path
    appliance: NamespacedAppliance | None = None
    vms: list[Vm] = field(default_factory=list)
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def netns(self) -> str:
        return self.net.namespace

    @property
    def bridge(self) -> str:
        return self.net.provisioning_bridge

    @property
    def network(self) -> ipaddress.IPv4Network:
        return self.net.provisioning_network

    @property
    def prefix6(self) -> ipaddress.IPv6Network:
        return self.net.prefix6

    @property
    def address(self) -> str:
        return self.net.address

    @property
    def dhcp_range(self) -> tuple[str, str]:
        return self.net.dhcp_range

    def appliance_env(self, ramdisk_dir: Path) -> dict[str, str]:
        return {**self.net.serve_env(), "INGOT_BOOT__RAMDISK_DIR": str(ramdisk_dir)}

    def add_tap(self) -> str:
        return self.net.add_tap(f"nbtap{len(self.vms)}")

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


@contextmanager
def netboot_lab(work_dir: Path, image: BootImage | None = None, *, router_advertisements: bool = True,
                appliance_env: dict[str, str] | None = None) -> Iterator[NetbootLab]:
    """The namespace, bridge and (with ``image``) Ingot serving it; see the module docstring.
    ``image`` becomes the discovery ramdisk (``vmlinuz`` + ``initrd.img``); without it no appliance
    is started (the caller runs its own servers with ``ip netns exec lab.netns``)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    net = LabNetwork.allocate("ingot-nb{number}")
    lab = NetbootLab(net, LabRecord.new(work_dir / "lab-state", net.namespace), work_dir)
    try:
        net.create(lab.record, router_advertisements=router_advertisements)
        if router_advertisements:
            lab.helpers.append(net.start_router_advertisements(lab.record, work_dir / "ra.log",
                                                               duration=RA_DURATION_S))
        if image is not None:
            ramdisk = work_dir / "ramdisk"
            ramdisk.mkdir(exist_ok=True)
            shutil.copyfile(image.kernel, ramdisk / "vmlinuz")
            shutil.copyfile(image.initrd, ramdisk / "initrd.img")
            lab.appliance = NamespacedAppliance(net.namespace, net.address, work_dir / "home",
                                                {**lab.appliance_env(ramdisk), **(appliance_env or {})})
            lab.appliance.start()
        yield lab
    finally:
        _teardown(lab)


def _teardown(lab: NetbootLab) -> None:
    """Stop the VMs and the appliance (by their own PIDs), then everything the record lists: the
    router-advertisement sender and the namespace. Every step is tried."""
    steps: list[Callable[[], object]] = [partial(stop_vm, vm.proc) for vm in lab.vms]
    if lab.appliance is not None:
        steps.append(lab.appliance.stop)
    steps.append(partial(teardown, lab.record))
    steps += [partial(proc.wait, 10) for proc in lab.helpers]  # stopped by teardown: collect the status
    errors: list[BaseException] = []
    for step in steps:
        try:
            step()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
