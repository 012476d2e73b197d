"""The agent's main loop: look the node up, post its inventory, then heartbeat and run the
commands the appliance hands out (``docs/agent-api.md``).

Flow:

1. ``lookup`` trades the boot token for the agent token. The appliance may not know the machine
   yet (it is still being enrolled: ``404``) or not be up (no connection, ``5xx``), so failures
   like these are retried with a capped exponential backoff, up to ``lookup_attempts`` or
   ``lookup_deadline_s`` (by default the boot token's default lifetime: after it a lookup cannot
   succeed). Anything else (``400``, ``409``: wrong machine) ends the agent with status 1.
2. The inventory (:func:`agent.inventory.collect`) is posted; a failure is reported on the
   console and retried a few times, but never stops the agent (``inventory`` can ask again).
3. Heartbeats every ``heartbeatIntervalS``; the commands they return run one at a time. While
   one runs, a thread keeps heartbeating (``busy`` = its id) so the appliance sees the agent
   alive through a long image write, and progress goes out at most every
   ``progress_interval_s``. Every command ends with a ``succeeded`` or ``failed`` report; an
   exception in a command is a failed report, never the end of the loop. A failed heartbeat is
   retried with the same capped backoff, whatever the reason (a ``401`` too: the agent has
   nothing better to do than wait for the appliance to know it again).

The commands (``docs/agent-api.md``): ``inventory``; ``write_image`` (:mod:`agent.imagewrite`);
``read_disk``, which streams the used part of a disk back for a capture (:mod:`agent.disklayout`
says how much, :mod:`agent.diskread` sends it); ``erase``; ``reboot`` and ``poweroff``.

``reboot`` and ``poweroff`` report ``succeeded`` *before* they act: afterwards nothing is left
to report with. They end the loop; so do the ``max_iterations`` and ``deadline_s`` test hooks.

Everything outside the process is injected: the clock and ``sleep`` (the heartbeat thread
alone waits on an Event in real time, as it must be stoppable at once), the ``root`` that
``proc``/``sys`` are read under, ``dev_dir`` the disks are opened in, and the :class:`System`
that syncs and reboots. Each step prints one ``INGOT-AGENT ...`` line on the console, which
never shows a token (messages are scrubbed of both tokens, whatever raised them).

Runs on the target under ``python3-minimal`` plus ``libpython3-stdlib``.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from agent import disklayout, diskread, inventory, lldp
from agent.bootparams import mask_token, printable
from agent.client import AGENT_VERSION, AgentApiError, AgentClient, AgentUnreachable, Command, LookupResult, RangeStream
from agent.imagewrite import write_image
from agent.rootdevice import choose_root_device

PREFIX = "INGOT-AGENT"
BUSYBOX = "/usr/bin/busybox"
MAX_MACS = 64  # the most a lookup may send
MiB = 1 << 20
ERASE_BYTES = MiB  # per end of each disk; GPT's backup header and table fit in the last 17 KiB
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class System(Protocol):
    """What the agent does to the machine itself."""

    def sync(self) -> None: ...

    def reboot(self) -> None: ...

    def poweroff(self) -> None: ...


class RealSystem:
    """The ramdisk's machine: ``os.sync()`` and busybox's ``reboot -f``/``poweroff -f`` (no init
    system to ask; ``-f`` goes straight to the kernel). Raises when busybox fails."""

    def sync(self) -> None:
        os.sync()

    def reboot(self) -> None:
        self._busybox("reboot")

    def poweroff(self) -> None:
        self._busybox("poweroff")

    @staticmethod
    def _busybox(applet: str) -> None:
        done = subprocess.run([BUSYBOX, applet, "-f"], stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                              check=False)
        if done.returncode != 0:
            output = (done.stderr or done.stdout).decode(errors="replace").strip()
            raise OSError(f"{BUSYBOX} {applet} -f exited with status {done.returncode}: {output or 'no output'}")


@dataclass(frozen=True)
class RunnerConfig:
    """How patient the agent is. The defaults suit a real machine; tests shrink them."""

    lookup_attempts: int | None = None  # None: until lookup_deadline_s
    lookup_deadline_s: float | None = 3600.0  # INGOT_BOOT__TOKEN_TTL_S's default
    inventory_attempts: int = 5
    report_attempts: int = 5  # for the final report of a command (a progress report is not retried)
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    min_interval_s: float = 0.05  # bounds on the appliance's heartbeatIntervalS
    max_interval_s: float = 300.0
    progress_interval_s: float = 1.0
    write_retries: int = 5  # dropped connections in a row during an image write (or a disk upload)
    write_backoff_s: float = 1.0
    lldp_wait_s: float = 0.0  # listen this long for each NIC's LLDP neighbour before the inventory (0: off)
    max_iterations: int | None = None  # test hook: heartbeats of the main loop
    deadline_s: float | None = None  # test hook: seconds after start (by the injected clock)


class CommandFailed(Exception):
    """A command cannot do what it was asked; ``str()`` is the failed report's message."""


class CommandAborted(Exception):
    """The appliance ended the command (``409`` to a report): the agent stops working on it."""


@dataclass
class _Done:
    result: dict[str, Any]
    message: str
    then: Callable[[], None] | None = field(default=None)  # what follows the succeeded report


def _retryable(exc: AgentApiError) -> bool:
    """Failures that may pass: the appliance does not know the node yet, or is overloaded."""
    return exc.status in (404, 408, 429) or exc.status >= 500


def _final(exc: AgentUnreachable | AgentApiError, attempt: int, attempts: int) -> bool:
    """Whether a failed call is not worth another attempt."""
    return attempt >= attempts or (isinstance(exc, AgentApiError) and not _retryable(exc))


def _one_line(text: str, limit: int = 500) -> str:
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def _describe(exc: BaseException) -> str:
    """An exception as a report message: the text of the agent's own errors, the type too
    for anything unexpected (a bare KeyError's text is just the key)."""
    ours = isinstance(exc, CommandFailed | AgentApiError | AgentUnreachable | ValueError)
    if ours or type(exc).__module__.startswith("agent."):
        return str(exc) or type(exc).__name__
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _mib(n: int, scale: int) -> str:
    """``n`` bytes in MiB, with one decimal when ``scale`` (the image's size) is under 10 MiB."""
    return f"{n / MiB:.{1 if scale < 10 * MiB else 0}f}"


class Runner:
    """One agent run against one appliance (see the module docstring)."""

    def __init__(self, client: AgentClient, boot_token: str, *, macs: Sequence[str],
                 address: Callable[[], str | None] = lambda: None, system: System | None = None,
                 out: TextIO | None = None, root: str = "/", dev_dir: str = "/dev",
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 config: RunnerConfig | None = None) -> None:
        self.client = client
        self._boot_token = boot_token
        self._agent_token: str | None = None
        self.macs = list(dict.fromkeys(macs))[:MAX_MACS]
        self.address = address
        self.system: System = system if system is not None else RealSystem()
        self.out = out
        self.root = root
        self.dev_dir = dev_dir
        self.clock = clock
        self.sleep = sleep
        self.config = config if config is not None else RunnerConfig()
        self.node: str | None = None
        self.interval_s = 5.0
        self._pending: deque[Command] = deque()
        self._lock = threading.Lock()
        self._started = clock()
        self.lldp_listen = lldp.listen  # tests listen on their own

    def __repr__(self) -> str:
        return (f"Runner(client={self.client!r}, boot_token={mask_token(self._boot_token)}, node={self.node!r}, "
                f"macs={self.macs!r})")

    # -- console -----------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """One ``INGOT-AGENT`` line on the console, scrubbed of the tokens."""
        line = f"{PREFIX} {_one_line(self._scrub(text))}\n"
        stream = self.out if self.out is not None else sys.stdout  # stdout as it is now
        with self._lock:
            stream.write(line)
            stream.flush()

    def _scrub(self, text: str) -> str:
        for secret in (self._boot_token, self._agent_token):
            if secret:
                text = text.replace(secret, mask_token(secret))
        return text

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> int:
        """The whole run; the exit status (0 after reboot/poweroff or a test hook, 1 when the
        lookup gave up)."""
        self._started = self.clock()
        found = self.lookup()
        if found is None:
            return 1
        self.post_inventory()
        iterations = 0
        failures = 0
        while True:
            command = self._next_command()
            if command is not None:
                if self.run_command(command):
                    return 0
                continue
            if self._hook_says_stop(iterations):
                return 0
            iterations += 1
            try:
                self.heartbeat(None)
            except (AgentUnreachable, AgentApiError) as exc:
                failures += 1
                delay = self._backoff(failures)
                self.say(f"heartbeat failed: {exc}; retry in {delay:g} s")
                self.sleep(delay)
                continue
            failures = 0
            if not self._pending:
                self.sleep(self.interval_s)

    def _hook_says_stop(self, iterations: int) -> bool:
        config = self.config
        if config.max_iterations is not None and iterations >= config.max_iterations:
            return True
        return config.deadline_s is not None and self.clock() - self._started >= config.deadline_s

    def _backoff(self, failures: int) -> float:
        config = self.config
        return min(config.backoff_initial_s * 2.0 ** (failures - 1), config.backoff_max_s)

    def _set_interval(self, value: float) -> None:
        self.interval_s = min(max(value, self.config.min_interval_s), self.config.max_interval_s)

    def lookup(self) -> LookupResult | None:
        """The lookup, retried as the module docstring says; None when it gave up."""
        config = self.config
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                found = self.client.lookup(self._boot_token, self.macs, AGENT_VERSION)
            except AgentUnreachable as exc:
                reason = str(exc)
            except AgentApiError as exc:
                if not _retryable(exc):
                    self.say(f"lookup failed: {exc}; giving up")
                    return None
                reason = str(exc)
            else:
                self._agent_token = found.agent_token
                self.node = found.node
                self._set_interval(found.heartbeat_interval_s)
                self.say(f"lookup ok node={printable(found.node)} heartbeat={self.interval_s:g} s")
                return found
            out_of_attempts = config.lookup_attempts is not None and attempt >= config.lookup_attempts
            out_of_time = config.lookup_deadline_s is not None and self.clock() - started >= config.lookup_deadline_s
            if out_of_attempts or out_of_time:
                self.say(f"lookup failed: {reason}; giving up after {attempt} attempts")
                return None
            delay = self._backoff(attempt)
            self.say(f"lookup failed: {reason}; retry in {delay:g} s")
            self.sleep(delay)

    def post_inventory(self) -> bool:
        """Collect and post the inventory, retrying what may pass; whether it got there."""
        data = inventory.collect(self.root)
        if self.config.lldp_wait_s > 0:
            self._add_lldp_neighbours(data)
        for attempt in range(1, self.config.inventory_attempts + 1):
            try:
                self.client.post_inventory(data)
            except (AgentUnreachable, AgentApiError) as exc:
                if _final(exc, attempt, self.config.inventory_attempts):
                    self.say(f"inventory failed: {exc}; giving up")
                    return False
                delay = self._backoff(attempt)
                self.say(f"inventory failed: {exc}; retry in {delay:g} s")
                self.sleep(delay)
            else:
                self.say(f"inventory posted disks={len(data['disks'])} nics={len(data['nics'])}")
                return True
        return False

    def _add_lldp_neighbours(self, data: inventory.Inventory) -> None:
        """Each NIC with a link gets ``lldp``: the neighbour it heard within ``lldp_wait_s``, or None."""
        listening = [nic["name"] for nic in data["nics"] if nic["link"]]
        started = self.clock()
        heard, problems = self.lldp_listen(listening, self.config.lldp_wait_s)
        for nic in data["nics"]:
            nic["lldp"] = heard.get(nic["name"])
        for name, why in sorted(problems.items()):
            self.say(f"lldp: cannot listen on {name}: {why}")
        self.say(f"lldp neighbours={len(heard)} of {len(listening)} in {self.clock() - started:.1f} s")

    def uptime_s(self) -> float:
        """The machine's uptime (``proc/uptime``), or the agent's own when that is unreadable."""
        try:
            with open(os.path.join(self.root, "proc/uptime")) as f:
                return float(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return max(0.0, self.clock() - self._started)

    def heartbeat(self, busy: str | None) -> None:
        """One heartbeat; the commands it returns join the queue. Raises AgentUnreachable or
        AgentApiError."""
        reply = self.client.heartbeat(self.uptime_s(), self.address(), busy)
        self._set_interval(reply.interval_s)
        if reply.commands:
            with self._lock:
                self._pending.extend(reply.commands)

    def _next_command(self) -> Command | None:
        with self._lock:
            return self._pending.popleft() if self._pending else None

    # -- commands ----------------------------------------------------------------------------

    def run_command(self, command: Command) -> bool:
        """Run one command and report how it ended; True when the loop is over (the machine is
        rebooting or powering off)."""
        label = f"command {printable(command.name)} {printable(command.id)}"
        self.say(f"{label} started")
        pulse = _Heartbeats(self, command.id)
        pulse.start()
        done: _Done | None = None
        error: str | None = None
        try:
            self._report_progress(command, 0, "Started.")
            done = self._dispatch(command)
        except CommandAborted as exc:
            self.say(f"{label} failed: {exc}")
            return False
        except Exception as exc:  # any failure of a command is its report, not the agent's end
            error = _describe(exc)
        finally:
            pulse.stop()
        if done is None:
            message = self._scrub(error or "failed")
            self._final_report(command, "failed", 0, message, error=message)
            self.say(f"{label} failed: {message}")
            return False
        self._final_report(command, "succeeded", 100, done.message, result=done.result)
        self.say(f"{label} succeeded: {done.message}")
        if done.then is None:
            return False
        try:
            done.then()
        except Exception as exc:  # the machine did not go down: keep serving
            self.say(f"{label} did not take effect: {_describe(exc)}")
            return False
        return True

    def _dispatch(self, command: Command) -> _Done:
        handlers: dict[str, Callable[[Command], _Done]] = {
            "inventory": self._inventory,
            "write_image": self._write_image,
            "reboot": self._reboot,
            "poweroff": self._poweroff,
            "erase": self._erase,
            "read_disk": self._read_disk,
        }
        handler = handlers.get(command.name)
        if handler is None:
            raise CommandFailed(f"unknown command {printable(command.name, 100)}")
        return handler(command)

    def _report_progress(self, command: Command, percent: int, message: str) -> None:
        """A ``running`` report. A failed one is only printed (the command goes on), except a
        ``409``: the appliance has ended the command, so the agent stops too."""
        try:
            self.client.report(command.id, "running", percent, message)
        except AgentApiError as exc:
            if exc.status == 409:
                raise CommandAborted(f"the appliance ended the command ({exc})") from None
            self.say(f"progress report failed: {exc}")
        except AgentUnreachable as exc:
            self.say(f"progress report failed: {exc}")

    def _final_report(self, command: Command, state: str, percent: int, message: str,
                      result: Mapping[str, Any] | None = None, error: str | None = None) -> None:
        for attempt in range(1, self.config.report_attempts + 1):
            try:
                self.client.report(command.id, state, percent, message, result=result, error=error)
                return
            except (AgentUnreachable, AgentApiError) as exc:
                if _final(exc, attempt, self.config.report_attempts):
                    self.say(f"report of command {printable(command.id)} failed: {exc}")
                    return
                delay = self._backoff(attempt)
                self.say(f"report of command {printable(command.id)} failed: {exc}; retry in {delay:g} s")
                self.sleep(delay)

    def _inventory(self, command: Command) -> _Done:
        data = inventory.collect(self.root)
        self.client.post_inventory(data)
        return _Done({}, f"Posted the inventory ({len(data['disks'])} disks, {len(data['nics'])} NICs).")

    def _reboot(self, command: Command) -> _Done:
        return _Done({}, "Rebooting.", then=lambda: self._go_down("reboot", self.system.reboot))

    def _poweroff(self, command: Command) -> _Done:
        return _Done({}, "Powering off.", then=lambda: self._go_down("poweroff", self.system.poweroff))

    def _go_down(self, what: str, action: Callable[[], None]) -> None:
        self.say(f"{what}: syncing the disks")
        self.system.sync()
        action()

    def _erase(self, command: Command) -> _Done:
        """Erase what identifies the data on every fixed disk: the first and last ``ERASE_BYTES``
        (partition tables, the GPT backup, RAID, LVM and file system signatures at either end), as
        Ironic's metadata erase does. Nothing on the disk can be found or mounted afterwards; a
        full overwrite is a different, much slower command."""
        erased = []
        for disk in inventory.disks(self.root):
            if disk["removable"] or not disk["size_bytes"]:
                continue
            device = os.path.join(self.dev_dir, disk["name"])
            size = disk["size_bytes"]
            span = min(ERASE_BYTES, size)
            fd = self._open_for_writing(device)
            try:
                zeros = bytes(span)
                for offset in sorted({0, max(0, size - span)}):
                    if os.pwrite(fd, zeros, offset) != span:
                        raise CommandFailed(f"short write erasing {device} at byte {offset}")
                os.fsync(fd)
            except OSError as exc:
                raise CommandFailed(f"erasing {device} failed: {exc.strerror or exc}") from None
            finally:
                os.close(fd)
            erased.append(disk["name"])
            self._report_progress(command, len(erased) * 100 // (len(erased) + 1), f"Erased {device}.")
        return _Done({"disks": erased}, f"Erased the metadata of {len(erased)} disks: {', '.join(erased) or 'none'}.")

    def _open_for_writing(self, device: str) -> int:
        flags = os.O_WRONLY | os.O_CLOEXEC
        try:
            if stat.S_ISBLK(os.stat(device).st_mode):
                flags |= os.O_EXCL  # a block device in use (mounted, a RAID member) refuses
            return os.open(device, flags)
        except OSError as exc:
            raise CommandFailed(f"cannot open {device} for writing: {exc.strerror or exc}") from None

    def _write_image(self, command: Command) -> _Done:
        params = command.params
        url = params.get("url")
        sha256 = params.get("sha256")
        size = params.get("size")
        hints = params.get("rootDeviceHints")
        if not isinstance(url, str) or not url:
            raise CommandFailed("write_image needs the image's url")
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise CommandFailed("write_image needs the image's sha256 (64 hex digits)")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise CommandFailed(f"write_image: size={size!r} is not a number of bytes")
        if hints is not None and not isinstance(hints, dict):
            raise CommandFailed("write_image: rootDeviceHints is not an object")
        disk = choose_root_device(inventory.disks(self.root), hints)
        if size is not None and disk["size_bytes"] and size > disk["size_bytes"]:
            raise CommandFailed(f"the image ({size} bytes) does not fit on {disk['name']} "
                                f"({disk['size_bytes']} bytes)")
        device = os.path.join(self.dev_dir, disk["name"])
        self.say(f"write_image: {printable(self.client.image_url(url).split('?')[0])} to {device}")
        written = self._write(command, url, device, sha256, size)
        return _Done({"device": device, "bytes": written, "sha256": sha256.lower()},
                     f"Wrote {_mib(written, written)} MiB to {device}; SHA-256 verified.")

    def _write(self, command: Command, url: str, device: str, sha256: str, size: int | None) -> int:
        fd = self._open_for_writing(device)
        streams: list[RangeStream] = []
        last = self.clock()

        def open_stream(offset: int) -> RangeStream:
            while streams:  # imagewrite drops a broken stream without closing it
                streams.pop().close()
            stream = self.client.open_range(url, offset)
            streams.append(stream)
            return stream

        def progress(done: int, total: int | None) -> None:
            nonlocal last
            now = self.clock()
            if now - last < self.config.progress_interval_s or (total is not None and done >= total):
                return  # the last one is the succeeded report
            last = now
            percent = min(99, done * 100 // total) if total else 0
            self._report_progress(command, percent,
                                  f"Wrote {_mib(done, total)} of {_mib(total, total)} MiB." if total
                                  else f"Wrote {_mib(done, done)} MiB.")

        try:
            return write_image(open_stream, fd, sha256=sha256, size=size, retries=self.config.write_retries,
                               backoff_s=self.config.write_backoff_s, on_progress=progress, sleep=self.sleep)
        finally:
            while streams:
                streams.pop().close()
            os.close(fd)

    def _read_disk(self, command: Command) -> _Done:
        """Stream the disk the hints choose back to the appliance (a capture): its used part, up
        to the end of the last partition (:mod:`agent.disklayout`), or all of it with ``whole``."""
        params = command.params
        hints = params.get("rootDeviceHints")
        whole = params.get("whole")
        if hints is not None and not isinstance(hints, dict):
            raise CommandFailed("read_disk: rootDeviceHints is not an object")
        if whole is not None and not isinstance(whole, bool):
            raise CommandFailed(f"read_disk: whole={printable(repr(whole), 100)} is not a bool")
        disk = choose_root_device(inventory.disks(self.root), hints)
        device = os.path.join(self.dev_dir, disk["name"])
        try:
            fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise CommandFailed(f"cannot open {device} for reading: {exc.strerror or exc}") from None
        try:
            read_at = _reader(fd)
            try:
                size = os.lseek(fd, 0, os.SEEK_END) or disk["size_bytes"]
                total, how = (size, disklayout.WHOLE) if whole else disklayout.used_bytes(
                    read_at, size, sector_size=self._sector_size(disk["name"]))
            except OSError as exc:
                raise CommandFailed(f"reading the partition table of {device} failed: {exc.strerror or exc}") from None
            self.say(f"read_disk: {device} {total} of {size} bytes ({how})")
            done = self._upload(command, read_at, total)
        finally:
            os.close(fd)
        # The backup GPT at the end of the disk lies past the last partition: not captured.
        result = {"device": device, "bytes": done.bytes, "sha256": done.sha256, "sent": done.sent, "layout": how,
                  "gptBackupOmitted": how == disklayout.GPT and total < size}
        return _Done(result, f"Read {_mib(done.bytes, done.bytes)} MiB of {device} ({_mib(done.sent, done.bytes)} "
                             f"MiB sent); SHA-256 {done.sha256}.")

    def _sector_size(self, name: str) -> int:
        """The disk's logical sector size, which its partition table counts in (512 unless the
        kernel says otherwise: a 4Kn disk's is 4096)."""
        try:
            with open(os.path.join(self.root, "sys/block", name, "queue/logical_block_size")) as f:
                size = int(f.read().strip())
        except (OSError, ValueError):
            return disklayout.SECTOR
        return size if size >= disklayout.SECTOR and not size & (size - 1) else disklayout.SECTOR

    def _upload(self, command: Command, read_at: Callable[[int, int], bytes], total: int) -> diskread.ReadResult:
        client = self.client
        last = self.clock()

        def call(what: Callable[[], dict[str, Any]]) -> dict[str, Any]:
            """A ``5xx`` is worth a retry (diskread retries ConnectionError), a ``409`` means the
            appliance ended the command; any other error fails it."""
            try:
                return what()
            except AgentApiError as exc:
                if exc.status >= 500:
                    raise ConnectionError(str(exc)) from None
                if exc.status == 409:
                    raise CommandAborted(f"the appliance ended the command ({exc})") from None
                raise CommandFailed(f"the appliance refused the disk upload: {exc}") from None

        def progress(done: int, total: int, sent: int) -> None:
            nonlocal last
            now = self.clock()
            if now - last < self.config.progress_interval_s or done >= total:
                return  # the last one is the succeeded report
            last = now
            self._report_progress(command, min(99, done * 100 // total), f"Read {_mib(done, total)} of "
                                  f"{_mib(total, total)} MiB ({_mib(sent, total)} MiB sent).")

        try:
            return diskread.read_disk(
                read_at, total,
                send=lambda start, data, n: call(lambda: client.upload_range(command.id, start, data, n)),
                finish=lambda n: call(lambda: client.finish_upload(command.id, n)),
                status=lambda: call(lambda: client.upload_status(command.id)),
                chunk=diskread.CHUNK, retries=self.config.write_retries, backoff_s=self.config.write_backoff_s,
                on_progress=progress, sleep=self.sleep)
        except diskread.ReadFailed as exc:
            raise CommandFailed(str(exc)) from None


def _reader(fd: int) -> Callable[[int, int], bytes]:
    """``read_at(offset, length)`` on ``fd``: ``length`` bytes, fewer only at the end."""

    def read_at(offset: int, length: int) -> bytes:
        data = os.pread(fd, length, offset)
        if len(data) == length or not data:
            return data
        parts = [data]
        got = len(data)
        while got < length:
            more = os.pread(fd, length - got, offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    return read_at


class _Heartbeats:
    """Heartbeats with ``busy`` set, from a thread, while a command runs. A heartbeat's commands
    join the queue the main loop works through afterwards (each is handed out only once)."""

    def __init__(self, runner: Runner, busy: str) -> None:
        self._runner = runner
        self._busy = busy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{busy[:40]}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._runner.client.timeout + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self._runner.interval_s):
            try:
                self._runner.heartbeat(self._busy)
            except (AgentUnreachable, AgentApiError) as exc:
                self._runner.say(f"heartbeat failed: {exc}")
            except Exception as exc:  # the thread must not die silently mid-command
                self._runner.say(f"heartbeat failed: {_describe(exc)}")
