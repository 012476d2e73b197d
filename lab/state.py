"""The lab's record on disk of everything it created, and :func:`teardown`, which removes exactly that.

Why a record: ``ingot lab up`` starts processes (the appliance, QEMU servers, virtual BMCs, the
port forwarder, the router-advertisement sender) and returns; ``ingot lab down`` runs later, in
another process, perhaps after ``up`` crashed half way. The only safe way to clean up is to write
down each thing *as it is created* and later remove what is written down — never to search for
processes or interfaces by name.

Theory of operation:

* One JSON file per lab, ``<state_dir>/<name>.json`` (:class:`LabRecord`). Every change is saved
  at once and atomically (temp file, fsync, rename, fsync of the directory), so a crash leaves
  either the old or the new record, never half of one.
* A process is recorded as (PID, start time, argv summary, role) (:class:`ProcessEntry`). The start
  time is field 22 of ``/proc/<pid>/stat`` (clock ticks after boot): a PID can be reused once the
  process is gone, the pair cannot, so teardown never signals a stranger. Signals go through a
  pidfd opened *before* the start time is checked, which closes the window between checking and
  killing. Processes started into the lab with ``ip netns exec NS argv...`` keep the Popen's PID
  (``ip`` execs in place): :func:`start_process` starts and records in one step.
* The namespace is recorded with the inode of its nsfs file: deleting it takes the bridges and
  taps inside with it, and a same-named namespace created later by someone else is left alone.
  A process still inside it at teardown (one a recorded process forked, or one started in the
  instant before it could be recorded) would keep it, and its taps, alive after ``ip netns del``:
  teardown stops those too, by PID (``ip netns pids``), sparing only itself and its ancestors.
* Files and directories the lab created are recorded by absolute path and removed in reverse order.

:func:`teardown` tries every step even when one fails, then raises :class:`TeardownError` listing
what it could not do (the record file is kept for another try); when all went well it deletes the
record file too. It is idempotent: processes already gone, a namespace already deleted and files
already removed are what it wants anyway, so a second teardown does nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lab.netns import check_name, exec_argv, ip, namespace_inode, namespace_pids

__all__ = [
    "LabRecord",
    "ProcessEntry",
    "TeardownError",
    "process_start_time",
    "record_path",
    "records",
    "start_process",
    "teardown",
]

log = logging.getLogger(__name__)

RECORD_VERSION = 1
_ARGV_SUMMARY_CHARS = 300
_KILL_WAIT_S = 5.0

_Redirect = int | IO[Any] | None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` from field 3 (state) on, or ``None`` if there is no such
    process. The command name (field 2) may hold spaces and parentheses, hence the last ')'."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone (ENOENT, or ESRCH while it exits)
        return None
    return data[data.rindex(")") + 2:].split()


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot (``/proc/<pid>/stat`` field 22), or ``None``."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


@dataclass
class ProcessEntry:
    """One process the lab started.

    :ivar pid: its PID.
    :ivar start_time: :func:`process_start_time` when it was recorded; teardown signals the PID
        only while this still matches.
    :ivar argv: a shell-quoted summary of its command line, for people reading ``status``.
    :ivar role: what it is to the lab (``appliance``, ``forward``, ``ra``, ``bmc``, ``server-1``, …).
    """

    pid: int
    start_time: int | None
    argv: str
    role: str

    def running(self) -> bool:
        """Whether the recorded process still runs (a zombie, or a reused PID, does not)."""
        fields = _stat_fields(self.pid)
        if fields is None or self.start_time is None:
            return False
        return fields[0] not in ("Z", "X") and int(fields[19]) == self.start_time

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_time": self.start_time, "argv": self.argv, "role": self.role}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessEntry:
        start = data.get("start_time")
        return cls(int(data["pid"]), None if start is None else int(start), str(data.get("argv", "")),
                   str(data.get("role", "")))


def record_path(state_dir: Path, name: str) -> Path:
    """Where the record of lab ``name`` lives."""
    return state_dir / f"{check_name(name)}.json"


@dataclass
class LabRecord:
    """Everything one lab created, kept on disk at :attr:`path`. Every ``add_*`` saves at once.

    :ivar name: the lab's name (also its namespace's name, by convention of :mod:`lab.network`).
    :ivar namespace: the network namespace it created, or ``None`` before it has one.
    :ivar namespace_inode: that namespace's identity (see :func:`lab.netns.namespace_inode`).
    :ivar processes: processes started for the lab, in start order.
    :ivar paths: files and directories created for the lab, in creation order.
    :ivar details: free-form JSON for the layers above (the network plan, forwarded ports, …).
    """

    path: Path
    name: str
    namespace: str | None = None
    namespace_inode: int | None = None
    processes: list[ProcessEntry] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    # -- files ---------------------------------------------------------------------------------

    @classmethod
    def new(cls, state_dir: Path, name: str) -> LabRecord:
        """Start the record of a new lab and save it.

        :raises FileExistsError: a record for ``name`` exists (the lab is up, or was not torn
            down): tear that one down first.
        """
        path = record_path(state_dir, name)
        if path.exists():
            raise FileExistsError(f"lab {name!r} already has a record at {path}; tear it down first")
        record = cls(path=path, name=name)
        record.save()
        return record

    @classmethod
    def load(cls, path: Path) -> LabRecord:
        """Read a record written by :meth:`save`.

        :raises FileNotFoundError: no such record.
        :raises ValueError: not a lab record (or from an unknown version).
        """
        try:
            data = json.loads(path.read_text())
            if data.get("version") != RECORD_VERSION:
                raise ValueError(f"unknown record version {data.get('version')!r}")
            return cls(path=path, name=str(data["name"]), namespace=data.get("namespace"),
                       namespace_inode=data.get("namespace_inode"),
                       processes=[ProcessEntry.from_dict(p) for p in data.get("processes", [])],
                       paths=[str(p) for p in data.get("paths", [])], details=dict(data.get("details", {})),
                       created=float(data.get("created", 0.0)))
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a lab record: {exc}") from None

    def as_dict(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, "name": self.name, "created": self.created,
                "namespace": self.namespace, "namespace_inode": self.namespace_inode,
                "processes": [p.as_dict() for p in self.processes], "paths": list(self.paths),
                "details": self.details}

    def save(self) -> None:
        """Write the record atomically: temp file in the same directory, fsync, rename, fsync dir."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        data = json.dumps(self.as_dict(), indent=2).encode() + b"\n"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    # -- what the lab created ------------------------------------------------------------------

    def add_namespace(self, ns: str) -> None:
        """Record namespace ``ns``, which the caller has just created (call it right after)."""
        inode = namespace_inode(ns)
        if inode is None:
            raise FileNotFoundError(f"namespace {ns!r} does not exist")
        self.namespace, self.namespace_inode = ns, inode
        self.save()

    def forget_namespace(self) -> None:
        self.namespace, self.namespace_inode = None, None
        self.save()

    def add_process(self, pid: int, role: str, argv: Iterable[str]) -> ProcessEntry:
        """Record a process the lab started (use :func:`start_process` to start and record at once)."""
        summary = shlex.join(argv)
        if len(summary) > _ARGV_SUMMARY_CHARS:
            summary = summary[:_ARGV_SUMMARY_CHARS - 1] + "…"
        entry = ProcessEntry(pid, process_start_time(pid), summary, role)
        self.processes.append(entry)
        self.save()
        return entry

    def add_path(self, path: Path) -> Path:
        """Record a file or directory the lab created (removed, recursively, at teardown)."""
        path = Path(os.path.abspath(path))
        if path == Path(path.anchor):
            raise ValueError("refusing to record the root directory")
        self.paths.append(str(path))
        self.save()
        return path

    # -- status --------------------------------------------------------------------------------

    def namespace_present(self) -> bool:
        """Whether the recorded namespace still exists (and is the one the lab created)."""
        return self.namespace is not None and namespace_inode(self.namespace) == self.namespace_inode

    def running_processes(self) -> list[ProcessEntry]:
        return [p for p in self.processes if p.running()]


def records(state_dir: Path) -> list[LabRecord]:
    """Every readable lab record under ``state_dir``, by name (unreadable ones are logged and skipped)."""
    found = []
    for path in sorted(state_dir.glob("*.json")) if state_dir.is_dir() else []:
        try:
            found.append(LabRecord.load(path))
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", path, exc)
    return found


def start_process(record: LabRecord, role: str, argv: list[str], *, netns: str | None = None,
                  env: Mapping[str, str] | None = None, cwd: Path | None = None,
                  stdout: _Redirect = subprocess.DEVNULL, stderr: _Redirect = subprocess.DEVNULL,
                  detach: bool = False) -> subprocess.Popen[bytes]:
    """Start ``argv`` (inside ``netns`` when given, via ``ip netns exec``) and record it at once.

    :param role: what it is to the lab, shown by ``status``.
    :param detach: start it in a new session, so it outlives the terminal of ``ingot lab up``.
    :returns: the Popen; its PID is the program's own (``ip netns exec`` execs in place). Wait on
        it after :func:`teardown` if you keep it, to collect its exit status.
    """
    full = exec_argv(netns, argv) if netns else list(argv)
    proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=detach)
    try:
        record.add_process(proc.pid, role, argv)
    except BaseException:
        proc.kill()
        proc.wait(_KILL_WAIT_S)
        raise
    return proc


# ==== teardown ===================================================================================

class TeardownError(RuntimeError):
    """Teardown finished every step it could; :attr:`problems` lists what it could not do."""

    def __init__(self, name: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"teardown of lab {name!r} left problems:\n  " + "\n  ".join(problems))


def teardown(record: LabRecord, *, grace: float = 10.0) -> None:
    """Remove everything ``record`` lists; see the module docstring.

    Order: recorded processes (SIGTERM, up to ``grace`` seconds, then SIGKILL); any process still
    inside the lab's own namespace (which would keep it alive after ``ip netns del``); the
    namespace, with its bridges and taps; recorded files and directories, newest first; finally
    the record file itself.

    :raises TeardownError: after trying every step, if any failed (the record file is kept).
    """
    problems: list[str] = []
    try:
        _stop(record.processes, grace, problems)
    except Exception as exc:  # keep going: the namespace and files are still to be removed
        problems.append(f"stopping the recorded processes: {exc}")

    ours = record.namespace is not None and namespace_inode(record.namespace) == record.namespace_inode
    if record.namespace is not None and not ours and namespace_inode(record.namespace) is not None:
        log.warning("namespace %s exists but is not the one lab %s created; left alone", record.namespace,
                    record.name)
    if ours and record.namespace is not None:
        try:
            spared = _ancestry()  # e.g. `ingot lab down` run from a shell inside the lab
            leftovers = [ProcessEntry(pid, process_start_time(pid), "", "leftover")
                         for pid in namespace_pids(record.namespace) if pid not in spared]
            for entry in leftovers:
                log.warning("stopping pid %d, still inside namespace %s", entry.pid, record.namespace)
            _stop(leftovers, grace, problems)
        except Exception as exc:
            problems.append(f"stopping what is left in namespace {record.namespace}: {exc}")
        try:
            ip("netns", "del", record.namespace)
        except Exception as exc:
            problems.append(f"deleting namespace {record.namespace}: {exc}")

    for name in reversed(record.paths):
        path = Path(name)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except Exception as exc:
            problems.append(f"removing {path}: {exc}")

    if problems:
        raise TeardownError(record.name, problems)
    record.path.unlink(missing_ok=True)


def _ancestry() -> set[int]:
    """This process and its ancestors, which teardown never signals."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        fields = _stat_fields(pid)
        pid = int(fields[1]) if fields else 0
    return pids


def _stop(entries: Iterable[ProcessEntry], grace: float, problems: list[str]) -> None:
    """SIGTERM every entry still running as recorded, wait up to ``grace`` s, SIGKILL the rest."""
    handles: dict[int, ProcessEntry] = {}  # pidfd -> entry
    for entry in entries:
        fd = _open(entry, problems)
        if fd is not None:
            handles[fd] = entry
    try:
        _signal_all(handles, signal.SIGTERM)
        remaining = _wait(handles, grace)
        if remaining:
            for fd in remaining:
                log.warning("pid %d (%s) ignored SIGTERM for %g s; killing it", handles[fd].pid,
                            handles[fd].role, grace)
            _signal_all({fd: handles[fd] for fd in remaining}, signal.SIGKILL)
            for fd in _wait({fd: handles[fd] for fd in remaining}, _KILL_WAIT_S):
                problems.append(f"pid {handles[fd].pid} ({handles[fd].role}) still runs after SIGKILL")
    finally:
        for fd in handles:
            os.close(fd)


def _open(entry: ProcessEntry, problems: list[str]) -> int | None:
    """A pidfd for ``entry``'s process if it is still the recorded one, else ``None``.

    The pidfd is opened first and the start time checked after: if the PID had been reused in
    between, the start time read would be the newcomer's and not match.
    """
    try:
        fd = os.pidfd_open(entry.pid)
    except ProcessLookupError:
        return None  # already gone
    except OSError as exc:
        problems.append(f"pid {entry.pid} ({entry.role}): cannot open a pidfd: {exc}")
        return None
    start = process_start_time(entry.pid)
    if entry.start_time is not None and start == entry.start_time:
        return fd
    os.close(fd)
    if start is not None:  # (None: it exited meanwhile)
        log.info("pid %d (%s) is not the recorded process (start time %s, recorded %s); not signalled",
                 entry.pid, entry.role, start, entry.start_time)
    return None


def _signal_all(handles: Mapping[int, ProcessEntry], signum: signal.Signals) -> None:
    for fd in handles:
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            signal.pidfd_send_signal(fd, signum)


def _wait(handles: Mapping[int, ProcessEntry], timeout: float) -> set[int]:
    """Wait until the processes behind ``handles`` exit (a zombie counts); return the pidfds left."""
    remaining = set(handles)
    poller = select.poll()
    for fd in remaining:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while remaining:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ in poller.poll(left * 1000):
            remaining.discard(fd)
            poller.unregister(fd)
    return remaining
