"""The agent's first form: what it reads from the kernel command line and the line it prints."""

from __future__ import annotations

import ast
import io
import secrets
from pathlib import Path

import pytest

from agent.__main__ import IDLE, STARTED, main, python_version, started_line
from agent.appliance_url import appliance_url, dhcp_server_url, read_env
from agent.bootparams import BootParams, bootif_mac, mask_token, parse_cmdline, printable, split_cmdline
from agent.nic import boot_interface, interfaces, ipv4_address
from agent.runner import Runner
from appliance.config import BootSettings
from lab.images import RAMDISK_PACKAGES
from lab.rootfs import slim
from pxe.ipxe import netboot_script

AGENT_DIR = Path(__file__).resolve().parents[3] / "agent"
# What the ramdisk's Python has: what Debian bookworm's python3-minimal and libpython3-stdlib ship
# (libpython3.11-minimal's and libpython3.11-stdlib's modules and the interpreter's built-ins),
# restricted to what an agent could sensibly import. Not there: anything third-party (no pip in
# the ramdisk), tkinter, distutils, lib2to3, venv/ensurepip (packages of their own).
RAMDISK_STDLIB = {
    "__future__", "abc", "argparse", "base64", "binascii", "bisect", "codecs", "collections", "contextlib", "copy",
    "dataclasses", "datetime", "email", "enum", "errno", "fcntl", "fnmatch", "functools", "glob", "hashlib", "heapq",
    "http", "io", "ipaddress", "itertools", "json", "locale", "logging", "math", "operator", "os", "pathlib",
    "platform", "queue", "random", "re", "select", "selectors", "shlex", "shutil", "signal", "socket", "ssl", "stat",
    "string", "struct", "subprocess", "sys", "tempfile", "textwrap", "threading", "time", "traceback", "types",
    "typing", "urllib", "uuid", "warnings", "weakref", "zlib",
}


def appliance_cmdline(token: str, mac: str = "52:54:00:ab:CD:01") -> str:
    """The kernel command line the appliance's iPXE script gives the ramdisk (as
    appliance/netboot/scripts.py composes it), as the kernel sees it in /proc/cmdline."""
    args = [*BootSettings().kernel_args.split(), "ingot.url=http://10.78.0.1:8080", f"ingot.token={token}",
            f"BOOTIF=01-{mac.replace(':', '-')}"]
    script = netboot_script(kernel_url="http://10.78.0.1:8080/boot/ramdisk/vmlinuz",
                            initrd_url="http://10.78.0.1:8080/boot/ramdisk/initrd.img", kernel_args=args)
    kernel_line = next(line for line in script.splitlines() if line.startswith("kernel "))
    return kernel_line.split(" ", 2)[2] + "\n"


def fake_sysfs(root: Path, nics: dict[str, tuple[str, str, str]]) -> Path:
    """/sys/class/net with ``name: (type, address, operstate)`` entries."""
    for name, (kind, mac, state) in nics.items():
        (root / name).mkdir(parents=True)
        (root / name / "type").write_text(kind + "\n")
        (root / name / "address").write_text(mac + "\n")
        (root / name / "operstate").write_text(state + "\n")
    return root


# -- the command line ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("", []),
    ("  a=1   b \n", ["a=1", "b"]),
    ('x="two words" y', ["x=two words", "y"]),
    ('"quoted=whole thing" z=3', ["quoted=whole thing", "z=3"]),
    ("console=ttyS0,115200\tconsole=tty0", ["console=ttyS0,115200", "console=tty0"]),
])
def test_split_cmdline_follows_the_kernel(text: str, expected: list[str]) -> None:
    assert split_cmdline(text) == expected


def test_parse_cmdline_keeps_the_last_value_and_flags() -> None:
    params = parse_cmdline("console=ttyS0 quiet console=tty0 ingot.poweroff root=/dev/vda1=x")
    assert params == {"console": "tty0", "quiet": "", "ingot.poweroff": "", "root": "/dev/vda1=x"}


def test_boot_params_from_the_appliances_ipxe_script() -> None:
    token = secrets.token_urlsafe(24)
    params = BootParams.from_cmdline(appliance_cmdline(token))
    assert params == BootParams(url="http://10.78.0.1:8080", token=token, bootif="52:54:00:ab:cd:01")
    assert not params.poweroff


def test_boot_params_without_ingot_arguments() -> None:
    assert BootParams.from_cmdline("console=ttyS0 ingot.token= ingot.poweroff") == BootParams(poweroff=True)


@pytest.mark.parametrize(("value", "mac"), [
    ("01-52-54-00-12-34-56", "52:54:00:12:34:56"),
    ("01-52-54-00-AB-CD-EF", "52:54:00:ab:cd:ef"),
    ("52:54:00:12:34:56", "52:54:00:12:34:56"),
    ("06-52-54-00-12-34-56", None),  # not Ethernet
    ("01-52-54-00-12-34", None),
    ("01-52-54-00-12-34-zz", None),
    ("", None),
])
def test_bootif_mac(value: str, mac: str | None) -> None:
    assert bootif_mac(value) == mac


def test_the_token_never_shows() -> None:
    token = secrets.token_urlsafe(24)
    params = BootParams.from_cmdline(appliance_cmdline(token))
    assert token not in repr(params)
    assert mask_token(token) == f"<masked:{len(token)}>"
    assert mask_token(None) == mask_token("") == "none"


@pytest.mark.parametrize(("value", "shown"), [
    (None, "none"),
    ("", "none"),
    ("http://10.0.0.1:8080/x", "http://10.0.0.1:8080/x"),
    ("http://user:secret@10.0.0.1:8080/x", "http://***@10.0.0.1:8080/x"),
    ("a b\x1b[2J", "a?b?[2J"),
    ("x" * 300, "x" * 200 + "..."),
])
def test_printable_fields(value: str | None, shown: str) -> None:
    assert printable(value) == shown


# -- the report line -------------------------------------------------------------------------

def test_started_line_format() -> None:
    params = BootParams(url="http://10.78.0.1:8080", token="t" * 32)
    line = started_line(params, "52:54:00:12:34:56", "10.0.2.15/24", "8.69", "3.11.2")
    assert line == ("INGOT-AGENT started mac=52:54:00:12:34:56 ip=10.0.2.15/24 uptime=8.69 python=3.11.2 "
                    "url=http://10.78.0.1:8080 token=<masked:32>")
    assert line.startswith(STARTED)


def test_started_line_when_nothing_is_known() -> None:
    assert started_line(BootParams(), None, None, None, "3.11.2") == (
        "INGOT-AGENT started mac=none ip=none uptime=none python=3.11.2 url=none token=none")


def test_python_version_is_three_numbers() -> None:
    assert python_version().count(".") == 2 and all(p.isdigit() for p in python_version().split("."))


# -- the boot NIC ----------------------------------------------------------------------------

def test_boot_interface_prefers_bootif_then_an_up_link(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "net", {
        "lo": ("772", "00:00:00:00:00:00", "unknown"),
        "eth0": ("1", "52:54:00:00:00:01", "down"),
        "eth1": ("1", "52:54:00:00:00:02", "up"),
        "ib0": ("32", "80:00:00:00:00:00", "up"),  # not Ethernet
    })
    assert [n for n, _, _ in interfaces(str(sysfs))] == ["eth0", "eth1"]
    assert boot_interface("52:54:00:00:00:01", str(sysfs)) == ("eth0", "52:54:00:00:00:01")
    assert boot_interface(None, str(sysfs)) == ("eth1", "52:54:00:00:00:02")
    assert boot_interface("52:54:00:99:99:99", str(sysfs)) == ("eth1", "52:54:00:00:00:02")


def test_boot_interface_falls_back_to_the_first_and_then_none(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "net", {"eth1": ("1", "52:54:00:00:00:02", "down"),
                                          "eth0": ("1", "52:54:00:00:00:01", "down")})
    assert boot_interface(None, str(sysfs)) == ("eth0", "52:54:00:00:00:01")
    assert boot_interface(None, str(tmp_path / "missing")) is None


def test_ipv4_address_of_loopback_and_of_nothing() -> None:
    assert ipv4_address("lo") == "127.0.0.1/8"
    assert ipv4_address("ingot-no-such0") is None


# -- main ------------------------------------------------------------------------------------

class Recorder:
    """Stands in for ``Runner.run``: keeps the runner main built and returns a given status."""

    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.runners: list[Runner] = []

    def __call__(self, runner: Runner) -> int:
        self.runners.append(runner)
        return self.status


def test_main_prints_one_line_with_the_boot_nic_then_runs_the_agent(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(appliance_cmdline(token, mac="52:54:00:00:00:02"))
    uptime = tmp_path / "uptime"
    uptime.write_text("12.34 20.00\n")
    sysfs = fake_sysfs(tmp_path / "net", {"ingot-no-such0": ("1", "52:54:00:00:00:01", "up"),
                                          "ingot-no-such1": ("1", "52:54:00:00:00:02", "up")})
    out = io.StringIO()
    run = Recorder(status=7)
    assert main([], out=out, cmdline_path=str(cmdline), uptime_path=str(uptime), sys_class_net=str(sysfs),
                dhcp_env_path=str(tmp_path / "none"), run=run) == 7
    text = out.getvalue()
    assert text == (f"INGOT-AGENT started mac=52:54:00:00:00:02 ip=none uptime=12.34 python={python_version()} "
                    f"url=http://10.78.0.1:8080 token=<masked:{len(token)}>\n")
    assert token not in text
    [runner] = run.runners
    assert runner.client.base_url == "http://10.78.0.1:8080"
    assert runner.macs == ["52:54:00:00:00:02", "52:54:00:00:00:01"]  # the boot NIC's first
    assert runner.address() is None and runner.out is out
    assert token not in repr(runner) and f"<masked:{len(token)}>" in repr(runner)


def test_main_without_proc_files_idles(tmp_path: Path) -> None:
    out = io.StringIO()
    run = Recorder()
    assert main([], out=out, cmdline_path=str(tmp_path / "none"), uptime_path=str(tmp_path / "none"),
                sys_class_net=str(tmp_path / "none"), dhcp_env_path=str(tmp_path / "none"), run=run) == 0
    assert out.getvalue() == f"INGOT-AGENT started mac=none ip=none uptime=none python={python_version()} " \
                             f"url=none token=none\n{IDLE}\n"
    assert IDLE == "INGOT-AGENT no appliance URL or token; idle"
    assert run.runners == []


def test_main_with_a_url_and_no_token_idles(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 ingot.url=http://10.78.0.1:8080\n")
    out = io.StringIO()
    run = Recorder()
    assert main([], out=out, cmdline_path=str(cmdline), uptime_path=str(tmp_path / "none"),
                sys_class_net=str(tmp_path / "none"), dhcp_env_path=str(tmp_path / "none"), run=run) == 0
    assert out.getvalue().endswith(f"url=http://10.78.0.1:8080 token=none\n{IDLE}\n")
    assert run.runners == []


def test_main_finds_the_appliance_at_the_dhcp_server(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 ingot.token=abcdefgh\n")
    lease = tmp_path / "dhcp.env"
    lease.write_text("serverid=10.78.0.5\nsiaddr=10.78.0.6\nip=10.78.0.23\nmask=24\n")
    out = io.StringIO()
    run = Recorder()
    assert main([], out=out, cmdline_path=str(cmdline), uptime_path=str(tmp_path / "none"),
                sys_class_net=str(tmp_path / "none"), dhcp_env_path=str(lease), run=run) == 0
    assert "url=none token=<masked:8>\n" in out.getvalue()  # the line shows ingot.url, as before
    assert [r.client.base_url for r in run.runners] == ["http://10.78.0.5:8080"]


def test_main_refuses_a_url_that_is_not_http(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("ingot.url=ftp://user:secret@10.78.0.1/ ingot.token=abcdefgh\n")
    out = io.StringIO()
    run = Recorder()
    assert main([], out=out, cmdline_path=str(cmdline), uptime_path=str(tmp_path / "none"),
                sys_class_net=str(tmp_path / "none"), dhcp_env_path=str(tmp_path / "none"), run=run) == 1
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("INGOT-AGENT the appliance URL 'ftp://10.78.0.1/' is not an http(s) URL")
    assert "secret" not in out.getvalue().splitlines()[-1] and run.runners == []


# -- finding the appliance -------------------------------------------------------------------

def test_appliance_url_prefers_the_command_line(tmp_path: Path) -> None:
    lease = tmp_path / "dhcp.env"
    lease.write_text("serverid=10.78.0.5\nip=10.78.0.23\n")
    assert appliance_url("http://10.0.0.1:9000", str(lease)) == "http://10.0.0.1:9000"
    assert appliance_url(None, str(lease)) == "http://10.78.0.5:8080"
    assert appliance_url(None, str(tmp_path / "missing")) is None


@pytest.mark.parametrize(("text", "url"), [
    ("serverid=10.78.0.5\n", "http://10.78.0.5:8080"),
    ("  serverid = 10.78.0.5 \nserverid\n", "http://10.78.0.5:8080"),
    ("serverid=\nsiaddr=10.78.0.6\n", None),  # no server id: the next-server is not the appliance
    ("serverid=10.78.0.5/24\n", None),
    ("serverid=evil.example:80/x?\n", None),
    ("", None),
])
def test_dhcp_server_url(tmp_path: Path, text: str, url: str | None) -> None:
    lease = tmp_path / "dhcp.env"
    lease.write_text(text)
    assert dhcp_server_url(str(lease)) == url


def test_read_env_skips_blank_values_and_other_lines(tmp_path: Path) -> None:
    lease = tmp_path / "dhcp.env"
    lease.write_text("serverid=10.78.0.5\nsiaddr=\n# comment\nip=10.78.0.23\nmask=24\n")
    assert read_env(str(lease)) == {"serverid": "10.78.0.5", "ip": "10.78.0.23", "mask": "24"}


# -- what the ramdisk's Python has -----------------------------------------------------------

def test_the_ramdisk_has_the_standard_library_and_slimming_keeps_it(tmp_path: Path) -> None:
    """libpython3-stdlib is installed, and lab.rootfs.slim deletes none of what the agent uses."""
    assert {"python3-minimal", "libpython3-stdlib"} <= set(RAMDISK_PACKAGES)
    needed = ["usr/lib/python3.11/json/__init__.py", "usr/lib/python3.11/http/client.py",
              "usr/lib/python3.11/email/parser.py", "usr/lib/python3.11/urllib/request.py",
              "usr/lib/python3.11/dataclasses.py", "usr/lib/python3.11/encodings/idna.py",
              "usr/lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so",
              "usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
              "usr/lib/x86_64-linux-gnu/libssl.so.3", "usr/lib/ssl/openssl.cnf", "usr/bin/busybox", "usr/bin/mv"]
    for rel in [*needed, "usr/share/common-licenses/GPL-3"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert slim(tmp_path) > 0
    assert not (tmp_path / "usr/share/common-licenses").exists()
    assert [rel for rel in needed if not (tmp_path / rel).is_file()] == []


def test_agent_imports_only_what_python3_minimal_has() -> None:
    """The ramdisk has what python3-minimal and libpython3-stdlib ship only; an import of anything
    else fails there at boot."""
    for path in sorted(AGENT_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top == "agent" or top in RAMDISK_STDLIB, f"{path.name} imports {name}"
