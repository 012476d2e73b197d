"""``ingot deploy`` and ``ingot profiles`` as a user runs them, against a live appliance whose BMCs
are the in-process ``fake`` driver, with this test playing the deploy agent on the boot listener
(see test_server_profiles.py for the same over the in-process API): a golden image, a build plan
with no steps, a deployment plan and two inspected servers; both deployed at once with per-server
host names and a password nothing prints; a profile deleted (the agent erases the disks); a
deployed server captured into a golden image (``ingot capture``; the agent sends its disk back) and
a capture refused on a server with nothing deployed; and a create refused on a server that is not
available."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.cli.errors import UsageError
from appliance.cli.profiles import merge_attributes, parse_attributes, parse_per_server
from appliance.cli.progress import current_phase
from tests.support.agent_play import PlayedAgent, stub_ramdisk
from tests.support.cli import Cli

pytestmark = [pytest.mark.slow, pytest.mark.one_backend]

ROOT_PASSWORD = "Root-Secret-7781"
BMC_PASSWORD = "fake-bmc-Secret-2"
INVENTORY = {"cpu": {"count": 2}, "memory_bytes": 1 << 30, "nics": [],
             "disks": [{"name": "sda", "size_bytes": 64 << 30, "rotational": False, "removable": False}]}
ATTRIBUTES = [
    {"name": "Hostname", "type": "hostname", "value": "", "description": "", "constraints": "{}"},
    {"name": "RootPassword", "type": "password", "value": "", "description": "", "constraints": "{}"},
]


def _wait(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _provision_state(cli: Cli, server: dict[str, Any], state: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body: dict[str, Any] = cli.live.api("GET", server["uri"])
        return body if body["provisionState"] == state else None

    found: dict[str, Any] = _wait(check, f"{server['name']} to be {state}")
    return found


class Agent:
    """One boot of a server's agent on the live appliance's boot listener, played by the test."""

    def __init__(self, cli: Cli, server: dict[str, Any]) -> None:
        self.boot = httpx.Client(base_url=f"http://127.0.0.1:{cli.live.http_port}", timeout=30)
        self.played = PlayedAgent(self.boot, server["macAddresses"][0].lower(), INVENTORY)

    def run(self, name: str, result: Any) -> dict[str, Any]:
        """Wait for the command ``name`` and report it succeeded with ``result`` (or ``result(command)``)."""
        command = self.played.next_command()
        assert command["name"] == name, command
        self.played.report(command, state="succeeded", result=result(command) if callable(result) else result)
        self.close()
        return command

    def close(self) -> None:
        self.boot.close()


def _written(command: dict[str, Any]) -> dict[str, Any]:
    return {"device": "/dev/sda", "bytes": command["params"]["size"], "sha256": command["params"]["sha256"]}


def _inspected_server(cli: Cli, host: str, name: str) -> dict[str, Any]:
    """Enrol a fake server and inspect it to available, playing the agent."""
    task = cli.live.api("POST", "/rest/server-hardware", json={
        "hostname": host, "username": "admin", "password": BMC_PASSWORD, "driver": "fake", "name": name})
    done = _wait(lambda: (t := cli.live.api("GET", task["uri"]))["taskState"] == "Completed" and t, f"adding {name}")
    server: dict[str, Any] = cli.live.api("GET", done["associatedResource"]["resourceUri"])
    cli.live.api("PUT", f"{server['uri']}/provisionState", json={"event": "inspect"})
    Agent(cli, _provision_state(cli, server, "inspect-wait")).close()  # the inventory is all inspection wants
    return _provision_state(cli, server, "available")


def _no_secret(*outputs: str) -> None:
    for text in outputs:
        assert ROOT_PASSWORD not in text


def test_attribute_options_and_the_phase_shown() -> None:
    assert parse_attributes(["Hostname=web-1", "Motd=a=b", "Empty=", "Hostname=web-2"]) == {
        "Hostname": "web-2", "Motd": "a=b", "Empty": ""}
    for bad in ("Hostname", "=x"):
        with pytest.raises(UsageError, match="Name=value"):
            parse_attributes([bad])
    with pytest.raises(UsageError) as secret:
        parse_attributes(["Hostname=x", ROOT_PASSWORD])  # a value typed without its name is not echoed
    assert ROOT_PASSWORD not in secret.value.message and "value 2 has no =" in secret.value.message
    assert parse_per_server(["a:Hostname=x", "b:Hostname=y", "a:Motd=hi"], ["a", "b"]) == {
        "a": {"Hostname": "x", "Motd": "hi"}, "b": {"Hostname": "y"}}
    with pytest.raises(UsageError, match="not in --servers"):
        parse_per_server(["c:Hostname=z"], ["a", "b"])
    kept = [{"name": "Hostname", "value": "old", "type": "hostname"}, {"name": "RootPassword", "value": "********"}]
    assert merge_attributes(kept, {"Hostname": "new", "Motd": "hi"}) == [
        {"name": "Hostname", "value": "new"}, {"name": "RootPassword", "value": "********"},
        {"name": "Motd", "value": "hi"}]
    running = {"taskState": "Running", "taskStatus": "", "childTasks": [
        {"name": "Export the image", "taskState": "Completed", "taskStatus": "Completed."},
        {"name": "Write the image", "taskState": "Running", "taskStatus": "Wrote 2 of 4 MiB."}]}
    assert current_phase(running) == "Write the image: Wrote 2 of 4 MiB."
    assert current_phase({**running, "taskState": "Completed", "taskStatus": "Deployed web-1."}) == "Deployed web-1."
    assert current_phase({"taskState": "Running", "taskStatus": "Queued.", "childTasks": []}) == "Queued."


def test_deploy_two_servers_show_delete_and_a_refused_create(admin_cli: Cli, tmp_path: Path) -> None:
    stub_ramdisk(admin_cli.live.home)
    disk = tmp_path / "golden.raw"
    disk.write_bytes(os.urandom(1 << 20) + bytes(3 << 20))
    image = admin_cli.json("images", "upload", str(disk))
    (tmp_path / "attributes.json").write_text(json.dumps(ATTRIBUTES))
    build = admin_cli.json("plans", "build-plans", "create", "as-is", "--attributes", str(tmp_path / "attributes.json"))
    admin_cli.json("plans", "deployment-plans", "create", "golden as is", "--build-plan", build["id"],
                   "--golden-image", image["id"])
    servers = [_inspected_server(admin_cli, f"rack9-u{n}.example", f"web-{n}") for n in (1, 2)]

    # Both at once, each with its own host name; the test is both servers' agent meanwhile.
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(admin_cli, "deploy", "golden as is", "--servers", "web-1,web-2",
                              "--attr", f"RootPassword={ROOT_PASSWORD}", "--attr-per-server", "web-1:Hostname=node-1",
                              "--attr-per-server", "web-2:Hostname=node-2", "--name-prefix", "sp-")
        for server in servers:
            command = Agent(admin_cli, _provision_state(admin_cli, server, "deploy-wait")).run("write_image", _written)
            assert command["params"]["size"] == 4 << 20
        deployed = running.result(60)
    assert deployed.returncode == 0, deployed.stderr
    assert "Deployed sp-web-1." in deployed.stdout and "Deployed sp-web-2." in deployed.stdout
    assert "sp-web-1" in deployed.stderr and "sp-web-2" in deployed.stderr  # a progress bar per server

    listed = admin_cli("profiles", "list")
    assert listed.returncode == 0, listed.stderr
    for n in (1, 2):
        row = next(line for line in listed.stdout.splitlines() if line.startswith(f"sp-web-{n}"))
        assert re.search(rf"sp-web-{n}\s+Normal\s+OK\s+web-{n}\s+deployed\s+golden as is", row), row
    shown = admin_cli("profiles", "show", "sp-web-1")
    assert shown.returncode == 0, shown.stderr
    for pattern in (r"State\s+Normal", r"Server\s+web-1", r"Provision state\s+deployed",
                    r"Deployment plan\s+golden as is", r"OS volume\s+/rest/os-volumes/", r"Hostname\s+node-1",
                    r"RootPassword\s+\*{8}", r"Task Create \(.*\): Completed, 100%"):
        assert re.search(pattern, shown.stdout), (pattern, shown.stdout)
    phases = [line.split("  ")[0] for line in shown.stdout.splitlines() if re.search(r"\s+Completed\s+100\b", line)]
    assert phases == ["Create the OS volume", "Personalize", "Export the image", "Boot the deploy agent",
                      "Write the image", "Boot the operating system"], shown.stdout
    _no_secret(deployed.stdout, deployed.stderr, listed.stdout, shown.stdout)

    # Delete: released, erased by the agent, available again; the volume goes with the profile.
    with ThreadPoolExecutor(1) as pool:
        deleting = pool.submit(admin_cli, "profiles", "delete", "sp-web-1")
        Agent(admin_cli, _provision_state(admin_cli, servers[0], "clean-wait")).run("erase", {"disks": ["sda"]})
        deleted = deleting.result(60)
    assert deleted.returncode == 0, deleted.stderr
    assert "Deleted sp-web-1." in deleted.stdout
    assert admin_cli.live.api("GET", servers[0]["uri"])["provisionState"] == "available"
    assert [p["name"] for p in admin_cli.json("profiles", "list")["members"]] == ["sp-web-2"]

    # Capture: web-2's disk, sent back by its agent (the test), becomes a new golden image.
    with ThreadPoolExecutor(1) as pool:
        capturing = pool.submit(admin_cli, "capture", "web-2", "--name", "web-2-captured")
        agent = Agent(admin_cli, _provision_state(admin_cli, servers[1], "capture-wait"))
        agent.played.read_disk(disk.read_bytes())
        agent.close()
        captured = capturing.result(60)
    assert captured.returncode == 0, captured.stderr
    assert re.search(r"Name\s+web-2-captured", captured.stdout) and re.search(r"Captured\s+yes", captured.stdout)
    assert admin_cli.live.api("GET", servers[1]["uri"])["provisionState"] == "deployed"
    refused = admin_cli("capture", "web-1", "--name", "nothing-deployed")  # web-1 is available
    assert refused.returncode == 1, refused.stderr
    assert "INVALID_PROVISION_STATE" in refused.stderr and "ingot hardware show web-1" in refused.stderr

    # A server that is not available is refused, naming its state.
    admin_cli.live.api("PUT", f"{servers[0]['uri']}/provisionState", json={"event": "manage"})
    refused = admin_cli("profiles", "create", "sp-again", "--server", "web-1", "--plan", "golden as is",
                        "--attr", "Hostname=node-9", "--attr", f"RootPassword={ROOT_PASSWORD}")
    assert refused.returncode == 1, refused.stderr
    assert "provision state manageable" in refused.stderr and "INVALID_PROVISION_STATE" in refused.stderr
    assert "ingot hardware inspect web-1" in refused.stderr


def _section(kickstart: str, header: str) -> str:
    found = re.search(rf"^{re.escape(header)}\n(.*?)^%end$", kickstart, re.M | re.S)
    assert found, (header, kickstart)
    return found.group(1)


def test_an_installer_deploy_from_the_cli_called_back_by_the_kickstarts_own_curl(admin_cli: Cli,
                                                                                 tmp_path: Path) -> None:
    """The installer is played by running what its kickstart says: ``curl`` fetches the answer file from
    the URL in the boot script, ``ksvalidator`` checks it, and its %pre and %post lines run as written."""
    live = admin_cli.live
    stub_ramdisk(live.home)
    media = live.home / "boot" / "installers" / "rhel-9"
    media.mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img"):
        (media / name).write_bytes(b"installer " + name.encode())
    (tmp_path / "attributes.json").write_text(json.dumps([*ATTRIBUTES, {
        "name": "NIC1", "type": "nic", "value": "", "description": "", "constraints": json.dumps(
            {"ipv4static": True, "ipv4dhcp": True, "parameters": ["ipaddress", "netmask", "gateway", "dns1"]})}]))
    build = admin_cli.json("plans", "build-plans", "create", "installer vocabulary", "--attributes",
                           str(tmp_path / "attributes.json"))
    plan = admin_cli.json("plans", "deployment-plans", "create", "rhel 9 kickstart", "--build-plan", build["id"],
                          "--installer", "kickstart", "--os", "rhel", "--version", "9", "--media", "rhel-9",
                          "--kernel-args", "inst.repo=http://mirror.example/rhel/9/ inst.text")
    assert plan["installer"] == {"kind": "kickstart", "os": "rhel", "version": "9", "arch": "x86_64", "media": "rhel-9",
                                 "kernelArgs": "inst.repo=http://mirror.example/rhel/9/ inst.text"}
    shown = admin_cli("plans", "deployment-plans", "show", plan["id"])
    assert re.search(r"Installer\s+kickstart \(rhel 9 x86_64\) from media rhel-9", shown.stdout), shown.stdout
    bad = admin_cli("plans", "deployment-plans", "create", "bad", "--build-plan", build["id"], "--installer",
                    "kickstart", "--media", "../etc")
    assert bad.returncode == 2 and "installer.media" in bad.stderr, bad.stderr
    server = _inspected_server(admin_cli, "rack9-u7.example", "web-7")
    mac = server["macAddresses"][0].lower()

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(admin_cli, "deploy", "rhel 9 kickstart", "--servers", "web-7", "--name-prefix", "sp-",
                              "--attr", "Hostname=node-7", "--attr", f"RootPassword={ROOT_PASSWORD}",
                              "--attr", "NIC1.dhcp=false", "--attr", "NIC1.ipaddress=10.0.0.27",
                              "--attr", "NIC1.netmask=255.255.255.0", "--attr", "NIC1.gateway=10.0.0.1")
        _provision_state(admin_cli, server, "deploy-wait")
        boot_url = f"http://127.0.0.1:{live.http_port}"
        script = httpx.get(f"{boot_url}/ipxe/{mac}/boot.ipxe", timeout=30).text
        assert f"kernel {boot_url}/boot/installers/rhel-9/vmlinuz " in script, script
        answer = re.search(r" inst\.ks=(\S+)", script)
        assert answer and " inst.repo=http://mirror.example/rhel/9/ inst.text inst.ks=" in script, script
        fetched = subprocess.run(["curl", "-fsS", "-o", str(tmp_path / "ks.cfg"), answer.group(1)],
                                 capture_output=True, text=True, timeout=60)
        assert fetched.returncode == 0, fetched.stderr
        kickstart = (tmp_path / "ks.cfg").read_text()
        valid = subprocess.run([str(Path(sys.executable).with_name("ksvalidator")), "-v", "RHEL9",
                                str(tmp_path / "ks.cfg")], capture_output=True, text=True, timeout=60)
        assert valid.returncode == 0, valid.stdout + valid.stderr
        assert "network --hostname=node-7" in kickstart and ROOT_PASSWORD not in kickstart
        assert f"--device={mac} --bootproto=static --ip=10.0.0.27 --netmask=255.255.255.0" in kickstart
        for header in ("%pre", "%post --nochroot"):  # start, then success: each line as the installer runs it
            ran = subprocess.run(["sh", "-ec", _section(kickstart, header)], capture_output=True, text=True,
                                 timeout=120)
            assert ran.returncode == 0 and '"status":"recorded"' in ran.stdout.replace(" ", ""), ran
        deployed = running.result(60)
    assert deployed.returncode == 0, deployed.stderr
    assert "Deployed sp-web-7." in deployed.stdout and "sp-web-7" in deployed.stderr
    assert admin_cli.live.api("GET", server["uri"])["provisionState"] == "deployed"
    shown = admin_cli("profiles", "show", "sp-web-7")
    phases = [line.split("  ")[0] for line in shown.stdout.splitlines() if re.search(r"\s+Completed\s+100\b", line)]
    assert phases == ["Render the answer file", "Boot the installer", "Install the operating system",
                      "Boot the operating system"], shown.stdout
    assert "/rest/os-volumes/" not in shown.stdout  # an installer writes the disk itself: no OS volume
    _no_secret(deployed.stdout, deployed.stderr, shown.stdout, kickstart)
    # The token died with the deploy.
    again = subprocess.run(["curl", "-fsS", "-o", "/dev/null", "-w", "%{http_code}", answer.group(1)],
                           capture_output=True, text=True, timeout=60)
    assert again.stdout == "401", again
