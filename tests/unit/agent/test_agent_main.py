"""The agent's first form: what it reads from the kernel command line and the line it prints."""

from __future__ import annotations

import ast
import io
import secrets
from pathlib import Path

import pytest

from agent.__main__ import STARTED, main, python_version, started_line
from agent.bootparams import BootParams, bootif_mac, mask_token, parse_cmdline, printable, split_cmdline
from agent.nic import boot_interface, interfaces, ipv4_address
from appliance.config import BootSettings
from pxe.ipxe import netboot_script

AGENT_DIR = Path(__file__).resolve().parents[3] / "agent"
# What Debian bookworm's python3-minimal offers (libpython3.11-minimal's .py files and the
# interpreter's built-in modules), restricted to what an agent could sensibly import. Not there:
# json, dataclasses, shlex, shutil, http (so no working urllib.request), uuid, asyncio.
PYTHON3_MINIMAL = {
    "__future__", "abc", "argparse", "base64", "binascii", "bisect", "codecs", "collections", "contextlib", "copy",
    "datetime", "enum", "errno", "fcntl", "fnmatch", "functools", "glob", "hashlib", "heapq", "io", "ipaddress",
    "itertools", "locale", "logging", "math", "operator", "os", "pathlib", "platform", "random", "re", "select",
    "selectors", "signal", "socket", "ssl", "stat", "string", "struct", "subprocess", "sys", "tempfile", "textwrap",
    "threading", "time", "traceback", "types", "typing", "urllib", "warnings", "weakref", "zlib",
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

def test_main_prints_one_line_with_the_boot_nic(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(appliance_cmdline(token, mac="52:54:00:00:00:02"))
    uptime = tmp_path / "uptime"
    uptime.write_text("12.34 20.00\n")
    sysfs = fake_sysfs(tmp_path / "net", {"ingot-no-such0": ("1", "52:54:00:00:00:01", "up"),
                                          "ingot-no-such1": ("1", "52:54:00:00:00:02", "up")})
    out = io.StringIO()
    assert main([], out=out, cmdline_path=str(cmdline), uptime_path=str(uptime), sys_class_net=str(sysfs)) == 0
    text = out.getvalue()
    assert text == (f"INGOT-AGENT started mac=52:54:00:00:00:02 ip=none uptime=12.34 python={python_version()} "
                    f"url=http://10.78.0.1:8080 token=<masked:{len(token)}>\n")
    assert token not in text


def test_main_without_proc_files(tmp_path: Path) -> None:
    out = io.StringIO()
    main([], out=out, cmdline_path=str(tmp_path / "none"), uptime_path=str(tmp_path / "none"),
         sys_class_net=str(tmp_path / "none"))
    assert out.getvalue() == f"INGOT-AGENT started mac=none ip=none uptime=none python={python_version()} " \
                             "url=none token=none\n"


def test_agent_imports_only_what_python3_minimal_has() -> None:
    """The ramdisk has python3-minimal only; an import of anything else fails there at boot."""
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
                assert top == "agent" or top in PYTHON3_MINIMAL, f"{path.name} imports {name}"
