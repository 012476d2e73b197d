"""Personalizing OS volumes with a deploy build plan: Ingot's plan executor (plans.guestfish) versus
``virt-customize`` doing the same file writes, one run, beside the bare guestfish launch as the floor.

    .venv/bin/python -m bench.personalize [--volumes 20] [--parallel N] [--peer-volumes N]
        [--launch-repeats 3] [--repeats 2] [--timeout 1200] [--tmpdir DIR]

Needs guestfish (Debian package libguestfs-tools), virt-customize (guestfs-tools) and qemu-img. No
network: the appliances get none (virt-customize is run with ``--no-network``). Every libguestfs
appliance here runs the way Ingot's executor runs it: ``LIBGUESTFS_BACKEND=direct``,
``LIBGUESTFS_BACKEND_SETTINGS=force_tcg`` (no KVM: QEMU's TCG), its appliance cache in the run's
temporary directory, TMPDIR per run, the environment built by plans.guestfish itself. Under TCG
one appliance launch takes ~12-15 s on two cores (~18 s each when two run at once), so the
default run takes 7-9 minutes (the more, the busier the machine), ``--volumes 4`` about 4 (3 of
them are the fixed part: golden image, floor, the single-volume rounds, the read-back; add
``--repeats 1 --launch-repeats 1`` for ~2.5), ``--peer-volumes 20`` adds ~4.
Everything is made in one temporary directory (``--tmpdir``, default the system's; a few MiB of
real data), removed at the end, on Ctrl-C or on SIGTERM, after every process this run started
(anything whose command line names that directory: guestfish, qemu, virt-customize, libguestfs's
recovery process) has been SIGKILLed by PID.

Setup (untimed): a golden image, a 256 MiB qcow2 disk with an MBR, one ext4 partition (label
root) and a small Linux root (/etc/os-release, /etc/fstab, /etc/hostname, /etc/hosts, /bin,
/etc/sysconfig/network-scripts, /etc/udev/rules.d, /var/lib/systemd), is made with one
``run_plan`` (which also builds the supermin appliance cache that every later launch uses) and
ingested into a fresh ``ImageStore`` (``store.ingest``); every volume below is a
``store.create_volume`` clone of it (a qcow2 overlay, ~20 ms; the clone times are printed apart).

The deploy build plan, five HPE-style plan scripts with ``@Token@`` placeholders: mount root
(``-list-filesystems``, ``mount /dev/sda1 /``); hostname (``upload -<<END`` of /etc/hostname and
/etc/hosts from @Hostname@, @DomainName@, @NIC1.ipaddress@); NICs keyed by MAC (ifcfg-nic1,
static, HWADDR=@NIC1.mac@, and ifcfg-nic2, DHCP, HWADDR=@NIC2.mac@, and a udev rule naming both
NICs by MAC); first boot (a bash script under /EFI/HPE/isdeploy/scripts with the root password
@RootPassword@, ``chmod 0755``); umount (``sync``, ``umount /``). Six files, 14 guestfish commands.
Every volume gets its own hostname, MACs, address and password.

What is timed:
1. Floor: ``guestfish --rw --format=qcow2 -a CLONE -- run : exit`` (launch the appliance with the
   volume attached read-write, shut it down) with the executor's environment, ``--launch-repeats``
   times on one clone; min and median.
2. Ingot, one volume (``--repeats`` rounds, 2, each on a fresh clone, interleaved with 4. and 5. in
   an order that rotates every round; medians shown), what the appliance's personalize task does: tokens substituted
   (``plans.tokens.substitute`` with ``guard=guestfish_safe``, as appliance.services.personalize
   does), ``run_plan`` (one guestfish session: ``run``, then each command on its own with an echo
   marker after it), and the masked log written into the store (``store.write_volume_log``).
   Shown against the floor's median; run_plan's own split (launch, scripts, the rest: shutdown,
   process start, log) is printed too.
3. Ingot, ``--volumes`` (20) volumes, each its own clone and values, the same work as 2. on a pool
   of ``--parallel`` worker threads. Default parallelism: the CPUs this process may run on, capped
   by memory (MemAvailable / (the appliance's memsize, ``guestfish get-memsize``, + 256 MiB of QEMU
   overhead)) and by the number of volumes. Wall time from the start of the pool until its last
   volume is done, volumes per minute, median per volume, and parallel efficiency
   = volumes x the one-volume time / (wall time x parallelism).
4. Peer: ``virt-customize --no-network --format qcow2 -a CLONE --mkdir ... --write FILE:CONTENT ...
   --chmod 0755:FIRSTBOOT``, the six files with the same bytes (the content is substituted in
   Python first, untimed; ``--write`` rather than ``--hostname`` so that the bytes are the same),
   one volume (as 2.) and then ``--peer-volumes`` (default: two per worker, two rounds of the pool,
   to keep the default run short; ``--peer-volumes 20`` for Ingot's batch size) on the same pool.
   virt-customize inspects the guest to find its root (an appliance launch plus inspection) and
   sets a random seed; that is what an admin gets from it. Its own progress stamps give the split.
   The ratios printed are Ingot / peer (below 1: Ingot is faster); for the batches, of the wall
   time per volume (wall time / volumes).
5. Also, one volume (as 2.): the same substituted commands fed to one ``guestfish --rw -a CLONE`` as a
   single here-document, the hand-written way (what run_plan's one-command-at-a-time exchange
   costs over it).

Then, untimed, one read-only guestfish session downloads the six files from the first single
Ingot volume, the first and last of Ingot's batch, the first single virt-customize volume, the
last of its batch and the first here-document volume, and compares them byte for byte with what was asked
(and the first-boot script's mode, 0755). A volume that does not read back exactly fails the run.

The machine's facts (CPUs, memory, kernel, guestfish/virt-customize/QEMU versions, the
accelerator, the temporary directory's file system, load average) are printed first and the load
average again at the end. Timings are reported, never asserted. Exit status 1 if a step fails, a
volume does not read back, or the run passes ``--timeout`` (every guestfish and virt-customize gets
what is left of it as its own timeout); 2 if a tool is missing; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.errors import InvalidInput
from bench.common import Deadline, OutOfTime, Terminated, file_system, load_average
from golden_images import qemu_img
from golden_images.assess import ImageRefused
from golden_images.store import ImageStore

# The floor, the peers and the read-back run in exactly the executor's environment (direct backend,
# force_tcg, its appliance cache, TMPDIR) and with its parent-death guard.
from plans.guestfish import (
    PlanFailed,
    PlanStep,
    dies_with_parent,
    guestfish_environment,
    guestfish_version,
    processes_mentioning,
    run_plan,
)
from plans.tokens import guestfish_safe, substitute

MiB = 1 << 20
GiB = 1 << 30
GOLDEN_VIRTUAL = 256 * MiB
MAX_VIRTUAL = 1 * GiB
QEMU_OVERHEAD_MIB = 256  # per appliance, above its guest memory, when capping parallelism by memory
NEED_FREE = 1 * GiB
CACHE_DIR = "guestfs-cache"  # the name plans.guestfish gives the appliance cache under its work_dir
REAP_WAIT_S = 5.0  # libguestfs's recovery process may outlive guestfish by ~1-2 s

# -- the build plan -------------------------------------------------------------------------------------

HOSTNAME_PATH = "/etc/hostname"
HOSTS_PATH = "/etc/hosts"
NET_DIR = "/etc/sysconfig/network-scripts"
IFCFG1_PATH = f"{NET_DIR}/ifcfg-nic1"
IFCFG2_PATH = f"{NET_DIR}/ifcfg-nic2"
UDEV_DIR = "/etc/udev/rules.d"
UDEV_PATH = f"{UDEV_DIR}/70-persistent-net.rules"
FIRSTBOOT_DIR = "/EFI/HPE/isdeploy/scripts"
FIRSTBOOT_PATH = f"{FIRSTBOOT_DIR}/01-personalize.bash"
FIRSTBOOT_MODE = 0o100755

HOSTNAME_T = "@Hostname@\n"
HOSTS_T = ("127.0.0.1 localhost localhost.localdomain\n"
           "@NIC1.ipaddress@ @Hostname@.@DomainName@ @Hostname@\n")
IFCFG1_T = ("DEVICE=nic1\nHWADDR=@NIC1.mac@\nBOOTPROTO=none\nONBOOT=yes\nIPADDR=@NIC1.ipaddress@\n"
            "NETMASK=@NIC1.netmask@\nGATEWAY=@NIC1.gateway@\nDNS1=@NIC1.dns@\n")
IFCFG2_T = "DEVICE=nic2\nHWADDR=@NIC2.mac@\nBOOTPROTO=dhcp\nONBOOT=yes\n"
UDEV_T = ('SUBSYSTEM=="net", ACTION=="add", ATTR{address}=="@NIC1.mac@", NAME="nic1"\n'
          'SUBSYSTEM=="net", ACTION=="add", ATTR{address}=="@NIC2.mac@", NAME="nic2"\n')
FIRSTBOOT_T = ("#!/bin/bash\n# written by the deploy build plan; runs once at first boot\nset -e\n"
               "hostnamectl set-hostname '@Hostname@.@DomainName@'\n"
               "echo 'root:@RootPassword@' | chpasswd\n"
               "nmcli connection reload || true\n"
               'rm -f "$0"\n')

#: (path in the guest, template): the files the plan writes, in order.
FILES: list[tuple[str, str]] = [
    (HOSTNAME_PATH, HOSTNAME_T), (HOSTS_PATH, HOSTS_T), (IFCFG1_PATH, IFCFG1_T), (IFCFG2_PATH, IFCFG2_T),
    (UDEV_PATH, UDEV_T), (FIRSTBOOT_PATH, FIRSTBOOT_T)]
MKDIRS = [NET_DIR, UDEV_DIR, FIRSTBOOT_DIR]


def heredoc(path: str, body: str, end: str = "END") -> str:
    """``upload -<<END path`` with ``body`` (ending in a newline: guestfish keeps every line's)."""
    assert body.endswith("\n")
    return f"upload -<<{end} {path}\n{body}{end}\n"


def plan_scripts() -> list[PlanStep]:
    """The deploy build plan's scripts as stored, tokens not yet substituted."""
    return [
        PlanStep("HPE - mount root", "# probe the disk, then mount the root file system\n"
                                     "-list-filesystems\nmount /dev/sda1 /\n"),
        PlanStep("HPE - hostname", heredoc(HOSTNAME_PATH, HOSTNAME_T) + heredoc(HOSTS_PATH, HOSTS_T)),
        PlanStep("HPE - configure NICs by MAC",
                 f"mkdir-p {NET_DIR}\nmkdir-p {UDEV_DIR}\n" + heredoc(IFCFG1_PATH, IFCFG1_T, "EOF")
                 + heredoc(IFCFG2_PATH, IFCFG2_T, "EOF") + heredoc(UDEV_PATH, UDEV_T, "EOF")),
        PlanStep("HPE - first boot",
                 f"mkdir-p {FIRSTBOOT_DIR}\n" + heredoc(FIRSTBOOT_PATH, FIRSTBOOT_T)
                 + f"chmod 0755 {FIRSTBOOT_PATH}\n"),
        PlanStep("HPE - umount", "sync\numount /\n"),
    ]


GOLDEN_SCRIPT = PlanStep("make the golden image", "\n".join([
    "part-disk /dev/sda mbr",
    "mkfs ext4 /dev/sda1 label:root",
    "mount /dev/sda1 /",
    *(f"mkdir-p {d}" for d in ("/bin", "/root", "/var/lib/systemd", NET_DIR, UDEV_DIR)),
    heredoc("/etc/os-release", 'NAME="Ingot Bench Linux"\nID=rhel\nVERSION_ID=9.4\n').rstrip("\n"),
    heredoc("/etc/fstab", "LABEL=root / ext4 defaults 0 1\n").rstrip("\n"),
    heredoc(HOSTNAME_PATH, "localhost.localdomain\n").rstrip("\n"),
    heredoc(HOSTS_PATH, "127.0.0.1 localhost localhost.localdomain\n").rstrip("\n"),
    heredoc("/etc/motd", "Golden image made by bench.personalize\n").rstrip("\n"),
    "umount /",
    "",
]))


def values_for(index: int) -> dict[str, object]:
    """The custom attribute values of volume ``index``: its own hostname, MACs, address, password."""
    hi, lo = divmod(index, 256)
    return {
        "Hostname": f"node-{index:03d}",
        "DomainName": "lab.example",
        "NIC1": {"mac": f"52:54:00:1b:{hi:02x}:{lo:02x}", "ipaddress": f"10.20.{index // 200}.{index % 200 + 10}",
                 "netmask": "255.255.255.0", "gateway": "10.20.0.1", "dns": "10.20.0.2"},
        "NIC2": {"mac": f"52:54:00:2b:{hi:02x}:{lo:02x}"},
        "RootPassword": f"Bench-{index:03d}-pw!",
    }


def resolve(scripts: Sequence[PlanStep], values: Mapping[str, object]) -> list[PlanStep]:
    """As appliance.services.personalize.resolve_build_plan: every script's tokens substituted."""
    return [PlanStep(s.name, substitute(s.content, values, guard=guestfish_safe).text) for s in scripts]


def expected_files(values: Mapping[str, object]) -> dict[str, bytes]:
    return {path: substitute(template, values).text.encode() for path, template in FILES}


# -- running things -------------------------------------------------------------------------------------




class Failed(Exception):
    """A step's work failed (a tool's exit status, a volume that does not read back)."""



def kill_mentioning(*needles: tuple[Path, ...]) -> list[int]:
    """SIGKILL every process whose command line names all the paths of one of ``needles`` (paths
    inside this run's temporary directory, so every match is a process this run started)."""
    pids: set[int] = set()
    for needle in needles:
        pids |= set.intersection(*(set(processes_mentioning(str(path))) for path in needle))
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return sorted(pids)


@dataclass
class Env:
    """Where libguestfs runs: the run's root, the shared appliance cache, a TMPDIR per run."""

    root: Path
    guestfish_work: Path  # run_plan's work_dir; the cache is its guestfs-cache
    counter: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def cache(self) -> Path:
        return self.guestfish_work / CACHE_DIR

    def run_dir(self, label: str) -> Path:
        with self.lock:
            self.counter += 1
            path = self.root / "runs" / f"{label}-{self.counter}"
        (path / "tmp").mkdir(parents=True)
        return path


def run_tool(env: Env, label: str, argv: list[str], deadline: Deadline, *, stdin: str | None = None,
             limit: float | None = None) -> tuple[float, str, str]:
    """Run a libguestfs tool in the executor's environment (own session, parent-death signal, a
    TMPDIR of its own); return (seconds, stdout, stderr). Failed on a non-zero status, OutOfTime
    when --timeout (or ``limit``) passes: the tool and everything naming its run directory is killed."""
    run_dir = env.run_dir(label)
    timeout = max(min(deadline.left(), limit if limit is not None else deadline.left()), 1.0)
    started = time.perf_counter()
    proc = subprocess.Popen([*dies_with_parent(), *argv], cwd=run_dir,
                            env=guestfish_environment(env.cache, run_dir / "tmp"),
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise OutOfTime(f"{argv[0]} ({label}) was still running after {timeout:.0f} s") from None
        seconds = time.perf_counter() - started
    finally:
        if proc.poll() is None:  # timed out or interrupted: the tool, qemu, the recovery process
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # the tool and libguestfs's recovery process
            # qemu has a process group of its own; its command line names the run's TMPDIR (read-only
            # overlays) or the volume together with the appliance cache.
            volumes = [Path(argv[i + 1]) for i, arg in enumerate(argv[:-1]) if arg == "-a"]
            for _ in range(20):
                if not kill_mentioning((run_dir,), *((env.cache, volume) for volume in volumes)):
                    break
                time.sleep(0.05)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=10)
        shutil.rmtree(run_dir, ignore_errors=True)
    if proc.returncode != 0:
        raise Failed(f"{' '.join(argv[:2])} ({label}) exited with {proc.returncode}: {err.strip()[-800:]}")
    return seconds, out, err


@dataclass
class Personalized:
    """One volume done: wall seconds and their split."""

    label: str
    volume: Path
    values: dict[str, object]
    seconds: float
    launch: float  # Ingot: run_plan's launch_seconds; virt-customize: its "Examining the guest" phase
    work: float  # Ingot: the scripts; virt-customize: from the inspection's end to "Finishing off"
    ended: float = 0.0  # perf_counter when it ended (for a pool's wall time)
    commands: dict[str, float] = field(default_factory=dict)  # Ingot: seconds per command (first line)

    @property
    def rest(self) -> float:
        return max(self.seconds - self.launch - self.work, 0.0)


def ingot_personalize(store: ImageStore, env: Env, volume_id: str, values: dict[str, object],
                      deadline: Deadline) -> Personalized:
    """What the appliance's os-volume-personalize task does with a resolved plan, timed whole."""
    volume = store.volume_path(volume_id)
    started = time.perf_counter()
    steps = resolve(plan_scripts(), values)
    secrets = [str(values["RootPassword"])]
    try:
        run = run_plan(volume, steps, work_dir=env.guestfish_work, secrets=secrets, timeout=max(deadline.left(), 1.0))
    except PlanFailed as failed:
        if deadline.left() <= 0:
            raise OutOfTime(f"run_plan on {volume_id} was still running at --timeout") from None
        raise Failed(f"run_plan on {volume_id}: {failed}") from None
    store.write_volume_log(volume_id, f"OS volume {volume_id}, build plan bench deploy\n" + run.log)
    seconds = time.perf_counter() - started
    commands: dict[str, float] = {}
    for step in run.steps:
        for command in step.commands:
            commands[command.text] = commands.get(command.text, 0.0) + command.seconds
    return Personalized(volume_id, volume, values, seconds, run.launch_seconds,
                        sum(step.seconds for step in run.steps), time.perf_counter(), commands)


_STAMP = re.compile(r"^\[\s*(\d+(?:\.\d+)?)\]\s+(.*)$", re.MULTILINE)


def peer_argv(volume: Path, values: Mapping[str, object]) -> list[str]:
    argv = ["virt-customize", "--no-network", "--format", "qcow2", "-a", str(volume)]
    for directory in MKDIRS:
        argv += ["--mkdir", directory]
    for path, content in expected_files(values).items():
        assert ":" not in path  # --write FILE:CONTENT splits at the first colon
        argv += ["--write", f"{path}:{content.decode()}"]
    return [*argv, "--chmod", f"0755:{FIRSTBOOT_PATH}"]


def peer_personalize(env: Env, volume: Path, values: dict[str, object], deadline: Deadline) -> Personalized:
    argv = peer_argv(volume, values)  # the substitution, untimed: the admin's script would do it
    seconds, out, _ = run_tool(env, "virt-customize", argv, deadline)
    stamps = [(float(m.group(1)), m.group(2)) for m in _STAMP.finditer(out)]
    # "[ 0.0] Examining the guest ..." then the first operation: launch + inspection; up to
    # "Finishing off": the operations (random seed, writes, chmod); after it: shutdown, exit.
    examined = stamps[1][0] if len(stamps) > 1 else 0.0
    finishing = next((t for t, text in stamps if text.startswith("Finishing off")), examined)
    return Personalized(volume.stem, volume, values, seconds, examined, finishing - examined, time.perf_counter())


def heredoc_personalize(env: Env, volume: Path, values: dict[str, object], deadline: Deadline) -> Personalized:
    """The same substituted commands in one here-document to one guestfish, as an admin would."""
    text = "run\n" + "".join(step.content for step in resolve(plan_scripts(), values))
    seconds, _, _ = run_tool(env, "guestfish-heredoc",
                             ["guestfish", "--rw", "--no-progress-bars", "--format=qcow2", "-a", str(volume)],
                             deadline, stdin=text)
    return Personalized(volume.stem, volume, values, seconds, 0.0, 0.0, time.perf_counter())


def bare_launch(env: Env, volume: Path, deadline: Deadline) -> float:
    seconds, _, _ = run_tool(env, "floor", ["guestfish", "--rw", "--format=qcow2", "-a", str(volume),
                                            "--", "run", ":", "exit"], deadline)
    return seconds


INGOT = "Ingot run_plan"
PEER = "virt-customize"
HEREDOC = "guestfish here-document"


class Summary:
    """Medians of one kind's single-volume runs (each part's own median)."""

    def __init__(self, runs: list[Personalized]) -> None:
        self.runs = [r.seconds for r in runs]
        self.seconds = statistics.median(self.runs)
        self.launch = statistics.median(r.launch for r in runs)
        self.work = statistics.median(r.work for r in runs)
        self.rest = statistics.median(r.rest for r in runs)


@dataclass
class Pool:
    """Worker threads, registered so that cleanup can wait for them; ``stop`` ends them early."""

    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def run(self, jobs: list[Callable[[], Personalized]], parallel: int, deadline: Deadline
            ) -> tuple[float, list[Personalized]]:
        """Run ``jobs`` on ``parallel`` threads; (wall seconds to the last one's end, results in order)."""
        results: list[Personalized | None] = [None] * len(jobs)
        errors: list[BaseException] = []
        lock = threading.Lock()
        todo = list(range(len(jobs)))

        def worker() -> None:
            while not self.stop.is_set():
                with lock:
                    if not todo:
                        return
                    index = todo.pop(0)
                try:
                    results[index] = jobs[index]()
                except BaseException as exc:  # handed to the main thread, which stops the others
                    with lock:
                        errors.append(exc)
                    return

        threads = [threading.Thread(target=worker, name=f"bench-worker-{n}", daemon=True) for n in range(parallel)]
        self.threads += threads
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.25)
                if errors:
                    raise errors[0]
                deadline.check("the pool's end")  # run_plan and run_tool time out on their own too
        if errors:
            raise errors[0]
        done = [r for r in results if r is not None]
        if len(done) != len(jobs):
            raise Failed(f"only {len(done)} of {len(jobs)} volumes were personalized")
        return max(r.ended for r in done) - started, done

    def reap(self, root: Path, *, interrupted: bool) -> list[int]:
        """Stop the workers and make sure nothing this run started is left: every process whose
        command line names ``root``. Interrupted: killed at once; else given REAP_WAIT_S to exit
        (libguestfs's recovery process polls its parent). Returns the PIDs that had to be killed."""
        self.stop.set()
        killed: list[int] = []
        grace = time.monotonic() + (0.0 if interrupted else REAP_WAIT_S)
        while True:
            alive = [t for t in self.threads if t.is_alive()]
            left = processes_mentioning(str(root))
            if not alive and not left:
                return killed
            if left and (alive or time.monotonic() >= grace):
                killed += kill_mentioning((root,))  # a worker's guestfish dies; its run_plan returns
            for thread in alive:
                thread.join(0.1)
            if not alive:
                time.sleep(0.1)


# -- checking -------------------------------------------------------------------------------------------


def verify(env: Env, volumes: list[Personalized], out_dir: Path, deadline: Deadline) -> list[str]:
    """Download the six files of each volume in one read-only session; return the problems found."""
    argv = ["guestfish", "--ro", "--no-progress-bars"]
    for item in volumes:
        argv += ["--format=qcow2", "-a", str(item.volume)]
    commands = ["run"]
    for k, _ in enumerate(volumes):
        device = f"/dev/sd{chr(ord('a') + k)}1"
        commands.append(f"mount-ro {device} /")
        for j, (path, _template) in enumerate(FILES):
            commands.append(f'download {path} "{out_dir}/{k}-{j}"')
        commands += [f"echo @@volume-{k}@@", f"stat {FIRSTBOOT_PATH}", "umount /"]
    _, out, _ = run_tool(env, "verify", argv, deadline, stdin="\n".join(commands) + "\n")
    problems = []
    for k, item in enumerate(volumes):
        for j, (path, wanted) in enumerate(expected_files(item.values).items()):
            local = out_dir / f"{k}-{j}"
            got = local.read_bytes() if local.exists() else None
            if got != wanted:
                problems.append(f"{item.label}: {path} reads back {got!r}, expected {wanted!r}")
        section = out.split(f"@@volume-{k}@@", 1)[-1].split("@@volume-", 1)[0]
        mode = re.search(r"^mode: (\d+)$", section, re.MULTILINE)
        if mode is None or int(mode.group(1)) != FIRSTBOOT_MODE:
            problems.append(f"{item.label}: {FIRSTBOOT_PATH} mode {mode.group(1) if mode else '?'}, "
                            f"expected {FIRSTBOOT_MODE}")
    return problems


# -- facts and reporting --------------------------------------------------------------------------------



def meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) * 1024
    return 0


def first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].strip() if lines else "unknown"


def appliance_memsize(env: Env, deadline: Deadline) -> int:
    """The appliance's guest memory in MiB (``get-memsize``; no launch)."""
    _, out, _ = run_tool(env, "memsize", ["guestfish", "get-memsize"], deadline, limit=60)
    return int(out.strip())


def choose_parallel(requested: int | None, volumes: int, memsize_mib: int) -> tuple[int, str]:
    cpus = len(os.sched_getaffinity(0))
    available = meminfo("MemAvailable")
    per = (memsize_mib + QEMU_OVERHEAD_MIB) * MiB
    by_memory = max(1, available // per)
    memory = (f"memory allows {by_memory}: MemAvailable {available / GiB:.1f} GiB / ({memsize_mib} MiB appliance "
              f"+ {QEMU_OVERHEAD_MIB} MiB QEMU) each")
    if requested is not None:
        return requested, f"--parallel {requested} ({cpus} CPUs; {memory})"
    chosen = max(1, min(cpus, by_memory, volumes))
    bound = "the CPUs" if chosen == cpus else "memory" if chosen == by_memory else "the number of volumes"
    return chosen, f"bounded by {bound} ({cpus} CPUs usable; {memory})"


def machine_facts(where: Path) -> str:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "unknown")
    gf_env = guestfish_environment(where / "unused", where / "unused")
    accel = (f"LIBGUESTFS_BACKEND={gf_env['LIBGUESTFS_BACKEND']}, "
             f"LIBGUESTFS_BACKEND_SETTINGS={gf_env['LIBGUESTFS_BACKEND_SETTINGS']} (QEMU TCG; /dev/kvm "
             f"{'present but not used' if Path('/dev/kvm').exists() else 'absent'})")
    return (f"{os.cpu_count()} CPUs ({cpu}), {meminfo('MemTotal') / GiB:.1f} GiB RAM "
            f"({meminfo('MemAvailable') / GiB:.1f} GiB available), Linux {platform.release()}, "
            f"Python {platform.python_version()}\n  guestfish {guestfish_version()}, "
            f"{first_line(['virt-customize', '--version'])}, {first_line(['qemu-system-x86_64', '--version'])}\n"
            f"  {accel}\n  {where} on {file_system(where)}; "
            f"load average {load_average()}")


def s(value: float) -> str:
    return f"{value:.2f} s"


def secs(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def slowest(singles: list[Personalized], batch: list[Personalized], count: int = 4) -> str:
    def median(items: list[Personalized], command: str) -> float:
        return statistics.median(i.commands.get(command, 0.0) for i in items)

    top = sorted(singles[0].commands, key=lambda c: median(singles, c), reverse=True)[:count]
    return "; ".join(f"{c} {median(singles, c):.2f} / {median(batch, c):.2f} s" for c in top)


def pool_line(label: str, total: float, items: list[Personalized], parallel: int, one: float) -> str:
    """``one``: the single-volume median, for the parallel efficiency."""
    per = [i.seconds for i in items]
    efficiency = len(items) * one / (total * parallel)
    return (f"  {label}: {len(items)} volumes in {s(total)} on {parallel} workers = "
            f"{len(items) / total * 60:.2f} volumes/min; per volume median {s(statistics.median(per))} "
            f"(min {min(per):.2f}, max {max(per):.2f}); parallel efficiency {efficiency:.2f}")


# -- the run --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, pool: Pool) -> int:
    deadline = Deadline(args.timeout)
    base = Path(args.tmpdir) if args.tmpdir else Path(tempfile.gettempdir())
    free = shutil.disk_usage(base).free
    if free < NEED_FREE:
        print(f"bench.personalize: only {free / GiB:.1f} GiB free in {base}, needs {NEED_FREE / GiB:.0f} GiB")
        return 2
    for tool, package in (("guestfish", "libguestfs-tools"), ("virt-customize", "guestfs-tools"),
                          ("qemu-img", "qemu-utils")):
        if shutil.which(tool) is None:
            print(f"bench.personalize needs {tool} (apt-get install {package})")
            return 2
    print(f"bench.personalize: {machine_facts(base)}", flush=True)
    run_started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ingot-bench-personalize-", dir=base) as tmp:
        root = Path(tmp)
        interrupted = True
        try:
            code = measure(args, pool, root, deadline)
            interrupted = False
        finally:
            killed = pool.reap(root, interrupted=interrupted)
            if killed:
                print(f"  {'stopped' if interrupted else 'note: still running at the end and killed'}: "
                      f"{len(killed)} process(es) of this run, PIDs {killed}")
    print(f"  run took {time.monotonic() - run_started:.1f} s; load average at the end {load_average()} "
          "(others' work on the machine slows runs down); temporary files removed")
    return code


def measure(args: argparse.Namespace, pool: Pool, root: Path, deadline: Deadline) -> int:
    env = Env(root, root / "guestfish")
    env.cache.mkdir(parents=True, mode=0o700)
    store = ImageStore(root / "store", max_virtual_size=MAX_VIRTUAL)
    memsize = appliance_memsize(env, deadline)
    parallel, why = choose_parallel(args.parallel, args.volumes, memsize)
    peer_volumes = min(args.volumes, 2 * parallel) if args.peer_volumes is None else args.peer_volumes
    print(f"  parallelism {parallel}: {why}", flush=True)

    # Golden image: one run_plan on a blank qcow2 (builds the appliance cache too), then ingest.
    deadline.check("making the golden image")
    blank = root / "golden-source.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), str(GOLDEN_VIRTUAL)], check=True,
                   timeout=60)
    started = time.perf_counter()
    try:
        made = run_plan(blank, [GOLDEN_SCRIPT], work_dir=env.guestfish_work, timeout=max(deadline.left(), 1.0))
    except PlanFailed as failed:
        raise Failed(f"making the golden image: {failed}") from None
    built = time.perf_counter() - started
    image = store.ingest(blank, claimed="qcow2")
    blank.unlink()
    print(f"  ... golden image: {GOLDEN_VIRTUAL // MiB} MiB disk, MBR + ext4, made in {built:.1f} s (first launch, "
          f"{made.launch_seconds:.1f} s of it the appliance start with the supermin build); ingested: qcow2 "
          f"{image.size / MiB:.1f} MiB", flush=True)

    clone_times: list[float] = []

    def clone(volume_id: str) -> Path:
        t0 = time.perf_counter()
        path = store.create_volume(image.sha256, volume_id)
        clone_times.append(time.perf_counter() - t0)
        return path

    # 1. Floor.
    floor_volume = clone("floor")
    floor: list[float] = []
    for i in range(args.launch_repeats):
        deadline.check(f"bare launch {i + 1}")
        floor.append(bare_launch(env, floor_volume, deadline))
    floor_med = statistics.median(floor)
    print(f"  ... floor, bare guestfish launch + exit: {secs(floor)} s", flush=True)

    # 2. Ingot, one volume; 4. the peer, one volume; 5. the here-document, one volume: --repeats
    # rounds, in an order that rotates every round so that none always runs first.
    singles: dict[str, list[Personalized]] = {INGOT: [], PEER: [], HEREDOC: []}
    kinds = list(singles)
    for round_ in range(args.repeats):
        shift = round_ % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            deadline.check(f"{kind}, one volume, round {round_ + 1}")
            volume_id = f"{kind.split()[0].lower()}-single-{round_ + 1}"
            volume = clone(volume_id)
            if kind == INGOT:
                item = ingot_personalize(store, env, volume_id, values_for(300 + round_), deadline)
                split = f" (launch {s(item.launch)}, scripts {s(item.work)})"
            elif kind == PEER:
                item = peer_personalize(env, volume, values_for(600 + round_), deadline)
                split = f" (launch + inspection {s(item.launch)}, operations {s(item.work)})"
            else:
                item = heredoc_personalize(env, volume, values_for(800 + round_), deadline)
                split = ""
            singles[kind].append(item)
            print(f"  ... {kind}, one volume: {s(item.seconds)}{split}", flush=True)
    single, peer_single, hand = (Summary(singles[kind]) for kind in kinds)

    # 3. Ingot, N volumes; 4. the peer, N volumes.
    deadline.check("Ingot's batch")
    ids = [f"ingot-{n:03d}" for n in range(1, args.volumes + 1)]
    for volume_id in ids:
        clone(volume_id)
    batch_total, batch = pool.run(
        [functools.partial(ingot_personalize, store, env, v, values_for(n), deadline)
         for n, v in enumerate(ids, start=1)], parallel, deadline)
    print(f"  ... Ingot, {args.volumes} volumes: {s(batch_total)}; per volume {secs([b.seconds for b in batch])} s",
          flush=True)
    peer_total, peer_batch = 0.0, list[Personalized]()
    if peer_volumes:
        deadline.check("virt-customize's batch")
        peer_paths = [clone(f"peer-{n:03d}") for n in range(1, peer_volumes + 1)]
        peer_total, peer_batch = pool.run(
            [functools.partial(peer_personalize, env, p, values_for(500 + n), deadline)
             for n, p in enumerate(peer_paths, start=1)], parallel, deadline)
        print(f"  ... virt-customize, {peer_volumes} volumes: {s(peer_total)}; per volume "
              f"{secs([b.seconds for b in peer_batch])} s", flush=True)

    # Read back, untimed.
    deadline.check("reading the volumes back")
    checked = [singles[INGOT][0], batch[0], batch[-1], singles[PEER][0], singles[HEREDOC][0]]
    if peer_batch:
        checked.append(peer_batch[-1])
    checked = list({item.label: item for item in checked}.values())
    out_dir = root / "readback"
    out_dir.mkdir()
    started = time.perf_counter()
    problems = verify(env, checked, out_dir, deadline)
    print(f"  ... read back {len(checked)} volumes ({', '.join(i.label for i in checked)}) in one read-only "
          f"session, {time.perf_counter() - started:.1f} s: "
          f"{'every file byte-equal, first-boot script 0755' if not problems else 'MISMATCH'}", flush=True)

    # Report.
    print()
    print(f"  {'personalize (5 scripts, 6 files), 1 volume':<44} {'median':>8} {'/ floor':>8} {'launch':>8} "
          f"{'work':>7} {'rest':>6}  runs (s)")
    print(f"  {'floor: guestfish -a CLONE -- run : exit':<44} {floor_med:7.2f}s {1.0:7.2f}x {'':>8} {'':>7} {'':>6}  "
          f"{secs(floor)} (min {min(floor):.2f})")
    for label, summary in ((INGOT, single), (PEER, peer_single), (HEREDOC, hand)):
        split = (f"{summary.launch:7.2f}s {summary.work:6.2f}s {summary.rest:5.2f}s" if summary.launch
                 else f"{'':>8} {'':>7} {'':>6}")
        print(f"  {label:<44} {summary.seconds:7.2f}s {summary.seconds / floor_med:7.2f}x {split}  "
              f"{secs(summary.runs)}")
    print("    (launch: run_plan's 'run' / virt-customize's launch + inspection; work: the scripts / its operations; "
          "rest: shutdown, process start, log)")
    print()
    print(pool_line("Ingot", batch_total, batch, parallel, single.seconds))
    print(f"    Ingot per volume in the batch: launch median {s(statistics.median(b.launch for b in batch))}, "
          f"scripts median {s(statistics.median(b.work for b in batch))}")
    print(f"    Ingot's slowest commands, 1 volume / median in the batch: {slowest(singles[INGOT], batch)}")
    if peer_batch:
        print(pool_line(PEER, peer_total, peer_batch, parallel, peer_single.seconds))
    print()
    print(f"  Ingot, 1 volume, over the floor: {single.seconds - floor_med:+.2f} s "
          f"({single.seconds / floor_med:.2f}x); run_plan's launch alone {s(single.launch)}")
    batch_ratio = ""
    if peer_batch:
        per_ingot, per_peer = batch_total / args.volumes, peer_total / peer_volumes
        batch_ratio = (f"; batch, wall time per volume ({args.volumes} and {peer_volumes} volumes on {parallel} "
                       f"workers) {per_ingot / per_peer:.2f}x (throughput {per_peer / per_ingot:.2f}x "
                       "virt-customize's)")
    print(f"  Ingot / virt-customize time: 1 volume {single.seconds / peer_single.seconds:.2f}x{batch_ratio}")
    print(f"  Ingot / hand-written guestfish here-document, 1 volume: {single.seconds / hand.seconds:.2f}x")
    print(f"  clones (store.create_volume, untimed above): median {statistics.median(clone_times) * 1e3:.1f} ms "
          f"of {len(clone_times)}")
    if problems:
        for problem in problems:
            print(f"  READ-BACK FAILED: {problem}")
        raise Failed(f"{len(problems)} file(s) did not read back as written")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--volumes", type=int, default=20, help="volumes Ingot personalizes in the batch (1-100)")
    parser.add_argument("--parallel", type=int, help="workers for the batches (1-32; default: CPUs, capped by memory)")
    parser.add_argument("--peer-volumes", type=int,
                        help="volumes in virt-customize's batch (0-100, 0 = none; default: one per worker)")
    parser.add_argument("--launch-repeats", type=int, default=3, help="bare launches for the floor (1-10)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds of the single-volume runs (Ingot, virt-customize, here-document; 1-5)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds for the whole run (60-7200)")
    parser.add_argument("--tmpdir", help="where the temporary directory goes (default: the system's)")
    args = parser.parse_args(argv)
    if not (1 <= args.volumes <= 100 and (args.parallel is None or 1 <= args.parallel <= 32)
            and (args.peer_volumes is None or 0 <= args.peer_volumes <= 100) and 1 <= args.launch_repeats <= 10
            and 1 <= args.repeats <= 5 and 60 <= args.timeout <= 7200):
        parser.error("counts and the timeout are bounded: see --help")

    def terminated(_sig: int, _frame: object) -> None:
        raise Terminated  # unwinds through the with-block: processes reaped, temporary directory removed

    signal.signal(signal.SIGTERM, terminated)
    # Ctrl-C interrupts even when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    pool = Pool()
    try:
        return run(args, pool)
    except (KeyboardInterrupt, Terminated):
        print("\nbench.personalize: interrupted; processes killed, temporary files removed")
        return 130
    except (OutOfTime, Failed, RuntimeError, OSError, subprocess.SubprocessError, qemu_img.QemuImgError,
            ImageRefused, InvalidInput) as exc:
        print(f"bench.personalize: FAILED: {exc}; processes killed, temporary files removed")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
