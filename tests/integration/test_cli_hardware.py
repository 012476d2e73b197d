"""``ingot hardware`` as a user runs it: a subprocess against a live appliance whose BMCs are the
in-process ``fake`` driver (any host name answers) or, for discovery, OpenIPMI's ``ipmi_sim``."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.cli.errors import UsageError
from appliance.cli.hardware import (
    EscapeFilter,
    choose_enrolments,
    console_url,
    inventory_summary,
    provision_of,
    quote_filter,
)
from appliance.cli.session import Target, TlsSettings
from tests.integration.test_cli import assert_no_secret
from tests.support.agent_play import PlayedAgent, stub_ramdisk
from tests.support.cli import INGOT, Cli
from tests.support.ipmi_sim import PASSWORD as IPMI_PASSWORD
from tests.support.ipmi_sim import USER as IPMI_USER
from tests.support.ipmi_sim import IpmiSim, ipmi_sim_fixture  # noqa: F401 - fixture "ipmi_sim"

# The CLI is the same on either database; the API tests cover both backends.
pytestmark = pytest.mark.one_backend

BMC_PASSWORD = "fake-bmc-Secret-1"
READER_PASSWORD = "Reader-pass-1"
# What the deploy agent posts (agent.inventory.collect's shape); tests play the agent over its API.
INVENTORY = {"cpu": {"model": "Fake CPU", "count": 4, "architecture": "x86_64"}, "memory_bytes": 2000 << 20,
             "physical_memory_bytes": 2048 << 20,
             "disks": [{"name": "sda", "size_bytes": 480 << 30, "rotational": False, "removable": False,
                        "model": "Samsung SSD 860", "vendor": "ATA", "serial": "S3Z1NB0K",
                        "wwn": "0x5002538e40a1b2c3"}],
             "nics": [{"name": "eth0", "mac": "52:54:00:12:34:01", "link": True, "speed_mbps": 1000,
                       "driver": "virtio_net", "lldp": {"chassis_id": "0c:42:a1:00:10:07", "port_id": "Ethernet1/7",
                                                        "system_name": "tor-a", "vlan_id": 110}}],
             "system": {"sys_vendor": "Ingot", "product_name": "Fake Server 1000"}}


def _add(cli: Cli, host: str, name: str, *extra: str) -> Any:
    result = cli("hardware", "add", host, "-u", "admin", "-p", BMC_PASSWORD, "--driver", "fake", "--name", name,
                 *extra)
    assert result.returncode == 0, result.stderr
    assert_no_secret(result, BMC_PASSWORD)
    return result


def _server(cli: Cli, name: str) -> dict[str, Any]:
    server: dict[str, Any] = cli.json("hardware", "show", name)
    return server


# --- pure parts ----------------------------------------------------------------------------------
def test_escape_filter_is_like_ssh() -> None:
    escape = EscapeFilter()
    assert escape.feed(b"ls\r") == (b"ls\r", False)
    assert escape.feed(b"~~") == (b"~", False)  # ~~ at a line start sends one ~
    assert escape.feed(b"a~.b") == (b"a~.b", False)  # not at a line start: plain text
    assert escape.feed(b"\r~") == (b"\r", False)  # held back: could be the escape
    assert escape.feed(b"x") == (b"~x", False)
    assert escape.feed(b"\n~.ignored") == (b"\n", True)
    assert EscapeFilter().feed(b"~.") == (b"", True)  # the very first line counts


def test_choose_enrolments() -> None:
    found = [
        {"address": "10.0.0.1", "port": 623, "protocol": "ipmi", "enrolled": False},
        {"address": "10.0.0.1", "port": 443, "protocol": "redfish", "enrolled": False},
        {"address": "10.0.0.2", "port": 623, "protocol": "ipmi", "enrolled": True},
        {"address": "10.0.0.3", "port": 443, "protocol": "redfish", "enrolled": False},
    ]
    assert [(f["address"], f["protocol"]) for f in choose_enrolments(found, "all")] == [
        ("10.0.0.1", "ipmi"), ("10.0.0.3", "redfish")]
    assert [f["address"] for f in choose_enrolments(found, "10.0.0.3, 10.0.0.1,10.0.0.3")] == ["10.0.0.3", "10.0.0.1"]
    with pytest.raises(UsageError, match="already enrolled"):
        choose_enrolments(found, "10.0.0.2")
    with pytest.raises(UsageError, match="no BMC answered"):
        choose_enrolments(found, "10.0.0.9")


def test_console_url_and_filter_quoting() -> None:
    target = Target(url="https://appliance.example:8443", credential="s", tls=TlsSettings(), via="session")
    assert console_url(target, "abc") == "wss://appliance.example:8443/rest/server-hardware/abc/console"
    assert quote_filter("it's") == "it''s"


def test_provision_and_inventory_text() -> None:
    assert provision_of({"provisionState": "inspect-wait", "targetProvisionState": "available"}) == \
        "inspect-wait → available"
    assert provision_of({"provisionState": "maintenance", "maintenanceFrom": "manageable"}) == \
        "maintenance (from manageable)"
    assert inventory_summary({"hardwareInventory": None}) == []
    assert inventory_summary({"hardwareInventory": INVENTORY, "memoryMb": 2048}) == [
        "4 x Fake CPU (x86_64)", "2048 MiB", "1 disk", "1 NIC"]


# --- against a live appliance --------------------------------------------------------------------
@pytest.mark.slow
def test_add_list_show_power_boot_refresh_remove(admin_cli: Cli) -> None:
    added = _add(admin_cli, "fake-1.example", "web-1")
    assert "Added web-1" in added.stdout and "NoProfileApplied" in added.stdout

    listed = admin_cli("hardware", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "web-1" in line)
    for text in ("Off", "NoProfileApplied", "manageable", "OK", "Fake Server 1000", "fake-1.example:623"):
        assert text in row, text
    body = admin_cli.json("hardware", "list")
    assert body["category"] == "server-hardware" and body["total"] == 1
    [member] = body["members"]
    assert member["name"] == "web-1" and member["driver"] == "fake" and member["powerState"] == "Off"
    assert member["provisionState"] == "manageable" and member["hardwareInventory"] is None
    text = json.dumps(body)
    assert BMC_PASSWORD not in text and '"username"' not in text and '"password"' not in text

    shown = admin_cli("hardware", "show", "web-1")
    assert shown.returncode == 0, shown.stderr
    for text in ("Fake Server 1000", member["serialNumber"], member["uuid"], "Inlet Temp", "4200.0 RPM",
                 member["macAddresses"][0], "fake-1.example:623", "Inventory: not inspected yet"):
        assert text in shown.stdout, text
    assert re.search(r"Provision state\s+manageable", shown.stdout), shown.stdout
    assert _server(admin_cli, member["id"])["id"] == member["id"]  # by ID as well as by name

    on = admin_cli("hardware", "power", "web-1", "on")
    assert on.returncode == 0, on.stderr
    assert "web-1 is powered On." in on.stdout
    assert "Update power state" in on.stderr  # the progress bar's task name, on stderr
    assert _server(admin_cli, "web-1")["powerState"] == "On"
    for action, expected in (("cycle", "On"), ("reset", "On"), ("off", "Off"), ("on", "On"), ("force-off", "Off")):
        result = admin_cli("hardware", "power", "web-1", action)
        assert result.returncode == 0, (action, result.stderr)
        assert _server(admin_cli, "web-1")["powerState"] == expected, action

    boot = admin_cli("hardware", "bootdev", "web-1", "pxe", "--uefi")
    assert boot.returncode == 0, boot.stderr
    assert "web-1 boots from pxe (next boot only, uefi)." in boot.stdout
    assert _server(admin_cli, "web-1")["bootDevice"] == {"device": "pxe", "persistent": False, "mode": "uefi"}
    persistent = admin_cli("hardware", "bootdev", "web-1", "disk", "--persistent")
    assert persistent.returncode == 0, persistent.stderr
    assert _server(admin_cli, "web-1")["bootDevice"]["device"] == "disk"
    assert _server(admin_cli, "web-1")["bootDevice"]["persistent"] is True

    refreshed = admin_cli("hardware", "refresh", "web-1")
    assert refreshed.returncode == 0, refreshed.stderr
    assert "web-1 refreshed" in refreshed.stdout

    queued = admin_cli("hardware", "power", "web-1", "on", "--no-wait")
    assert queued.returncode == 0, queued.stderr
    assert "ingot tasks watch" in queued.stdout
    task_id = queued.stdout.split("ingot tasks watch ")[1].split("`")[0]
    assert admin_cli("tasks", "watch", task_id).returncode == 0

    removed = admin_cli("hardware", "remove", "web-1")
    assert removed.returncode == 0, removed.stderr
    assert "Removed web-1." in removed.stdout
    gone = admin_cli("hardware", "show", "web-1")
    assert gone.returncode == 1 and "No server hardware is named 'web-1'" in gone.stderr
    missing = admin_cli("hardware", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr
    assert "No server hardware." in admin_cli("hardware", "list").stderr


@pytest.mark.slow
def test_bad_input_and_failures(admin_cli: Cli) -> None:
    _add(admin_cli, "fake-2.example", "db-1")
    for args, needle in ((("power", "db-1", "explode"), "Unknown power action"),
                         (("bootdev", "db-1", "floppy"), "Unknown boot device"),
                         (("bootdev", "db-1", "pxe", "--uefi", "--bios"), "exclude each other"),
                         (("add", "x.example", "-u", "a", "-p", "b", "--driver", "telepathy"), "Unknown driver"),
                         (("discover", "not-a-net"), "Not a network"),
                         (("provision", "db-1", "deploy"), "Unknown provision event"),
                         (("discover", "127.0.0.1/32", "--enroll", "all"), "user name")):
        result = admin_cli("hardware", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr, args

    refused = admin_cli("hardware", "provision", "db-1", "unmaintain")  # a manageable server is not in maintenance
    assert refused.returncode == 1, refused.stderr
    assert "not allowed in provision state manageable" in refused.stderr and "INVALID_PROVISION_STATE" in refused.stderr
    assert "Allowed in manageable: inspect, retire, maintain." in refused.stderr

    duplicate = admin_cli("hardware", "add", "fake-2.example", "-u", "admin", "-p", BMC_PASSWORD, "--driver", "fake")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr

    # The fake BMC keeps the first password it saw: a forced re-add with another one fails its task.
    wrong = admin_cli("hardware", "add", "fake-2.example", "-u", "admin", "-p", "not-the-password", "--driver",
                      "fake", "--name", "db-1", "--force")
    assert wrong.returncode == 1
    assert "ended Error" in wrong.stderr
    assert_no_secret(wrong, "not-the-password")

    no_prompt = admin_cli("hardware", "add", "fake-3.example", "-u", "admin", "--driver", "fake")
    assert no_prompt.returncode == 2 and "No terminal" in no_prompt.stderr  # stdin is not a terminal
    from_stdin = admin_cli("hardware", "add", "fake-3.example", "-u", "admin", "--driver", "fake",
                           "--password-stdin", input=BMC_PASSWORD + "\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert _server(admin_cli, "fake-3.example")["state"] == "NoProfileApplied"  # the default name is the host


@pytest.mark.slow
def test_sync_and_roles(admin_cli: Cli, tmp_path: Path) -> None:
    _add(admin_cli, "fake-4.example", "app-1")
    synced = admin_cli("hardware", "sync")
    assert synced.returncode == 0, synced.stderr
    assert "app-1" in synced.stdout and "Off" in synced.stdout

    added = admin_cli("users", "add", "reader", "--role", "read-only", "--password-stdin",
                      input=READER_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    reader = tmp_path / "reader" / "session.json"
    assert admin_cli.login("reader", READER_PASSWORD, config=reader).returncode == 0
    assert admin_cli("hardware", "list", config=reader).returncode == 0  # reading is allowed
    for args in (("power", "app-1", "on"), ("sync",), ("remove", "app-1"), ("console", "app-1"),
                 ("provision", "app-1", "maintain")):
        denied = admin_cli("hardware", *args, config=reader)
        assert denied.returncode == 3, (args, denied.stderr)
    assert _server(admin_cli, "app-1")["powerState"] == "Off"


@pytest.mark.slow
def test_console_copies_stdin_and_output(admin_cli: Cli) -> None:
    _add(admin_cli, "fake-5.example", "con-1")
    result = admin_cli("hardware", "console", "con-1", input="root\r")
    assert result.returncode == 0, result.stderr
    assert "Fake serial console on fake-5.example" in result.stdout
    assert "login: root" in result.stdout  # the fake echoes what is typed
    missing = admin_cli("hardware", "console", "no-such-server", input="")
    assert missing.returncode == 1 and "No server hardware is named" in missing.stderr


@pytest.mark.slow
def test_discover_and_enroll(admin_cli: Cli, ipmi_sim: IpmiSim) -> None:
    port = str(ipmi_sim.port)
    scan = admin_cli("hardware", "discover", "127.0.0.1/32", "--port", port)
    assert scan.returncode == 0, scan.stderr
    row = next(line for line in scan.stdout.splitlines() if "127.0.0.1" in line)
    assert port in row and "ipmi" in row and "no" in row
    assert "1 answered, 1 not enrolled yet." in scan.stdout
    data = admin_cli.json("hardware", "discover", "127.0.0.1/32", "--port", port)
    assert [(f["address"], f["port"], f["enrolled"]) for f in data["found"]] == [("127.0.0.1", ipmi_sim.port, False)]

    wrong = admin_cli("hardware", "discover", "127.0.0.1/32", "--port", port, "--enroll", "10.9.9.9", "-u", "x",
                      "-p", "y")
    assert wrong.returncode == 2 and "no BMC answered there" in wrong.stderr

    enrolled = admin_cli("hardware", "discover", "127.0.0.1/32", "--port", port, "--enroll", "all",
                         "-u", IPMI_USER, "-p", IPMI_PASSWORD)
    assert enrolled.returncode == 0, enrolled.stderr
    assert_no_secret(enrolled, IPMI_PASSWORD)
    name = f"127.0.0.1:{port}"
    server = _server(admin_cli, name)
    assert server["driver"] == "ipmi" and server["state"] == "NoProfileApplied"

    again = admin_cli("hardware", "discover", "127.0.0.1/32", "--port", port)
    assert again.returncode == 0, again.stderr
    assert f"yes: {name}" in again.stdout and "0 not enrolled yet" in again.stdout
    nothing = admin_cli("hardware", "discover", "127.0.0.1/32", "--port", port, "--enroll", "all", "-u", "x",
                        "-p", "y")
    assert nothing.returncode == 0, nothing.stderr


@pytest.mark.slow
def test_console_on_a_terminal_leaves_with_tilde_dot(admin_cli: Cli) -> None:
    _add(admin_cli, "fake-6.example", "tty-1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGOT_")}
    env["INGOT_CLI_CONFIG"] = str(admin_cli.config)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([str(INGOT), "hardware", "console", "tty-1"], stdin=secondary, stdout=secondary,
                            stderr=secondary, env=env, cwd=admin_cli.cwd, close_fds=True)
    os.close(secondary)
    seen = b""

    def read_until(needle: bytes, timeout: float = 30) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while needle not in seen:
            assert time.monotonic() < deadline, f"{needle!r} never came; got {seen!r}"
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):
                    seen += os.read(primary, 4096)

    try:
        read_until(b"Type ~. on a new line to disconnect.")
        read_until(b"login: ")
        os.write(primary, b"root\r")
        read_until(b"login: root")
        os.write(primary, b"~.")  # right after Enter: a new line
        assert proc.wait(15) == 0
        read_until(b"Disconnected.")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(primary)


def _wait_provision_state(cli: Cli, server_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = cli.live.api("GET", f"/rest/server-hardware/{server_id}")
        if body["provisionState"] == state:
            return body
        assert time.monotonic() < deadline, f"still {body['provisionState']}, waiting for {state}"
        time.sleep(0.1)


def _play_agent(cli: Cli, mac: str) -> None:
    """What the ramdisk's agent does on the boot listener: look up, post the inventory."""
    with httpx.Client(base_url=f"http://127.0.0.1:{cli.live.http_port}", timeout=30) as boot:
        PlayedAgent(boot, mac, INVENTORY)


@pytest.mark.slow
def test_inspect_abort_then_inspect_to_available(admin_cli: Cli) -> None:
    _add(admin_cli, "fake-7.example", "insp-1")
    server = _server(admin_cli, "insp-1")

    # No agent answers: abort the wait; the task fails and the server keeps the reason.
    queued = admin_cli("hardware", "inspect", "insp-1", "--no-wait")
    assert queued.returncode == 0, queued.stderr
    task_id = queued.stdout.split("ingot tasks watch ")[1].split("`")[0]
    _wait_provision_state(admin_cli, server["id"], "inspect-wait")
    aborted = admin_cli("hardware", "provision", "insp-1", "abort")
    assert aborted.returncode == 0, aborted.stderr
    assert "insp-1 is inspect-failed." in aborted.stdout
    watched = admin_cli("tasks", "watch", task_id)
    assert watched.returncode == 1 and "Aborted in inspect-wait" in watched.stderr
    failed = admin_cli("hardware", "show", "insp-1")
    assert re.search(r"Provision state\s+inspect-failed", failed.stdout), failed.stdout
    assert re.search(r"Last error\s+Aborted in inspect-wait", failed.stdout), failed.stdout

    # Again, with the agent reporting this time: the command follows the task to the end.
    stub_ramdisk(admin_cli.live.home)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(admin_cli, "hardware", "inspect", "insp-1")
        waiting = _wait_provision_state(admin_cli, server["id"], "inspect-wait")
        _play_agent(admin_cli, waiting["macAddresses"][0].lower())
        inspected = running.result(60)
    assert inspected.returncode == 0, inspected.stderr
    assert "insp-1 inspected: available, 4 x Fake CPU (x86_64), 2048 MiB, 1 disk, 1 NIC." in inspected.stdout
    assert "Inspect" in inspected.stderr  # the progress bar's task name
    shown = admin_cli("hardware", "show", "insp-1")
    assert re.search(r"Provision state\s+available", shown.stdout), shown.stdout
    for text in ("CPU: 4 x Fake CPU (x86_64)", "Memory: 2048 MiB", "480.0 GiB", "S3Z1NB0K", "Samsung SSD 860",
                 "52:54:00:12:34:01", "eth0"):
        assert text in shown.stdout, text
    disk = next(line for line in shown.stdout.splitlines() if line.startswith("sda"))
    nic = next(line for line in shown.stdout.splitlines() if line.startswith("eth0"))
    assert "480.0 GiB" in disk and "S3Z1NB0K" in disk and "52:54:00:12:34:01" in nic and "up" in nic
    assert "tor-a Ethernet1/7 (VLAN 110)" in shown.stdout  # the switch port the agent heard over LLDP
