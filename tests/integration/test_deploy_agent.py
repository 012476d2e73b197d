"""The real deploy agent (agent.runner, in its own process on a fake /proc + /sys with a file as its
disk: tests/support/agent_machine.py) against a real ``ingot serve``, through a proxy that can cut
the link (tests/support/tcp_proxy.py). The BMC is Ingot's fake driver, so "power on" is this test
starting the agent process, as the server's firmware would.

- Inspection: the agent looks itself up and reports the disk and NIC.
- A deploy whose image download is cut mid-stream: the agent resumes with a Range request from the
  last byte written and the disk ends up equal to the image (SHA-256 checked by the agent).
- The appliance killed with SIGKILL mid-deploy: restarted, it resumes the deploy from its checkpoint
  and finishes it; no OS volume is left over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agent_play import boot_token, stub_ramdisk
from tests.support.live import REPO, LiveAppliance
from tests.support.tcp_proxy import FaultyProxy

pytestmark = [pytest.mark.slow, pytest.mark.one_backend]

IMAGE = os.urandom(3 << 20) + bytes(5 << 20)  # 8 MiB: data, then zeros
DISK_BYTES = 8 << 30  # what sysfs says; the file only grows to what is written
TIMEOUT = 60.0


@pytest.fixture
def live(tmp_path: Path, fresh_database_url: str | None) -> Iterator[LiveAppliance]:
    home = tmp_path / "home"
    stub_ramdisk(home)
    appliance = LiveAppliance(home, fresh_database_url, extra_env={
        "INGOT_BOOT__AGENT_HEARTBEAT_S": "0.2", "INGOT_BMC__VERIFY_POLL_S": "0.01"})
    appliance.start()
    try:
        yield appliance
    finally:
        appliance.stop()


class Machine:
    """A server whose power is this test: boot() starts the agent, kill() cuts the power."""

    def __init__(self, tmp_path: Path, mac: str, proxy: FaultyProxy) -> None:
        self.root, self.mac, self.proxy = tmp_path / "machine", mac, proxy
        self.log = tmp_path / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def boot(self) -> None:
        self.kill()
        with httpx.Client(base_url=self.proxy.url, timeout=10) as boot:
            token = boot_token(boot, self.mac)  # what the server's iPXE fetches
        config = self.root.with_name("agent.json")
        config.write_text(json.dumps({"url": self.proxy.url, "token": token, "root": str(self.root),
                                      "mac": self.mac, "disk_bytes": DISK_BYTES}))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.agent_machine", str(config)],
                                         cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    @property
    def disk(self) -> Path:
        return self.root / "dev" / "vda"


def wait_for(what: str, check: Any, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def task_done(live: LiveAppliance, uri: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        task: dict[str, Any] = live.api("GET", uri)
        return task if task["taskState"] not in ("New", "Starting", "Pending", "Running", "Stopping") else None
    return wait_for(uri, ended)  # type: ignore[no-any-return]


def provision_state(live: LiveAppliance, server: dict[str, Any], state: str) -> None:
    wait_for(f"{server['name']} in {state}", lambda: live.api("GET", server["uri"])["provisionState"] == state)


def deployment_plan(live: LiveAppliance, tmp_path: Path) -> str:
    raw = tmp_path / "golden.raw"
    raw.write_bytes(IMAGE)
    session = live.login()
    with live.client(session) as client, raw.open("rb") as f:
        r = client.post("/rest/golden-images", params={"name": "golden", "description": ""},
                        files={"file": ("golden.raw", f, "application/octet-stream")})
    assert r.status_code == 202, r.text
    image = task_done(live, r.headers["location"])
    assert image["taskState"] == "Completed", image["taskErrors"]
    build = live.api("POST", "/rest/build-plans", json={
        "name": "as is", "description": "", "oeBuildPlanType": "deploy", "buildStep": [],
        "customAttributes": [{"name": "Hostname", "type": "hostname", "value": "", "description": "",
                              "constraints": "{}"}]})
    plan = live.api("POST", "/rest/deployment-plans", json={
        "name": "golden as is", "description": "", "oeBuildPlanURI": build["uri"],
        "goldenImageURI": image["associatedResource"]["resourceUri"]})
    return f"/rest/os-deployment-plans/{plan['id']}"


def test_the_agent_resumes_a_cut_download_and_a_killed_appliance_resumes_the_deploy(
        live: LiveAppliance, tmp_path: Path) -> None:
    proxy = FaultyProxy(("127.0.0.1", live.http_port))
    added = live.api("POST", "/rest/server-hardware", json={"hostname": "rack9-u1.example", "username": "admin",
                                                            "password": "pw", "driver": "fake"})
    server = live.api("GET", task_done(live, added["uri"])["associatedResource"]["resourceUri"])
    machine = Machine(tmp_path, server["macAddresses"][0].lower(), proxy)
    try:
        # Inspection with the real agent.
        inspect = live.api("PUT", f"{server['uri']}/provisionState", json={"event": "inspect"})
        provision_state(live, server, "inspect-wait")
        machine.boot()
        assert task_done(live, inspect["uri"])["taskState"] == "Completed", machine.log.read_text()
        inventory = live.api("GET", server["uri"])["hardwareInventory"]
        assert [(d["name"], d["size_bytes"], d["serial"]) for d in inventory["disks"]] == [
            ("vda", DISK_BYTES, "test-disk-0")]
        assert [n["mac"] for n in inventory["nics"]] == [machine.mac]

        # A deploy whose download is cut after 3 MiB: resumed by Range, the disk equals the image.
        osdp = deployment_plan(live, tmp_path)
        create = live.api("POST", "/rest/server-profiles", json={
            "name": "sp-agent", "serverHardwareUri": server["uri"], "osDeploymentSettings": {
                "osDeploymentPlanUri": osdp, "osCustomAttributes": [{"name": "Hostname", "value": "agent01"}]}})
        provision_state(live, server, "deploy-wait")
        proxy.drop_once(b"/image", 3 << 20)
        machine.boot()  # the "power cycle" into the deploy ramdisk
        task = task_done(live, create["uri"])
        assert task["taskState"] == "Completed", (task["taskErrors"], machine.log.read_text())
        assert proxy.dropped == 1
        image_requests = [r for r in proxy.requests if "/image" in r]
        assert len(image_requests) == 2 and "Range: bytes=" in image_requests[1], proxy.requests
        resumed_at = int(image_requests[1].split("bytes=")[1].split("-")[0])
        assert 0 < resumed_at <= 3 << 20
        assert machine.disk.read_bytes()[:len(IMAGE)] == IMAGE
        assert "SHA-256 verified" in machine.log.read_text()

        # The appliance killed mid-deploy (a redeploy waiting for the agent), then restarted.
        profile_uri = task["associatedResource"]["resourceUri"]
        session = live.login()
        with live.client(session) as client:
            r = client.patch(profile_uri, json=[{"op": "replace", "path": "/osDeploymentSettings/reapplyState",
                                                 "value": "ApplyPending"}],
                             headers={"Content-Type": "application/json-patch+json"})
        assert r.status_code == 202, r.text
        redeploy = r.json()["uri"]
        provision_state(live, server, "deploy-wait")
        machine.kill()
        live.kill()
        live.start()
        proxy.upstream = ("127.0.0.1", live.http_port)  # the restarted appliance has new ports
        machine.disk.write_bytes(b"")  # the next write must really happen
        machine.boot()
        task = task_done(live, redeploy)
        assert task["taskState"] == "Completed", (task["taskErrors"], machine.log.read_text())
        assert live.api("GET", server["uri"])["provisionState"] == "deployed"
        assert machine.disk.read_bytes()[:len(IMAGE)] == IMAGE
        volumes = live.api("GET", "/rest/os-volumes")
        profile = live.api("GET", profile_uri)
        assert volumes["total"] == 1  # the redeploy's new volume; the old one went, nothing half-made is left
        assert volumes["members"][0]["uri"] == profile["osDeploymentSettings"]["osVolumeUri"]
    finally:
        machine.kill()
        proxy.close()
