"""The emulated rack's network: one namespace holding a provisioning bridge and a management bridge.

::

    namespace <name> (default "ingot-lab"), nothing of it in the machine's own namespace
    ├── prov<n>  10.P.Q.1/24 (the appliance; DHCP pool .100-.199)  fd00:P:Q::1/64 (RAs only)
    │   └── taps, one per emulated server (add_tap), each QEMU NIC on one
    └── mgmt<n>  10.M.Q.1/24 (the appliance's side)  + 10.M.Q.11, .12, … (add_bmc_address):
                 one extra address per virtual BMC, each listening on <address>:623

Why it is shaped this way:

* A namespace rather than host bridges: the lab then cannot reach, or be reached from, any real
  interface (the appliance runs a DHCP server on ``prov<n>``). Deleting the namespace deletes
  every bridge and tap in it, so teardown is one step (:func:`lab.state.teardown`).
* Two bridges, because a rack has two networks: servers PXE-boot on the provisioning network,
  which the appliance serves (DHCP, TFTP, HTTP boot, DNS); BMCs sit on a management network the
  appliance only talks IPMI to. One address per BMC on the management bridge lets every virtual
  BMC use the standard port 623, as discovery by address range expects.
* :class:`LabNetwork` is a *plan* (a frozen dataclass: namespace name plus a lab number) from which
  every name and address is derived, so a record on disk (``as_dict``) is enough to find the lab
  again; :meth:`create`, :meth:`add_tap` and :meth:`add_bmc_address` carry it out.
* Labs never collide: :meth:`LabNetwork.allocate` picks a random number whose namespace name is
  free and whose two /24s no ``ingot*`` namespace uses yet (product labs, and the tests'
  ``ingot-nb<n>`` and ``ingot-<pid>-…`` labs alike). Provisioning networks live in 10.100-149.x,
  management networks in 10.150-199.x, so within one number space they cannot overlap either.
* Router advertisements (:mod:`lab.ra`) are started here because they belong to the segment:
  without them iPXE waits ~13 s for IPv6 autoconfiguration on every boot.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.netns import IpError, check_name, ip, list_namespaces, namespace_exists
from lab.state import LabRecord, start_process

__all__ = ["DEFAULT_LAB_NAME", "LabNetwork", "boot_services_env"]

log = logging.getLogger(__name__)

DEFAULT_LAB_NAME = "ingot-lab"
#: Lab numbers: each one owns 10.(100+n//256).(n%256).0/24 and 10.(150+n//256).(n%256).0/24.
NUMBERS = range(1, 50 * 256)
DHCP_FIRST, DHCP_LAST = 100, 199  # host indexes of the provisioning network's DHCP pool
BMC_FIRST = 11  # host index of the first virtual BMC on the management network
MAX_BMCS = 254 - BMC_FIRST + 1
_IFNAMSIZ = 15  # longest Linux interface name
_ALLOCATE_TRIES = 64
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # so `python -m lab.ra` works from a checkout too


def boot_services_env(interface: str, router: str, first: str, last: str) -> dict[str, str]:
    """Settings for an appliance serving network boot inside a lab namespace: listeners on the
    namespace's own interfaces (0.0.0.0 there), the standard ports, DHCP only on ``interface``."""
    return {
        "INGOT_BIND_ADDRESS": "0.0.0.0",  # noqa: S104 - inside the lab namespace only
        "INGOT_HTTPS_PORT": "8443", "INGOT_HTTP_PORT": "8080", "INGOT_TFTP_PORT": "69", "INGOT_DNS_PORT": "53",
        "INGOT_DHCP_INTERFACE": interface, "INGOT_DHCP_RANGE": f"{first}-{last}", "INGOT_DHCP_ROUTER": router,
    }


@dataclass(frozen=True)
class LabNetwork:
    """The plan of one lab's network; see the module docstring.

    :ivar namespace: the network namespace's name (by convention the lab's name).
    :ivar number: the lab number all interface names and addresses derive from (see :data:`NUMBERS`).
    """

    namespace: str
    number: int

    def __post_init__(self) -> None:
        check_name(self.namespace)
        if self.number not in NUMBERS:
            raise ValueError(f"lab number {self.number} is not in {NUMBERS.start}..{NUMBERS.stop - 1}")

    # -- choosing a plan -----------------------------------------------------------------------

    @classmethod
    def allocate(cls, namespace: str = DEFAULT_LAB_NAME, *, candidates: Iterable[int] | None = None) -> LabNetwork:
        """A plan whose namespace and networks are not in use now.

        :param namespace: the namespace name; ``{number}`` in it is replaced by the lab number
            chosen (the tests' labs are ``ingot-nb{number}``).
        :param candidates: lab numbers to try, in order (default: ``_ALLOCATE_TRIES`` random ones).
        :raises FileExistsError: ``namespace`` (without ``{number}``) exists already.
        :raises RuntimeError: no candidate was free (many labs, or bad luck ``_ALLOCATE_TRIES`` times).
        """
        templated = "{number}" in namespace
        taken = set(list_namespaces())
        if not templated and namespace in taken:
            raise FileExistsError(f"namespace {namespace!r} exists already: is that lab up? (tear it down first)")
        used = _networks_in_use(taken)
        if candidates is None:
            candidates = random.sample(NUMBERS, _ALLOCATE_TRIES)
        for n in candidates:
            plan = cls(namespace.format(number=n) if templated else namespace, n)
            if plan.namespace in taken or f"ingot-nb{n}" in taken:
                continue
            if not any(mine.overlaps(other) for mine in (plan.provisioning_network, plan.management_network)
                       for other in used):
                return plan
        raise RuntimeError(f"no free lab number for {namespace!r} among the candidates tried")

    def as_dict(self) -> dict[str, Any]:
        """JSON for a lab record (:attr:`lab.state.LabRecord.details`)."""
        return {"namespace": self.namespace, "number": self.number}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabNetwork:
        return cls(str(data["namespace"]), int(data["number"]))

    # -- names and addresses -------------------------------------------------------------------

    @property
    def provisioning_bridge(self) -> str:
        return f"prov{self.number}"

    @property
    def management_bridge(self) -> str:
        return f"mgmt{self.number}"

    @property
    def provisioning_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.{100 + self.number // 256}.{self.number % 256}.0/24")

    @property
    def management_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.{150 + self.number // 256}.{self.number % 256}.0/24")

    @property
    def prefix6(self) -> ipaddress.IPv6Network:
        """The ULA /64 advertised on the provisioning bridge (iPXE autoconfigures from it)."""
        return ipaddress.IPv6Network(f"fd00:{100 + self.number // 256}:{self.number % 256}::/64")

    @property
    def address(self) -> str:
        """The appliance's address on the provisioning network (.1): DHCP server, router, DNS, API."""
        return str(self.provisioning_network.network_address + 1)

    @property
    def management_address(self) -> str:
        """The appliance's address on the management network (.1), from which it talks to BMCs."""
        return str(self.management_network.network_address + 1)

    @property
    def dhcp_range(self) -> tuple[str, str]:
        base = self.provisioning_network.network_address
        return str(base + DHCP_FIRST), str(base + DHCP_LAST)

    def bmc_address(self, index: int) -> str:
        """The address of virtual BMC ``index`` (0-based: 0 is .11, 1 is .12, …)."""
        if not 0 <= index < MAX_BMCS:
            raise ValueError(f"BMC index {index} is not in 0..{MAX_BMCS - 1}")
        return str(self.management_network.network_address + BMC_FIRST + index)

    def serve_env(self) -> dict[str, str]:
        """``INGOT_*`` settings for ``ingot serve`` inside the namespace: DHCP (full server) on the
        provisioning bridge with this lab's pool, the appliance as router and DNS server."""
        return {**boot_services_env(self.provisioning_bridge, self.address, *self.dhcp_range),
                "INGOT_DHCP_DNS": self.address, "INGOT_DHCP_MODE": "server"}

    # -- carrying it out -----------------------------------------------------------------------

    def exists(self) -> bool:
        return namespace_exists(self.namespace)

    def create(self, record: LabRecord | None = None, *, router_advertisements: bool = True) -> None:
        """Create the namespace and both bridges with their addresses (no taps, no BMC addresses).

        :param record: where to record the namespace, right after it exists (and this plan, as
            ``details["network"]``; :meth:`from_dict` reads it back).
        :param router_advertisements: prepare ``prov<n>`` for :meth:`start_router_advertisements`
            (IPv6 on, the ULA ``::1`` without DAD, no RA acceptance).
        :raises FileExistsError: the namespace exists already.
        :raises IpError: a step failed; the namespace is deleted again (and forgotten by ``record``).
        """
        ns, prov, mgmt = self.namespace, self.provisioning_bridge, self.management_bridge
        if self.exists():
            raise FileExistsError(f"namespace {ns!r} exists already: is that lab up? (tear it down first)")
        ip("netns", "add", ns)
        try:
            if record is not None:
                record.details["network"] = self.as_dict()  # saved with the namespace, next line
                record.add_namespace(ns)
            ip("link", "set", "lo", "up", netns=ns)
            for bridge in (prov, mgmt):
                ip("link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0", netns=ns)
            if router_advertisements:
                sysctl = f"net.ipv6.conf.{prov}"
                ip("netns", "exec", ns, "sysctl", "-q", "-w", f"{sysctl}.disable_ipv6=0", f"{sysctl}.accept_dad=0",
                   f"{sysctl}.accept_ra=0")
                ip("addr", "add", f"{self.prefix6.network_address + 1}/64", "dev", prov, "nodad", netns=ns)
            ip("addr", "add", f"{self.address}/24", "dev", prov, netns=ns)
            ip("addr", "add", f"{self.management_address}/24", "dev", mgmt, netns=ns)
            for bridge in (prov, mgmt):
                ip("link", "set", bridge, "up", netns=ns)
        except BaseException:
            try:
                ip("netns", "del", ns)
                if record is not None and record.namespace == ns:
                    record.forget_namespace()
            except Exception as exc:  # the original error matters more; teardown can retry
                log.warning("could not delete namespace %s after a failed create: %s", ns, exc)
            raise

    def add_tap(self, name: str) -> str:
        """Create tap ``name`` inside the namespace, attached to the provisioning bridge and up.

        A QEMU server then opens it with ``-netdev tap,ifname=NAME,script=no`` (run in the
        namespace). Taps go away with the namespace; nothing to record.
        """
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or len(name) > _IFNAMSIZ:
            raise ValueError(f"bad interface name {name!r} (at most {_IFNAMSIZ} of [A-Za-z0-9_.-])")
        ns = self.namespace
        ip("tuntap", "add", "dev", name, "mode", "tap", netns=ns)
        ip("link", "set", name, "master", self.provisioning_bridge, netns=ns)
        ip("link", "set", name, "up", netns=ns)
        return name

    def add_bmc_address(self, index: int) -> str:
        """Add :meth:`bmc_address` ``(index)`` to the management bridge and return it. Adding an
        address that is already there is fine."""
        address = self.bmc_address(index)
        try:
            ip("addr", "add", f"{address}/24", "dev", self.management_bridge, netns=self.namespace)
        except IpError:
            present = ip("-o", "-4", "addr", "show", "dev", self.management_bridge, "to", f"{address}/32",
                         netns=self.namespace)
            if f"inet {address}/" not in present:
                raise
        return address

    def start_router_advertisements(self, record: LabRecord, log: Path | None = None, *,
                                    duration: float = 86400.0) -> subprocess.Popen[bytes]:
        """Start ``python -m lab.ra`` on the provisioning bridge inside the namespace, recorded in
        ``record`` with role ``ra``. It stops by itself after ``duration`` seconds.

        :param log: append its stderr (send errors until the bridge has a carrier) there.
        """
        argv = [sys.executable, "-m", "lab.ra", self.provisioning_bridge, str(self.prefix6),
                "--duration", str(duration)]
        if log is None:
            return start_process(record, "ra", argv, netns=self.namespace, cwd=_PACKAGE_ROOT)
        with open(log, "ab") as stderr:
            return start_process(record, "ra", argv, netns=self.namespace, cwd=_PACKAGE_ROOT, stderr=stderr)


def _networks_in_use(namespaces: set[str]) -> list[ipaddress.IPv4Network]:
    """The IPv4 networks configured in every ``ingot*`` namespace (lab and test namespaces)."""
    used = []
    for ns in sorted(namespaces):
        if not ns.startswith("ingot"):
            continue
        try:
            out = ip("-o", "-4", "addr", "show", netns=ns, check=False, timeout=5)
        except IpError:  # timed out: skip it rather than fail the new lab
            continue
        used += [ipaddress.IPv4Interface(m).network for m in re.findall(r"\binet (\S+)", out)]
    return used
