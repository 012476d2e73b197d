"""Network namespaces for the emulated rack: the ``ip`` runner, joining a namespace, and asking
whether one exists.

Why it is shaped this way:

* Everything the lab builds lives inside named network namespaces (``ip netns add``, a bind mount
  under ``/run/netns``), so nothing ever touches the machine's own interfaces. iproute2 is the one
  tool that creates and deletes them, so :func:`ip` is a thin runner around it: a timeout on every
  call (a wedged netlink call must not hang ``ingot lab up``) and an :class:`IpError` that carries
  the command line and iproute2's own message.
* Talking to a service that listens only inside a namespace does not need a process in it:
  ``setns(2)`` with ``CLONE_NEWNET`` moves just the calling *thread*, and a socket keeps the
  namespace it was created in for its whole life. :func:`in_namespace` runs a function on a
  short-lived thread that joined the namespace, so the rest of the process never leaves its own;
  :func:`enter_namespace` is the building block (the port forwarder calls it once on its main
  thread, after binding its listeners in the host namespace). Python 3.11 has no ``os.setns``,
  hence ctypes.
* A namespace is identified by its name *and* the inode of its nsfs file
  (:func:`namespace_inode`): a name can be reused by a later lab, the inode cannot while the first
  one exists, so teardown deletes only the namespace it created.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); :func:`unavailable_reason` says why not, in words.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "IP",
    "NETNS_DIR",
    "IpError",
    "check_name",
    "enter_namespace",
    "exec_argv",
    "in_namespace",
    "ip",
    "list_namespaces",
    "namespace_exists",
    "namespace_inode",
    "namespace_pids",
    "unavailable_reason",
]

T = TypeVar("T")

#: Where ``ip netns add`` bind-mounts named namespaces.
NETNS_DIR = Path("/run/netns")
#: The iproute2 binary (``/usr/sbin`` is not on every PATH, e.g. under sudo or cron).
IP = shutil.which("ip") or "/usr/sbin/ip"
_CLONE_NEWNET = 0x40000000  # linux/sched.h
_DEFAULT_TIMEOUT = 30.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_libc: Any = None


class IpError(RuntimeError):
    """An ``ip`` command failed or timed out.

    :ivar argv: the full command line.
    :ivar returncode: its exit status (``None`` when it timed out or could not start).
    :ivar stderr: what iproute2 printed, e.g. ``RTNETLINK answers: File exists``.
    """

    def __init__(self, argv: list[str], returncode: int | None, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(argv)}: {stderr or f'exit status {returncode}'}")


def unavailable_reason() -> str | None:
    """Why labs cannot be built here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not os.path.exists(IP):
        return "iproute2 'ip' is not installed"
    return None


def check_name(name: str) -> str:
    """``name`` if it is usable as a namespace (and lab record) name, else :class:`ValueError`."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad lab/namespace name {name!r}: letters, digits, '_', '.', '-'; at most 63")
    return name


def ip(*args: str, netns: str | None = None, timeout: float = _DEFAULT_TIMEOUT, check: bool = True) -> str:
    """Run ``ip [-n NETNS] ARGS...`` and return its standard output.

    :param netns: run the command against this namespace (``ip -n``) instead of the caller's.
    :param timeout: seconds before the command is killed and :class:`IpError` raised.
    :param check: raise :class:`IpError` on a non-zero exit (else return stdout regardless).
    :raises IpError: with the command line and iproute2's message.
    """
    argv = [IP, *(("-n", netns) if netns else ()), *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise IpError(argv, None, f"timed out after {timeout:g} s") from None
    except OSError as exc:  # no iproute2 at all
        raise IpError(argv, None, str(exc)) from None
    if check and proc.returncode != 0:
        raise IpError(argv, proc.returncode, proc.stderr.strip())
    return proc.stdout


def exec_argv(netns: str, argv: list[str]) -> list[str]:
    """``argv`` run inside ``netns``. ``ip netns exec`` execs in place: the PID is the program's."""
    return [IP, "netns", "exec", netns, *argv]


def list_namespaces() -> list[str]:
    """Names of the namespaces under :data:`NETNS_DIR` (all of them, not only the lab's)."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def namespace_exists(ns: str) -> bool:
    return namespace_inode(ns) is not None


def namespace_inode(ns: str) -> int | None:
    """The inode of namespace ``ns`` (its identity while it exists), or ``None`` if there is none.

    ``/run/netns/<ns>`` is a bind mount of the namespace's nsfs file; a bare file left by a
    half-finished ``ip netns add`` is on another device and does not count.
    """
    path = NETNS_DIR / ns
    try:
        mounted, parent = os.stat(path), os.stat(NETNS_DIR)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return mounted.st_ino if mounted.st_dev != parent.st_dev else None


def namespace_pids(ns: str) -> list[int]:
    """PIDs of the processes whose network namespace is ``ns`` (``ip netns pids``)."""
    out = ip("netns", "pids", ns, check=False, timeout=10)
    return [int(word) for word in out.split() if word.isdigit()]


def enter_namespace(ns: str) -> None:
    """Move the *calling thread* into network namespace ``ns`` (setns(2)).

    Sockets created afterwards by this thread, and threads it starts afterwards, live in ``ns``.
    Sockets it created before stay where they were.

    :raises OSError: the namespace does not exist or we lack CAP_SYS_ADMIN.
    """
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def in_namespace(ns: str, work: Callable[[], T], timeout: float = 10.0) -> T:
    """Run ``work()`` on a fresh thread that has joined network namespace ``ns``; return its result.

    Only that thread moves, and it exits right after, so the rest of the process never leaves
    its own namespace. A socket created by ``work`` stays in ``ns`` for its whole life, whichever
    thread uses it later.

    :raises TimeoutError: ``work`` did not finish within ``timeout`` seconds (the daemon thread
        is abandoned, still inside ``ns``).
    :raises: whatever ``work`` (or joining the namespace) raised.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            enter_namespace(ns)
            box["result"] = work()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"setns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"work in namespace {ns} did not finish within {timeout} s")
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


def in_own_namespace() -> bool:
    """Whether this process runs inside a named network namespace (one ``ip netns add`` made, such
    as a lab's), not in the machine's own (which is never under /run/netns)."""
    try:
        own = os.stat("/proc/self/ns/net").st_ino
        return any(entry.stat().st_ino == own for entry in NETNS_DIR.iterdir())
    except OSError:
        return False
