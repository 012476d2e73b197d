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
