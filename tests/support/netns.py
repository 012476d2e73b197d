"""Throw-away network labs in Linux network namespaces, for DHCP tests with real clients.

A :class:`Lab` is one Ethernet segment that exists only inside namespaces this module creates:
a "switch" namespace holding a bridge, and one namespace per host, each joined to the bridge by
a veth pair. Both ends of every veth pair are created directly inside lab namespaces
(``ip link add ... netns``), so no lab interface ever appears in the machine's own namespace
and nothing in a lab can reach a real interface: there is no route, bridge port or forwarding
between a lab and the outside.

::

    ns <lab>-sw:   br0 ── p-srv ── p-cli ── (p-site ...)
                           │        │
    ns <lab>-srv:       veth-srv    │            10.N.M.1/24 (the DHCP server)
    ns <lab>-cli:                veth-cli        no address (a DHCP client)

A second segment (``br1``, its own subnet) can be added to test that a server bound to one
interface ignores another (:meth:`Lab.attach`).

Names are short and unique per process and lab (``ingot-<pid>-<n>-<role>``); interface names
are fixed (``veth-<role>``, at most 15 characters) because each lives in its own namespace.
Every lab gets its own ``10.x.y.0/24``.

Everything is bounded and cleaned up: :meth:`Lab.run_in` has a timeout, processes from
:meth:`Lab.spawn_in` are killed by PID at teardown, and teardown deletes exactly the links and
namespaces the lab created, even when the test failed or setup stopped half way. Processes
still inside a lab namespace at teardown (daemons forked by something the test started) are
killed by PID too, so a namespace never outlives its lab.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and ``ip`` from iproute2. The namespace primitives
(``ip``, ``in_namespace``, ``unavailable_reason``) are the emulated rack's, from :mod:`lab.netns`.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import weakref
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from types import TracebackType
from typing import IO, Any

from lab.netns import exec_argv, in_namespace, namespace_pids, unavailable_reason
from lab.netns import ip as _ip

__all__ = ["Host", "Lab", "in_namespace", "unavailable_reason"]

logger = logging.getLogger(__name__)

_SETUP_TIMEOUT = 10.0
_labs = itertools.count(1)
#: Labs not closed yet, closed at interpreter exit (e.g. after Ctrl-C) as a last resort.
_open_labs: weakref.WeakSet[Lab] = weakref.WeakSet()


@atexit.register
def _close_open_labs() -> None:
    for lab in list(_open_labs):
        lab.close()


@dataclass(frozen=True)
class Host:
    """One machine on the lab segment.

    :ivar role: short name given to :meth:`Lab.add_host` (``srv``, ``cli``).
    :ivar ns: its namespace.
    :ivar ifname: its interface on the segment, inside ``ns``.
    :ivar mac: that interface's MAC.
    :ivar ip: its configured address, or ``None`` (a DHCP client before it has a lease).
    """

    role: str
    ns: str
    ifname: str
    mac: str
    ip: IPv4Address | None


class Lab:
    """An isolated Ethernet segment (and optionally a second one); use as a context manager.

    Add machines with :meth:`add_host`, and a second interface on segment 1 with :meth:`attach`.
    """

    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        self.number = next(_labs)
        self.prefix = f"ingot-{os.getpid()}-{self.number}"
        # 10.(100..199).(0..255).0/24: unique for every lab of this process (and usually across
        # processes); the namespaces isolate them anyway.
        self.network = IPv4Network(f"10.{100 + os.getpid() % 100}.{self.number % 256}.0/24")
        self.switch = f"{self.prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._links: list[tuple[str, str]] = []  # (namespace, link) to delete
        self._bridges: list[str] = []
        self._macs = 0
        self._processes: list[subprocess.Popen[Any]] = []
        self._sockets: list[socket.socket] = []
        self._closed = False
        _open_labs.add(self)

    # -- construction --------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self._add_namespace(self.switch)
            self._bridge(0)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name, timeout=_SETUP_TIMEOUT)
        self._namespaces.append(name)
        _ip("link", "set", "lo", "up", netns=name, timeout=_SETUP_TIMEOUT)
        # No IPv6: keeps router solicitations and DAD out of captured traffic.
        _ip("netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1", timeout=_SETUP_TIMEOUT)

    def _bridge(self, segment: int) -> str:
        bridge = f"br{segment}"
        if bridge not in self._bridges:
            _ip("link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0",
                netns=self.switch, timeout=_SETUP_TIMEOUT)
            self._links.append((self.switch, bridge))
            self._bridges.append(bridge)
            _ip("link", "set", bridge, "up", netns=self.switch, timeout=_SETUP_TIMEOUT)
        return bridge

    def network_of(self, segment: int = 0) -> IPv4Network:
        """The subnet of ``segment`` (0 is :attr:`network`; 1 is a second, separate segment)."""
        if segment == 0:
            return self.network
        if segment == 1:
            return IPv4Network(f"10.{200 + os.getpid() % 50}.{self.number % 256}.0/24")
        raise ValueError("a lab has segments 0 and 1")

    def address(self, index: int, segment: int = 0) -> IPv4Address:
        """The ``index``-th address of a segment's network (1 = ``10.x.y.1``)."""
        return self.network_of(segment).network_address + index

    def add_host(self, role: str, *, address: int | None = None, segment: int = 0) -> Host:
        """A new namespace with one interface, ``veth-<role>``, on ``segment``.

        :param role: short name, ``[a-z0-9]`` up to 8 characters.
        :param address: host index of its static address (``1`` = ``10.x.y.1/24``), or ``None``.
        """
        if not (role.isalnum() and role.islower() and len(role) <= 8) or role in self.hosts:
            raise ValueError(f"bad or duplicate role {role!r}")
        ns = f"{self.prefix}-{role}"
        self._add_namespace(ns)
        host = self._link(role, ns, f"veth-{role}", address, segment)
        self.hosts[role] = host
        return host

    def attach(self, host: Host, *, segment: int, address: int | None = None) -> Host:
        """Give ``host`` a further interface, ``veth-<role><segment>``, on another segment.

        :returns: a :class:`Host` view of the same namespace with the new interface.
        """
        self._ns(host)
        return self._link(host.role, host.ns, f"veth-{host.role}{segment}", address, segment)

    def _link(self, role: str, ns: str, ifname: str, address: int | None, segment: int) -> Host:
        bridge = self._bridge(segment)
        port = f"p-{ifname.removeprefix('veth-')}"
        self._macs += 1
        mac = f"02:1a:{self.number % 256:02x}:{self._macs:02x}:00:01"
        # Both ends are created inside lab namespaces; nothing touches the machine's own.
        _ip("link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns, netns=self.switch,
            timeout=_SETUP_TIMEOUT)
        self._links.append((self.switch, port))
        _ip("link", "set", port, "master", bridge, "up", netns=self.switch, timeout=_SETUP_TIMEOUT)
        _ip("link", "set", ifname, "address", mac, "up", netns=ns, timeout=_SETUP_TIMEOUT)
        ip: IPv4Address | None = None
        if address is not None:
            ip = self.address(address, segment)
            _ip("addr", "add", f"{ip}/{self.network_of(segment).prefixlen}", "dev", ifname, netns=ns,
                timeout=_SETUP_TIMEOUT)
        return Host(role, ns, ifname, mac, ip)

    # -- running things inside -----------------------------------------------------------------

    def _ns(self, where: Host | str) -> str:
        ns = where.ns if isinstance(where, Host) else where
        if ns not in self._namespaces:
            raise ValueError(f"{ns!r} is not a namespace of this lab")
        return ns

    def run_in(self, where: Host | str, argv: list[str], timeout: float, *, check: bool = False,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in a lab namespace and wait (killed after ``timeout`` seconds)."""
        result = subprocess.run(exec_argv(self._ns(where), argv), capture_output=True, text=True,
                                timeout=timeout, check=False, input=input)
        if check and result.returncode != 0:
            raise RuntimeError(f"{argv} in {where} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def spawn_in(self, where: Host | str, argv: list[str], *, stdin: int | IO[Any] | None = subprocess.DEVNULL,
                 stdout: int | IO[Any] | None = subprocess.DEVNULL, stderr: int | IO[Any] | None = subprocess.DEVNULL,
                 cwd: str | None = None, text: bool = True) -> subprocess.Popen[Any]:
        """Start ``argv`` in a lab namespace. It is killed by PID when the lab closes.

        ``ip netns exec`` execs the command in place, so the Popen's PID is the command's own.
        """
        process = subprocess.Popen(exec_argv(self._ns(where), argv), stdin=stdin, stdout=stdout,
                                   stderr=stderr, cwd=cwd, text=text)
        self._processes.append(process)
        return process

    def socket_in(self, where: Host | str, family: int, type: int, proto: int = 0) -> socket.socket:
        """A socket living in a lab namespace (closed when the lab closes)."""
        sock: socket.socket = in_namespace(self._ns(where), lambda: socket.socket(family, type, proto))
        self._sockets.append(sock)
        return sock

    def call_in(self, where: Host | str, work: Any) -> Any:
        """Run ``work()`` on a thread inside a lab namespace and return its result (e.g. an HTTP
        call to an appliance listening there); it must finish within the setup timeout."""
        return in_namespace(self._ns(where), work)

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill what the lab started, delete its links and namespaces. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        _open_labs.discard(self)
        for sock in self._sockets:
            sock.close()
        for process in self._processes:
            _stop_process(process)
        for ns in reversed(self._namespaces):
            self._kill_leftovers(ns)
        for ns, link in reversed(self._links):
            with contextlib.suppress(Exception):
                _ip("link", "del", link, netns=ns, check=False, timeout=_SETUP_TIMEOUT)
        for ns in reversed(self._namespaces):
            try:
                _ip("netns", "del", ns, timeout=_SETUP_TIMEOUT)
            except Exception as exc:
                logger.warning("could not delete namespace %s: %s", ns, exc)

    @staticmethod
    def _kill_leftovers(ns: str) -> None:
        # Only processes inside a namespace this lab created: descendants of what it started.
        try:
            pids = namespace_pids(ns)
        except Exception:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                logger.info("killing leftover pid %s in namespace %s", pid, ns)
                os.kill(pid, signal.SIGKILL)


def _stop_process(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
