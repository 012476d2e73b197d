"""plans.guestfish against the real guestfish (libguestfs, TCG): HPE-style deploy build plans personalize
an ext4 and an NTFS OS volume (qcow2 overlays on golden images made here), and the files read back
byte-equal; failures carry the script name and line; ``-`` ignores an error; shell escapes and local
paths are confined; secrets are masked in the log; a timeout leaves no qemu behind.

The appliance cache (supermin) lives in one module-wide work directory, so it is built once; every
``run_plan`` is one appliance launch (~10-15 s under TCG), so the module keeps launches few: the
golden images are made in one session, both deploy plans' files are read back in one session, and
the refusal tests fail before any launch."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plans.guestfish import (
    LAUNCH_SHARE,
    MASK,
    PlanFailed,
    PlanRun,
    PlanStep,
    guestfish_version,
    launch_time,
    processes_mentioning,
    run_plan,
)
from tests.support.requirements import require_tools

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _installed() -> None:
    require_tools("guestfish", "qemu-img")

MAC = "52:54:00:12:34:56"
ROOT_PASSWORD = "Secr3t!-root-pw"
ADMIN_PASSWORD = "W1ndows-Adm1n-pw"

HOSTNAME = "node-17\n"
HOSTS = "127.0.0.1 localhost\n10.0.0.17 node-17.lab.example node-17\n"
IFCFG = (f"DEVICE=eth0\nHWADDR={MAC}\nBOOTPROTO=none\nONBOOT=yes\nIPADDR=10.0.0.17\nNETMASK=255.255.255.0\n"
         "GATEWAY=10.0.0.1\nDNS1=10.0.0.2\n")
FIRSTBOOT = ("#!/bin/bash\nset -e\nhostnamectl set-hostname node-17\n"
             f"echo 'root:{ROOT_PASSWORD}' | chpasswd\nrm -f \"$0\"\n")
IFCFG_PATH = f"/etc/sysconfig/network-scripts/ifcfg-{MAC.replace(':', '-')}"
FIRSTBOOT_PATH = "/EFI/HPE/isdeploy/scripts/01-personalize.bash"
UNATTEND = f"""<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend">
  <settings pass="specialize">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64">
      <ComputerName>NODE-17</ComputerName>
    </component>
  </settings>
  <settings pass="oobeSystem">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64">
      <UserAccounts><AdministratorPassword><Value>{ADMIN_PASSWORD}</Value><PlainText>true</PlainText>
      </AdministratorPassword></UserAccounts>
    </component>
  </settings>
</unattend>
"""


def heredoc(path: str, body: str, end: str = "END") -> str:
    """``upload -<<END path`` with ``body`` (which ends in a newline: guestfish keeps every line's)."""
    assert body.endswith("\n")
    return f"upload -<<{end} {path}\n{body}{end}\n"


def gf_env(work: Path) -> dict[str, str]:
    tmp = work / "helper-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    (work / "guestfs-cache").mkdir(mode=0o700, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIBGUESTFS_")}
    env.update(LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg",
               LIBGUESTFS_CACHEDIR=str(work / "guestfs-cache"), TMPDIR=str(tmp))
    return env


def guestfish(work: Path, disks: list[Path], commands: str, *, ro: bool = False) -> str:
    argv = ["guestfish", "--ro" if ro else "--rw", "--format=qcow2"]
    for disk in disks:
        argv += ["-a", str(disk)]
    done = subprocess.run(argv, input=commands, capture_output=True, text=True, env=gf_env(work), cwd=work,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def overlay(golden: Path, path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(golden), "-F", "qcow2", str(path)],
                   check=True, timeout=30)
    return path


@dataclass
class Goldens:
    work: Path
    ext4: Path
    ntfs: Path


@pytest.fixture(scope="module")
def goldens(tmp_path_factory: pytest.TempPathFactory) -> Goldens:
    """One guestfish session makes both golden images: an MBR disk with one ext4 (Linux) and one NTFS
    (Windows) partition and a few base files. mkfs ntfs works because ntfs-3g is installed on the host,
    so supermin puts mkntfs and ntfs-3g into the appliance."""
    root = tmp_path_factory.mktemp("guestfish")
    work = root / "work"
    work.mkdir()
    ext4, ntfs = root / "golden-ext4.qcow2", root / "golden-ntfs.qcow2"
    for disk in (ext4, ntfs):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "256M"], check=True, timeout=30)
    guestfish(work, [ext4, ntfs], "\n".join([
        "run",
        "part-disk /dev/sda mbr", "mkfs ext4 /dev/sda1", "mount /dev/sda1 /",
        "mkdir-p /etc/sysconfig/network-scripts", "mkdir-p /EFI/HPE",
        'write /etc/hostname "golden\\n"', 'write /etc/hosts "127.0.0.1 localhost\\n"',
        'write /etc/os-release "ID=ingot-test\\n"', "umount /",
        "part-disk /dev/sdb mbr", "mkfs ntfs /dev/sdb1", "mount /dev/sdb1 /",
        "mkdir-p /Windows/System32", 'write /Windows/System32/version.txt "10.0\\n"', "umount /",
        "",
    ]))
    return Goldens(work, ext4, ntfs)


def linux_plan() -> list[PlanStep]:
    return [
        PlanStep("HPE - mount root", "# probe, then mount\n-list-filesystems\nmount /dev/sda1 /\n"),
        PlanStep("HPE - hostname", heredoc("/etc/hostname", HOSTNAME) + heredoc("/etc/hosts", HOSTS)),
        PlanStep("HPE - configure NIC",
                 "mkdir-p /etc/sysconfig/network-scripts\n" + heredoc(IFCFG_PATH, IFCFG, end="EOF")),
        PlanStep("HPE - first boot",
                 f"mkdir-p /EFI/HPE/isdeploy/scripts\n{heredoc(FIRSTBOOT_PATH, FIRSTBOOT)}"
                 f"chmod 0755 {FIRSTBOOT_PATH}\n"),
        PlanStep("HPE - umount", "umount /\n"),
    ]


def windows_plan() -> list[PlanStep]:
    return [
        PlanStep("mount", "-list-filesystems\nmount /dev/sda1 /\n"),
        PlanStep("unattend", "mkdir-p /Windows/Panther\n" + heredoc("/Windows/Panther/unattend.xml", UNATTEND)),
        PlanStep("umount", "umount /\n"),
    ]


@dataclass
class Deployed:
    linux: PlanRun
    windows: PlanRun
    linux_log: Path
    files: dict[str, bytes]
    stat_output: str
    linux_progress: list[float]


@pytest.fixture(scope="module")
def deployed(goldens: Goldens, tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    root = tmp_path_factory.mktemp("deploy")
    linux_volume = overlay(goldens.ext4, root / "os-volume-linux.qcow2")
    windows_volume = overlay(goldens.ntfs, root / "os-volume-windows.qcow2")
    linux_log = root / "logs" / "linux.log"
    progress: list[float] = []
    linux = run_plan(linux_volume, linux_plan(), work_dir=goldens.work, secrets=[ROOT_PASSWORD],
                     log_path=linux_log, on_progress=progress.append)
    windows = run_plan(windows_volume, windows_plan(), work_dir=goldens.work, secrets=[ADMIN_PASSWORD])
    # Read everything back in one read-only session: download each file to a local file.
    out = root / "readback"
    out.mkdir()
    wanted = {"linux:/etc/hostname": "/dev/sda1", "linux:/etc/hosts": "/dev/sda1",
              f"linux:{IFCFG_PATH}": "/dev/sda1", f"linux:{FIRSTBOOT_PATH}": "/dev/sda1",
              "linux:/etc/os-release": "/dev/sda1",
              "windows:/Windows/Panther/unattend.xml": "/dev/sdb1",
              "windows:/Windows/System32/version.txt": "/dev/sdb1"}
    commands = ["run"]
    for device in ("/dev/sda1", "/dev/sdb1"):
        commands.append(f"mount-ro {device} /")
        for n, (key, dev) in enumerate(wanted.items()):
            if dev == device:
                commands.append(f"download {key.split(':', 1)[1]} {out}/{n}")
        if device == "/dev/sda1":
            commands.append(f"stat {FIRSTBOOT_PATH}")
        commands.append("umount /")
    stat_output = guestfish(goldens.work, [linux_volume, windows_volume], "\n".join(commands) + "\n", ro=True)
    files = {key: (out / str(n)).read_bytes() for n, key in enumerate(wanted)}
    return Deployed(linux, windows, linux_log, files, stat_output, progress)


# ------------------------------------------------------------------------------------------------------------
# Deploy plans
# ------------------------------------------------------------------------------------------------------------


def test_guestfish_version_and_launch_time(goldens: Goldens) -> None:
    version = guestfish_version()
    assert version.count(".") >= 1 and version[0].isdigit()
    seconds = launch_time(goldens.work)
    print(f"guestfish {version}: bare appliance start+shutdown {seconds:.2f} s")
    assert 0 < seconds < 300
    assert not processes_mentioning(str(goldens.work))


def test_linux_deploy_plan_writes_every_file_byte_equal(deployed: Deployed) -> None:
    files = deployed.files
    assert files["linux:/etc/hostname"] == HOSTNAME.encode()
    assert files["linux:/etc/hosts"] == HOSTS.encode()
    assert files[f"linux:{IFCFG_PATH}"] == IFCFG.encode()
    assert files[f"linux:{FIRSTBOOT_PATH}"] == FIRSTBOOT.encode()
    assert files["linux:/etc/os-release"] == b"ID=ingot-test\n"  # from the golden image, untouched
    assert "mode: 33261" in deployed.stat_output  # 0o100755: chmod 0755 took


def test_linux_deploy_plan_results_and_log(deployed: Deployed) -> None:
    run = deployed.linux
    assert [s.name for s in run.steps] == [s.name for s in linux_plan()]
    assert all(c.ok for s in run.steps for c in s.commands if not c.ignored)
    assert run.launch_seconds > 0 and run.seconds >= run.launch_seconds
    # Progress: the launch's share, then every command of the scripts, then 100 at shutdown.
    commands = sum(len(s.commands) for s in run.steps)
    assert deployed.linux_progress[0] == LAUNCH_SHARE and deployed.linux_progress[-1] == 100
    assert len(deployed.linux_progress) == commands + 2
    assert deployed.linux_progress == sorted(deployed.linux_progress)
    assert all(s.seconds >= 0 for s in run.steps)
    print(f"linux plan: {run.seconds:.2f} s (launch {run.launch_seconds:.2f} s); "
          + ", ".join(f"{s.name} {s.seconds:.2f} s" for s in run.steps))
    # Every command is echoed, the here-document bodies too, with the root password masked.
    assert "> (line 3) mount /dev/sda1 /" in run.log
    assert "hostnamectl set-hostname node-17" in run.log
    assert ROOT_PASSWORD not in run.log
    assert f"echo 'root:{MASK}' | chpasswd" in run.log
    assert "/dev/sda1: ext4" in run.log  # guestfish's output of -list-filesystems
    assert deployed.linux_log.read_text() == run.log


def test_windows_deploy_plan_writes_unattend_xml_on_ntfs(deployed: Deployed) -> None:
    assert deployed.files["windows:/Windows/Panther/unattend.xml"] == UNATTEND.encode()
    assert deployed.files["windows:/Windows/System32/version.txt"] == b"10.0\n"
    run = deployed.windows
    assert "/dev/sda1: ntfs" in run.log
    assert ADMIN_PASSWORD not in run.log and f"<Value>{MASK}</Value>" in run.log
    print(f"windows plan: {run.seconds:.2f} s (launch {run.launch_seconds:.2f} s)")


# ------------------------------------------------------------------------------------------------------------
# Failures, ignored errors, shell escapes, masking
# ------------------------------------------------------------------------------------------------------------


def test_a_failing_command_fails_the_plan_with_script_and_line(goldens: Goldens, tmp_path: Path) -> None:
    volume = overlay(goldens.ext4, tmp_path / "vol.qcow2")
    steps = [PlanStep("mount", "mount /dev/sda1 /\n"),
             PlanStep("broken", "# a comment\n\nmkdir-p /ok\nmkdir /no/such/parent/dir\nmkdir /never\n"),
             PlanStep("never-run", "umount /\n")]
    log_path = tmp_path / "plan.log"
    with pytest.raises(PlanFailed) as caught:
        run_plan(volume, steps, work_dir=goldens.work, log_path=log_path)
    failed = caught.value
    assert (failed.step, failed.line) == ("broken", 4)
    assert "mkdir" in failed.reason and "No such file or directory" in failed.reason
    assert str(failed).startswith("broken:4: ")
    assert "> (line 4) mkdir /no/such/parent/dir" in failed.log and "/never" not in failed.log
    assert "never-run" not in failed.log
    assert log_path.read_text() == failed.log
    assert not list(goldens.work.glob("run-*"))  # the run's working directory is gone
    assert not processes_mentioning(str(goldens.work))


def test_ignored_errors_allowed_shell_and_masked_secrets(goldens: Goldens, tmp_path: Path) -> None:
    volume = overlay(goldens.ext4, tmp_path / "vol.qcow2")
    secret = "Hunter2-very-secret"
    steps = [
        PlanStep("mount", "mount /dev/sda1 /\n-mkdir /etc\n- cat /does/not/exist\n"),
        PlanStep("shell", "!pwd\n!echo hello-from-shell > local.txt\nupload local.txt /from-shell.txt\n"
                          "<!echo write /generated.txt generated-by-shell\n"
                          "download /etc/hostname golden-hostname\n!cat golden-hostname\n-!false\n"),
        PlanStep("secret", heredoc("/etc/secret.conf", f"password={secret}\n")
                 + f"echo the password is {secret}\ncat /etc/secret.conf\n"),
        PlanStep("check", "cat /from-shell.txt\ncat /generated.txt\numount /\n"),
    ]
    run = run_plan(volume, steps, work_dir=goldens.work, secrets=[secret], allow_shell=True)
    mount = run.steps[0].commands
    assert [(c.line, c.ok, c.ignored) for c in mount] == [(1, True, False), (2, False, True), (3, False, True)]
    assert "exists" in mount[1].error.lower()
    shell = run.steps[1].commands
    pwd = shell[0].output.strip()
    assert pwd.startswith(str(goldens.work.resolve()) + "/run-") and pwd.endswith("/files"), pwd
    assert shell[-2].output == "golden\n"  # downloaded into, and read from, the same directory
    assert (shell[-1].ok, shell[-1].ignored, shell[-1].error) == (False, True, "exit status 1")
    check = run.steps[3].commands
    assert check[0].output == "hello-from-shell\n\n" or check[0].output.startswith("hello-from-shell\n")
    assert check[1].output.startswith("generated-by-shell")
    assert secret not in run.log
    assert f"password={MASK}" in run.log and f"the password is {MASK}" in run.log
    assert all(secret not in c.output and secret not in c.text for s in run.steps for c in s.commands)
    assert not Path(pwd).exists() and not list(goldens.work.glob("run-*"))


@pytest.mark.parametrize(("script", "reason"), [
    ("mount /dev/sda1 /\n!ls\n", "shell escapes are not allowed"),
    ("<!echo ls /\n", "shell escapes are not allowed"),
    ("cat /etc/passwd | sh -c 'cat > /tmp/x'\n", "'|'"),
    ("upload ../../etc/passwd /x\n", "contains '..'"),
    ("upload /etc/passwd /x\n", "absolute"),
    ("download /etc/shadow ~/shadow\n", "absolute"),
    ("copy-out /etc /tmp\n", "absolute"),
    ("copy-in ../x /tmp\n", "contains '..'"),
    ("tar-out / /tmp/all.tar\n", "absolute"),
    ("-time download /etc/shadow /tmp/s\n", "absolute"),
    ("upload - /x\n", "stdin"),
    ("lcd /\n", "not allowed"),
    ("edit /etc/hosts\n", "not allowed"),
    ("set-network true\n", "not allowed"),
    ('event ev close "touch /tmp/pwned"\n', "not allowed"),
    ("upload -<<END /x\nno end marker\n", "not terminated"),
])
def test_refused_before_the_appliance_starts(goldens: Goldens, tmp_path: Path, script: str, reason: str) -> None:
    volume = overlay(goldens.ext4, tmp_path / "vol.qcow2")
    steps = [PlanStep("fine", "mount /dev/sda1 /\numount /\n"), PlanStep("bad", "# first line\n" + script)]
    started = time.monotonic()
    with pytest.raises(PlanFailed) as caught:
        run_plan(volume, steps, work_dir=goldens.work)
    assert caught.value.step == "bad" and caught.value.line is not None and caught.value.line >= 2
    assert reason in caught.value.reason, caught.value.reason
    assert time.monotonic() - started < 5  # no appliance was launched
    assert "guestfish --rw" not in caught.value.log


def test_a_shell_command_that_runs_too_long_is_killed(goldens: Goldens, tmp_path: Path) -> None:
    volume = overlay(goldens.ext4, tmp_path / "vol.qcow2")
    with pytest.raises(PlanFailed) as caught:
        run_plan(volume, [PlanStep("s", "!echo started\n!sleep 31.7; echo never\n")], work_dir=goldens.work,
                 allow_shell=True, shell_timeout=1)
    assert (caught.value.step, caught.value.line) == ("s", 2)
    assert "timed out after 1 s" in caught.value.reason
    assert not processes_mentioning("31.7") and not processes_mentioning(str(goldens.work))


def test_shell_allowed_still_confines_local_paths(goldens: Goldens, tmp_path: Path) -> None:
    volume = overlay(goldens.ext4, tmp_path / "vol.qcow2")
    with pytest.raises(PlanFailed) as caught:
        run_plan(volume, [PlanStep("s", "!true\nupload ../../../etc/passwd /x\n")], work_dir=goldens.work,
                 allow_shell=True)
    assert (caught.value.step, caught.value.line) == ("s", 2)


# ------------------------------------------------------------------------------------------------------------
# Timeout
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def watcher(goldens: Goldens) -> Iterator[list[int]]:
    """Counts, every 0.2 s, the processes whose command line mentions the work directory (qemu does:
    its kernel, initrd and appliance disk are in the cache there)."""
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(len(processes_mentioning(str(goldens.work))))
            stop.wait(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    yield seen
    stop.set()
    thread.join()


def test_a_timeout_kills_guestfish_and_qemu(goldens: Goldens, tmp_path: Path, watcher: list[int]) -> None:
    volume = overlay(goldens.ext4, tmp_path / "vol.qcow2")
    started = time.monotonic()
    with pytest.raises(PlanFailed) as caught:
        run_plan(volume, [PlanStep("slow", "mount /dev/sda1 /\numount /\n")], work_dir=goldens.work, timeout=6)
    elapsed = time.monotonic() - started
    assert "timed out after 6 s" in caught.value.reason
    assert elapsed < 20
    assert max(watcher) >= 1  # qemu was running when the timeout hit
    assert not processes_mentioning(str(goldens.work))
    assert not list(goldens.work.glob("run-*"))
