"""Run an OS build plan's scripts against an OS volume with the real ``guestfish`` (issue 6).

A plan script is a guestfish command list (see docs: HPE plan scripts): ``mount /dev/sda1 /``,
``upload -<<END /etc/hostname`` here-documents, ``!cmd`` / ``<!cmd`` local shell escapes, a leading
``-`` that lets one command fail, ``#`` comments. Tokens (``@Hostname@``) are already substituted.

How the scripts are run
-----------------------
One ``guestfish --rw --format=qcow2 -a VOLUME`` process per build plan, fed on its **stdin** (not a
tty, so guestfish is in its non-interactive mode). ``run`` launches the appliance once, then every
command of every script is written *one at a time*, each followed by ``echo <marker>`` where the marker
holds a random nonce; we read until the marker comes back. Why this and not ``--listen``/``--remote``:

* Error attribution is exact and free: in non-interactive mode guestfish exits on the first failing
  command unless that line starts with ``-`` (its own, documented semantics, which HPE's scripts rely
  on). The command that was in flight when guestfish exited (no marker, EOF) is the one that failed,
  so we know the script name and its line number; guestfish's stderr for that command is the reason.
  A ``-`` command that fails prints its error and the marker still comes back (logged, not fatal).
* guestfish flushes stdout after every command, so markers arrive at once; stderr is a second pipe,
  drained after each marker, so each command has its own output and error text and its own timing.
* ``-<<END`` here-documents are read by guestfish from the same stdin, so they just work.
* It is one ordinary child process: it stays in the process group/session we create, takes the
  PR_SET_PDEATHSIG we give it, and its temp files live under our TMPDIR. ``guestfish --listen`` forks
  a daemon (it leaves our control: no pdeathsig, no process-group kill), puts its socket in
  ``/tmp/.guestfish-UID``, and costs one client process per command.

Safety
------
* Before the appliance is launched, every script is parsed and checked: ``!cmd``, ``<!cmd`` and
  ``cmd | shell`` pipes are refused unless ``allow_shell``; local paths of upload/download/copy-in/
  copy-out/tar-in/... must stay inside the run's working directory (no absolute path, no ``..``, no
  ``~``, no symlink out); commands that touch the host or the handle (``lcd``, ``edit``, ``event``,
  ``add-drive``, ``set-network``, ``quit`` ...) are refused. Output of ``<!cmd`` is checked the same
  way before it is fed.
* Shell escapes, when allowed, are run by us (not by guestfish): ``/bin/sh -c`` in the run's working
  directory, with a minimal environment and a timeout; the directory is removed after the run.
* Environment: ``LIBGUESTFS_BACKEND=direct``, ``LIBGUESTFS_BACKEND_SETTINGS=force_tcg``, the
  appliance cache in ``WORK/guestfs-cache`` (kept: supermin builds it once), TMPDIR in a per-run
  directory. No network: libguestfs's appliance has none unless asked and ``set-network`` is refused.
* A total timeout: on expiry the guestfish process group, every descendant (qemu runs in its own
  process group), and any process whose command line mentions the per-run directory are SIGKILLed.
* Secrets (values given by the caller) are replaced with ``********`` everywhere in the log,
  including here-document bodies and guestfish output.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets as _secrets
import selectors
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

__all__ = [
    "LAUNCH_SHARE",
    "MASK",
    "CommandResult",
    "PlanFailed",
    "PlanRun",
    "PlanStep",
    "StepResult",
    "dies_with_parent",
    "guestfish_environment",
    "guestfish_version",
    "launch_time",
    "processes_mentioning",
    "run_plan",
]

MASK = "********"
GUESTFISH = "guestfish"
SHELL_TIMEOUT = 120.0  # seconds, for one ``!cmd`` (also capped by what is left of the plan's timeout)
# run_plan's progress: the appliance launch is most of a run under TCG (~12 s of ~15 s).
LAUNCH_SHARE = 60.0
SCRIPTS_END = 97.0  # what is left is the appliance's shutdown
_CACHE_DIR = "guestfs-cache"


# ============================================================================================================
# Public types
# ============================================================================================================


@dataclass(frozen=True)
class PlanStep:
    """One plan script of a build plan, tokens already substituted."""

    name: str
    content: str


@dataclass
class CommandResult:
    """One command as run. ``text`` and ``output``/``error`` are masked."""

    line: int
    text: str
    output: str
    error: str
    ok: bool
    ignored: bool  # the line started with ``-``
    seconds: float


@dataclass
class StepResult:
    name: str
    seconds: float
    commands: list[CommandResult] = field(default_factory=list)


@dataclass
class PlanRun:
    log: str
    steps: list[StepResult]
    seconds: float
    launch_seconds: float = 0.0


class PlanFailed(Exception):
    """The plan failed in ``step`` (script name) at ``line`` (1-based line of that script); both are
    None when the failure is not tied to a script line (appliance launch, shutdown)."""

    def __init__(self, step: str | None, line: int | None, reason: str, log: str, *, launched: bool = True) -> None:
        where = f"{step}:{line}: " if step is not None and line is not None else (f"{step}: " if step else "")
        super().__init__(f"{where}{reason}")
        self.step = step
        self.line = line
        self.reason = reason
        self.log = log
        self.launched = launched  # False: the appliance never came up, so no script touched the volume


# ============================================================================================================
# Parsing and checking
# ============================================================================================================

Kind = Literal["gf", "shell", "shell-gf"]
_FailFactory = Callable[[str | None, int | None, str], PlanFailed]


@dataclass(frozen=True)
class _Unit:
    """One thing to run: a guestfish command (with its here-document bodies) or a shell escape."""

    line: int
    kind: Kind
    text: str  # exactly what is written to guestfish (gf) or the shell command (shell, shell-gf)
    ignore_errors: bool


class _Refused(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


# Commands whose arguments at these positions are *local* (host) paths. -1 = last, "rest" = all but last.
_LOCAL_IN = "in"
_LOCAL_OUT = "out"
_LOCAL_ARGS: dict[str, list[tuple[int | str, str]]] = {
    "upload": [(0, _LOCAL_IN)],
    "upload-offset": [(0, _LOCAL_IN)],
    "download": [(1, _LOCAL_OUT)],
    "download-offset": [(1, _LOCAL_OUT)],
    "download-blocks": [(3, _LOCAL_OUT)],
    "download-inode": [(2, _LOCAL_OUT)],
    "copy-in": [("rest", _LOCAL_IN)],
    "copy-out": [(-1, _LOCAL_OUT)],
    "tar-in": [(0, _LOCAL_IN)],
    "tar-in-opts": [(0, _LOCAL_IN)],
    "tgz-in": [(0, _LOCAL_IN)],
    "txz-in": [(0, _LOCAL_IN)],
    "tar-out": [(1, _LOCAL_OUT)],
    "tar-out-opts": [(1, _LOCAL_OUT)],
    "tgz-out": [(1, _LOCAL_OUT)],
    "txz-out": [(1, _LOCAL_OUT)],
    "cpio-out": [(1, _LOCAL_OUT)],
    "compress-out": [(2, _LOCAL_OUT)],
    "compress-device-out": [(2, _LOCAL_OUT)],
    "base64-in": [(0, _LOCAL_IN)],
    "base64-out": [(1, _LOCAL_OUT)],
    "checksums-out": [(2, _LOCAL_OUT)],
    "find0": [(1, _LOCAL_OUT)],
    "ls0": [(1, _LOCAL_OUT)],
    "debug-upload": [(0, _LOCAL_IN)],
}

# Commands that act on the host, on the libguestfs handle's configuration, or end the session.
_REFUSED: dict[str, str] = {
    **dict.fromkeys(["lcd"], "changes the local working directory"),
    **dict.fromkeys(["edit", "vi", "emacs", "hexedit", "more", "less", "display", "man"],
                    "starts a local program"),
    **dict.fromkeys(["event", "delete-event"], "runs local shell code on events"),
    **dict.fromkeys(["setenv", "unsetenv"], "changes guestfish's environment"),
    **dict.fromkeys(["add", "add-drive", "add-drive-opts", "add-drive-ro", "add-drive-ro-with-if",
                     "add-drive-with-if", "add-drive-scratch", "add-cdrom", "add-domain", "domain",
                     "add-libvirt-dom", "alloc", "allocate", "sparse", "disk-create", "reopen",
                     "mount-local", "mount-local-run", "umount-local", "remote"],
                    "uses local disks or mounts"),
    **dict.fromkeys(["launch", "run", "shutdown", "kill-subprocess", "close", "quit", "exit", "q"],
                    "controls the appliance session, which the executor owns"),
    **dict.fromkeys(["set-network", "set-path", "set-qemu", "set-hv", "set-backend", "set-attach-method",
                     "set-cachedir", "set-tmpdir", "set-append", "set-program", "set-backend-settings",
                     "set-backend-setting", "clear-backend-setting", "config", "set-direct", "set-memsize",
                     "set-smp", "set-recovery-proc", "set-autosync", "set-identifier"],
                    "changes the appliance configuration"),
}
_PREFIXES = {"glob", "time"}  # ``glob CMD ARGS``, ``time CMD ARGS``: check CMD


def _tokenize(line: int, text: str) -> tuple[list[str], bool]:
    """Split a guestfish command line like guestfish does: the command, then arguments that are
    bare words, ``"double"`` (backslash escapes) or ``'single'`` quoted. Returns the tokens and
    whether an unquoted ``|`` (a pipe to a local shell) is present."""
    tokens: list[str] = []
    pipe = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
            continue
        if c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                raise _Refused(line, "unterminated double quote")
            tokens.append("".join(buf))
            i = j + 1
        elif c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                raise _Refused(line, "unterminated single quote")
            tokens.append(text[i + 1:j])
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in " \t":
                j += 1
            word = text[i:j]
            if "|" in word:
                pipe = True
            tokens.append(word)
            i = j
    return tokens, pipe


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-")


def _check_local_path(line: int, command: str, value: str, direction: str, files_dir: Path | None) -> None:
    if value.startswith("-<<") and direction == _LOCAL_IN:
        return  # here-document
    if value == "-":
        if direction == _LOCAL_OUT:
            return  # to stdout, i.e. the log
        raise _Refused(line, f"{command}: '-' (stdin) would read the command stream; use a -<<END here-document")
    if not value:
        raise _Refused(line, f"{command}: empty local path")
    if value.startswith(("/", "~")):
        raise _Refused(line, f"{command}: local path {value!r} is absolute; local paths must stay in the "
                             "run's working directory")
    if ".." in Path(value).parts:
        raise _Refused(line, f"{command}: local path {value!r} contains '..'; local paths must stay in the "
                             "run's working directory")
    if files_dir is not None:
        base = files_dir.resolve()
        target = (base / value).resolve()
        if target != base and base not in target.parents:
            raise _Refused(line, f"{command}: local path {value!r} resolves outside the run's working directory")


def _check_command(line: int, text: str, *, allow_shell: bool, files_dir: Path | None) -> None:
    tokens, pipe = _tokenize(line, text)
    if not tokens:
        return
    if pipe and not allow_shell:
        raise _Refused(line, "piping command output to a local shell ('|') is not allowed (allow_shell is off)")
    while tokens and _normalize(tokens[0]) in _PREFIXES:
        tokens = tokens[1:]
    if not tokens:
        return
    command, args = _normalize(tokens[0]), tokens[1:]
    if command in _REFUSED:
        raise _Refused(line, f"command {tokens[0]!r} is not allowed in a plan script: it {_REFUSED[command]}")
    for position, direction in _LOCAL_ARGS.get(command, []):
        if position == "rest":
            chosen = args[:-1]
        elif isinstance(position, int) and -len(args) <= position < len(args):
            chosen = [args[position]]
        else:
            chosen = []
        for value in chosen:
            _check_local_path(line, command, value, direction, files_dir)


def _parse(content: str, *, first_line: int = 1, fixed_line: int | None = None) -> list[_Unit]:
    """Split a script into units. ``fixed_line`` gives every unit that line number (commands that
    came out of a ``<!cmd``)."""
    lines = content.replace("\r\n", "\n").split("\n")
    units: list[_Unit] = []
    i = 0
    while i < len(lines):
        number = fixed_line if fixed_line is not None else first_line + i
        raw = lines[i]
        i += 1
        text = raw.lstrip(" \t")
        ignore = False
        while text.startswith("-"):
            ignore = True
            text = text[1:].lstrip(" \t")
        if not text.strip() or text.startswith("#"):
            continue
        if text.startswith("!"):
            units.append(_Unit(number, "shell", text[1:], ignore))
            continue
        if text.startswith("<!"):
            units.append(_Unit(number, "shell-gf", text[2:], ignore))
            continue
        # Here-documents: every argument ``-<<MARKER`` takes the following lines up to MARKER.
        tokens, _ = _tokenize(number, text)
        body: list[str] = []
        for token in tokens[1:]:
            if token.startswith("-<<"):
                end = token[3:]
                if not end:
                    raise _Refused(number, "here-document with an empty end marker")
                while True:
                    if i >= len(lines):
                        raise _Refused(number, f"here-document not terminated (missing {end!r} line)")
                    body.append(lines[i])
                    i += 1
                    if body[-1] == end:
                        break
        prefix = "-" if ignore else ""
        units.append(_Unit(number, "gf", "\n".join([prefix + text, *body]), ignore))
    return units


def _check_unit(unit: _Unit, *, allow_shell: bool, files_dir: Path | None) -> None:
    if unit.kind in ("shell", "shell-gf"):
        if not allow_shell:
            sigil = "!" if unit.kind == "shell" else "<!"
            raise _Refused(unit.line, f"local shell command '{sigil}{unit.text.strip()}' refused: "
                                      "shell escapes are not allowed (allow_shell is off)")
        return
    head = unit.text.split("\n", 1)[0].lstrip("-").lstrip(" \t")
    _check_command(unit.line, head, allow_shell=allow_shell, files_dir=files_dir)


# ============================================================================================================
# Masking and the log
# ============================================================================================================


class _Masker:
    def __init__(self, secrets: Sequence[str]) -> None:
        values = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text


class _Log:
    def __init__(self, masker: _Masker) -> None:
        self.mask = masker
        self._lines: list[str] = []
        self._start = time.monotonic()

    def write(self, text: str, prefix: str = "") -> None:
        stamp = f"[{time.monotonic() - self._start:8.2f}] "
        for part in self.mask(text).rstrip("\n").split("\n"):
            self._lines.append(f"{stamp}{prefix}{part}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


# ============================================================================================================
# Processes
# ============================================================================================================


def dies_with_parent() -> list[str]:
    """``setpriv --pdeathsig KILL --``: guestfish is killed when the thread that started it exits
    (PR_SET_PDEATHSIG survives the exec). libguestfs's recovery process then kills qemu."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def guestfish_environment(cache_dir: Path, tmp_dir: Path) -> dict[str, str]:
    """The executor's environment: direct backend with force_tcg (no KVM here), its own appliance
    cache and temporary directory, nothing inherited that would change libguestfs's behaviour."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LIBGUESTFS_", "GUESTFISH_")) and k not in ("XDG_RUNTIME_DIR", "TMPDIR")}
    env.update({
        "LIBGUESTFS_BACKEND": "direct",
        "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg",
        "LIBGUESTFS_CACHEDIR": str(cache_dir),
        "TMPDIR": str(tmp_dir),
        "LC_ALL": "C.UTF-8",
        "HOME": str(tmp_dir),
    })
    return env


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _descendants(pid: int) -> list[int]:
    children = _children_map()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def processes_mentioning(text: str) -> list[int]:
    """PIDs of processes whose command line contains ``text`` (used to sweep up anything a run started:
    qemu's command line names the run's TMPDIR)."""
    needle = text.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found


def _kill_tree(proc: subprocess.Popen[bytes], *needles: tuple[Path, ...]) -> None:
    """SIGKILL guestfish's process group, every descendant (and their process groups, should libguestfs
    put qemu in its own), then any process whose command line mentions *all* paths of one of
    ``needles`` (see :func:`_sweep`); then reap guestfish."""
    pids = _descendants(proc.pid)
    groups = {proc.pid}
    for pid in pids:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    groups.discard(os.getpgrp())
    for group in groups:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    for pid in [proc.pid, *pids]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    _sweep(*needles)


def _sweep(*needles: tuple[Path, ...]) -> None:
    """Kill leftovers that were re-parented away from guestfish: a process matches a needle when its
    command line names every path in it. Used with (run dir,) and (volume, appliance cache): qemu's
    command line names both the volume (``-drive file=``) and the cached appliance kernel, so nobody
    else's process that merely mentions the volume is touched."""
    for _ in range(20):
        left: set[int] = set()
        for needle in needles:
            matches = [set(processes_mentioning(str(path))) for path in needle]
            left |= set.intersection(*matches) if matches else set()
        if not left:
            return
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


class _Timeout(Exception):
    pass


class _Session:
    """One guestfish process fed on stdin; ``exchange`` writes a unit and waits for its marker."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin and proc.stdout and proc.stderr
        self.proc = proc
        self._in = proc.stdin.fileno()
        self._out = proc.stdout.fileno()
        self._err = proc.stderr.fileno()
        for fd in (self._in, self._out, self._err):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._nonce = _secrets.token_hex(12)
        self._seq = 0
        self._stdout = b""
        self._stderr = b""
        self.eof = False

    def exchange(self, payload: str, deadline: float) -> tuple[str, str, bool]:
        """Run ``payload``; return (stdout, stderr, completed). Not completed = guestfish exited."""
        self._seq += 1
        marker = f"@@ingot-{self._nonce}-{self._seq}@@".encode()
        data = (payload.rstrip("\n") + "\n" + f"echo {marker.decode()}\n").encode()
        selector = selectors.DefaultSelector()
        writing = True
        try:
            selector.register(self._in, selectors.EVENT_WRITE)
        except (ValueError, OSError):
            writing = False
        if not self.eof:
            selector.register(self._out, selectors.EVENT_READ)
            selector.register(self._err, selectors.EVENT_READ)
        err_open = not self.eof
        try:
            while True:
                position = self._stdout.find(marker + b"\n")
                if position >= 0:
                    out = self._stdout[:position]
                    self._stdout = self._stdout[position + len(marker) + 1:]
                    self._drain_stderr()
                    err, self._stderr = self._stderr, b""
                    return _decode(out), _decode(err), True
                if self.eof and not err_open:
                    out, err = self._stdout, self._stderr
                    self._stdout = self._stderr = b""
                    return _decode(out), _decode(err), False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Timeout
                for key, _ in selector.select(timeout=min(remaining, 1.0)):
                    fd = key.fd
                    if fd == self._in:
                        try:
                            written = os.write(fd, data)
                            data = data[written:]
                        except BlockingIOError:
                            continue
                        except (BrokenPipeError, OSError):
                            data = b""
                        if not data:
                            selector.unregister(fd)
                            writing = False
                        continue
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if fd == self._out:
                        if chunk:
                            self._stdout += chunk
                        else:
                            self.eof = True
                            selector.unregister(fd)
                    elif chunk:
                        self._stderr += chunk
                    else:
                        err_open = False
                        selector.unregister(fd)
                if not selector.get_map():
                    if self.eof:
                        err_open = False
                    elif not writing:
                        raise _Timeout  # nothing left to wait on: cannot happen unless pipes vanish
        finally:
            selector.close()

    def _drain_stderr(self) -> None:
        while True:
            try:
                chunk = os.read(self._err, 65536)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            self._stderr += chunk

    def drain(self) -> tuple[str, str]:
        """What is left on stdout and stderr once guestfish has exited."""
        self._drain_stderr()
        while not self.eof:
            try:
                chunk = os.read(self._out, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            self._stdout += chunk
        out, err = self._stdout, self._stderr
        self._stdout = self._stderr = b""
        return _decode(out), _decode(err)

    def close_input(self) -> None:
        assert self.proc.stdin
        with contextlib.suppress(OSError):
            self.proc.stdin.close()


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


_STDIN_PREFIX = re.compile(r"^\*stdin\*:\d+: ", re.MULTILINE)


def _clean_error(text: str) -> str:
    return _STDIN_PREFIX.sub("", text).strip()


def _run_shell(command: str, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run ``/bin/sh -c command`` in ``cwd``; return (exit status or None on timeout, output)."""
    shell_env = {"PATH": env.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "TMPDIR": str(cwd),
                 "LC_ALL": "C.UTF-8", "PWD": str(cwd)}
    proc = subprocess.Popen([*dies_with_parent(), "/bin/sh", "-c", command], cwd=cwd, env=shell_env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(timeout, 0.1))
        return proc.returncode, _decode(out)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, _decode(out)


# ============================================================================================================
# The executor
# ============================================================================================================


def run_plan(
    volume: Path,
    scripts: Sequence[PlanStep],
    *,
    work_dir: Path,
    secrets: Sequence[str] = (),
    allow_shell: bool = False,
    timeout: float = 600.0,
    log_path: Path | None = None,
    shell_timeout: float = SHELL_TIMEOUT,
    on_progress: Callable[[float], None] | None = None,
) -> PlanRun:
    """Run ``scripts`` in order against ``volume`` (qcow2, opened read-write) in one appliance session.

    Raises :class:`PlanFailed` (with the script name, its line number and guestfish's error) when a
    command fails (unless its line starts with ``-``), a script is refused, or ``timeout`` expires.
    The log (masked) is returned and, when ``log_path`` is given, written there in both cases.

    ``on_progress(percent)`` is told how far the run is: :data:`LAUNCH_SHARE` percent once the
    appliance is up (under TCG its launch is most of the time), then an equal share per command
    of the scripts, 100 when the appliance has shut down."""
    report = on_progress or (lambda _percent: None)
    started = time.monotonic()
    deadline = started + timeout
    masker = _Masker(secrets)
    log = _Log(masker)
    volume_path = Path(volume).resolve()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = work_dir / _CACHE_DIR
    cache_dir.mkdir(mode=0o700, exist_ok=True)
    run_dir = work_dir / f"run-{uuid.uuid4().hex[:12]}"
    files_dir = run_dir / "files"
    tmp_dir = run_dir / "tmp"
    files_dir.mkdir(parents=True)
    tmp_dir.mkdir()

    steps: list[StepResult] = []
    launch_seconds = 0.0

    def fail(step: str | None, line: int | None, reason: str, *, launched: bool = True) -> PlanFailed:
        reason = masker(reason)
        where = f"{step}:{line}: " if step is not None and line is not None else ""
        log.write(f"PLAN FAILED: {where}{reason}")
        return PlanFailed(step, line, reason, log.text(), launched=launched)

    proc: subprocess.Popen[bytes] | None = None
    try:
        log.write(f"plan run {datetime.now(UTC).isoformat(timespec='seconds')}: volume {volume}, "
                  f"{len(scripts)} script(s), allow_shell={allow_shell}, timeout={timeout:g}s")
        # Parse and check everything before paying for an appliance launch.
        parsed: list[tuple[PlanStep, list[_Unit]]] = []
        for step in scripts:
            try:
                units = _parse(step.content)
                for unit in units:
                    _check_unit(unit, allow_shell=allow_shell, files_dir=files_dir)
            except _Refused as refused:
                raise fail(step.name, refused.line, refused.reason) from None
            parsed.append((step, units))

        env = guestfish_environment(cache_dir, tmp_dir)
        argv = [*dies_with_parent(), GUESTFISH, "--rw", "--no-progress-bars", "--format=qcow2",
                "-a", str(volume_path)]
        log.write("$ " + " ".join(argv))
        try:
            proc = subprocess.Popen(argv, cwd=files_dir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except FileNotFoundError:
            raise fail(None, None, "guestfish is not installed (Debian package libguestfs-tools)") from None
        session = _Session(proc)

        current: tuple[str | None, int | None] = (None, None)
        up = False  # whether the appliance launched: until it has, no script touched the volume
        try:
            t0 = time.monotonic()
            log.write("> run", "")
            out, err, completed = session.exchange("run", deadline)
            launch_seconds = time.monotonic() - t0
            if out.strip():
                log.write(out, "  ")
            if err.strip():
                log.write(_clean_error(err), "  ! ")
            if not completed:
                raise fail(None, None, "appliance launch failed: "
                                       + (_clean_error(err) or f"guestfish exited with {proc.wait()}"), launched=False)
            up = True
            log.write(f"appliance launched in {launch_seconds:.2f} s")
            report(LAUNCH_SHARE)
            total_units, units_done = max(1, sum(len(units) for _, units in parsed)), 0

            for index, (step, units) in enumerate(parsed, start=1):
                log.write(f"=== script {index}/{len(parsed)}: {step.name} ===")
                result = StepResult(step.name, 0.0)
                steps.append(result)
                step_t0 = time.monotonic()
                queue = list(units)
                own = {id(u) for u in units}
                while queue:
                    unit = queue.pop(0)
                    current = (step.name, unit.line)
                    generated = _run_unit(unit, step.name, session, log, result, files_dir, env, deadline,
                                          allow_shell, shell_timeout, fail)
                    queue[:0] = generated
                    if id(unit) in own:  # a script's own command (not one a shell escape generated)
                        units_done += 1
                        report(LAUNCH_SHARE + (SCRIPTS_END - LAUNCH_SHARE) * units_done / total_units)
                result.seconds = time.monotonic() - step_t0
                log.write(f"=== script {step.name} done in {result.seconds:.2f} s ===")

            current = (None, None)
            log.write("> exit (shutting the appliance down)")
            session.close_input()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            try:
                rc = proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                raise _Timeout from None
            tail_out, tail_err = session.drain()
            if tail_out.strip():
                log.write(tail_out, "  ")
            if tail_err.strip():
                log.write(_clean_error(tail_err), "  ! ")
            if rc != 0:
                raise fail(None, None, f"guestfish exited with status {rc} while shutting down")
        except _Timeout:
            _kill_tree(proc, (run_dir,), (volume_path, cache_dir))
            raise fail(current[0], current[1], f"timed out after {timeout:g} s; guestfish and qemu were killed",
                       launched=up) from None

        seconds = time.monotonic() - started
        report(100)
        log.write(f"plan done in {seconds:.2f} s (appliance launch {launch_seconds:.2f} s)")
        return PlanRun(log.text(), steps, seconds, launch_seconds)
    except PlanFailed as failed:
        failed.log = log.text()
        raise
    finally:
        if proc is not None:
            if proc.poll() is None:
                _kill_tree(proc, (run_dir,), (volume_path, cache_dir))
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        if log_path is not None:
            log_path = Path(log_path)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(log.text())


def _run_unit(
    unit: _Unit,
    step: str,
    session: _Session,
    log: _Log,
    result: StepResult,
    files_dir: Path,
    env: dict[str, str],
    deadline: float,
    allow_shell: bool,
    shell_timeout: float,
    fail: _FailFactory,
) -> list[_Unit]:
    """Run one unit; return units generated by ``<!cmd`` (to run next)."""
    mask = log.mask
    t0 = time.monotonic()
    if unit.kind in ("shell", "shell-gf"):
        sigil = "!" if unit.kind == "shell" else "<!"
        log.write(f"{'-' if unit.ignore_errors else ''}{sigil}{unit.text}", f"> (line {unit.line}) ")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout
        status, output = _run_shell(unit.text, files_dir, env, min(shell_timeout, remaining))
        seconds = time.monotonic() - t0
        ok = status == 0
        if output.strip() and unit.kind == "shell":
            log.write(output, "  ")
        result.commands.append(CommandResult(unit.line, mask(sigil + unit.text),
                                             mask(output if unit.kind == "shell" else ""),
                                             "" if ok else f"exit status {status}", ok, unit.ignore_errors, seconds))
        if status is None:
            if time.monotonic() >= deadline:
                raise _Timeout
            raise fail(step, unit.line, f"local shell command timed out after {shell_timeout:g} s")
        if not ok:
            if unit.ignore_errors:
                log.write(f"(ignored) local shell command exited with status {status}", "  ! ")
            else:
                raise fail(step, unit.line, f"local shell command exited with status {status}: "
                                            f"{output.strip()[-500:]}")
        if unit.kind == "shell-gf" and ok:
            log.write(output, "  <! ")
            try:
                generated = _parse(output, fixed_line=unit.line)
                for item in generated:
                    _check_unit(item, allow_shell=allow_shell, files_dir=files_dir)
            except _Refused as refused:
                raise fail(step, unit.line, f"command generated by '<!': {refused.reason}") from None
            return generated
        return []

    log.write(unit.text, f"> (line {unit.line}) ")
    out, err, completed = session.exchange(unit.text, deadline)
    seconds = time.monotonic() - t0
    error = _clean_error(err)
    if out.strip():
        log.write(out, "  ")
    if error:
        log.write(error, "  ! ")
    ok = completed and not (unit.ignore_errors and error)
    result.commands.append(CommandResult(unit.line, mask(unit.text.split("\n", 1)[0]), mask(out), mask(error),
                                         ok, unit.ignore_errors, seconds))
    if not completed:
        status = session.proc.poll()
        if status is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = session.proc.wait(timeout=max(0.1, min(10.0, deadline - time.monotonic())))
        raise fail(step, unit.line, error or f"guestfish exited unexpectedly (status {status})")
    if unit.ignore_errors and error:
        log.write("(error ignored: the line starts with '-')", "  ! ")
    return []


# ============================================================================================================
# Helpers for benchmarks and diagnostics
# ============================================================================================================


def guestfish_version() -> str:
    """The installed guestfish's version, e.g. ``1.48.6``. FileNotFoundError when not installed."""
    done = subprocess.run([GUESTFISH, "--version"], capture_output=True, text=True, timeout=30, check=True)
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", done.stdout)
    return match.group(1) if match else done.stdout.strip()


def launch_time(work_dir: Path, *, timeout: float = 300.0) -> float:
    """Seconds to start and shut down a bare appliance (no disk) with the executor's settings.
    Uses (and on the first call fills) the appliance cache in ``work_dir``."""
    work_dir = Path(work_dir)
    cache_dir = work_dir / _CACHE_DIR
    cache_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
    run_dir = work_dir / f"launch-{uuid.uuid4().hex[:12]}"
    tmp_dir = run_dir / "tmp"
    tmp_dir.mkdir(parents=True)
    t0 = time.monotonic()
    proc = subprocess.Popen([*dies_with_parent(), GUESTFISH, "--ro", "--format=raw", "-a", "/dev/null",
                             "--", "run", ":", "exit"], cwd=run_dir,
                            env=guestfish_environment(cache_dir, tmp_dir), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"guestfish launch failed ({proc.returncode}): {_decode(err).strip()}")
        return time.monotonic() - t0
    except subprocess.TimeoutExpired:
        _kill_tree(proc, (run_dir,), (Path("/dev/null"), cache_dir))
        raise
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
