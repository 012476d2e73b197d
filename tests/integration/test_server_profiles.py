"""Server profiles through the real API, task runner, image store and boot listener, on the fake BMC
driver, with this test playing the deploy agent over its HTTP API (the real agent on QEMU servers
is in tests/e2e). The deployment plan's build plan has no steps, so no guestfish runs here
(personalization is tested in test_personalize and the e2e).

Covers the deploy's phases and states, the image the agent fetches (whole and resumed by Range),
OneView's profile shape, redeploy on a changed value, delete releasing and erasing the server,
and the faults: a checksum mismatch, a delete mid-deploy, a restart of the runner mid-deploy,
and refused requests."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pykickstart.parser import KickstartParser
from pykickstart.version import RHEL9, makeVersion

from appliance.config import Settings
from appliance.context import AppContext
from appliance.drivers.power import fake
from appliance.drivers.types import BmcTarget
from appliance.services.golden_images import record_golden_image
from golden_images import qemu_img
from tests.support.agent_play import PlayedAgent, stub_ramdisk
from tests.support.runner import BackgroundRunner, wait_task
from web.boot import create_boot_app

PASSWORD = "Bmc-Secret-2203"
DISK = os.urandom(1 << 20) + bytes(3 << 20)  # a 4 MiB raw "golden image"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url, node_name="test-node",
                    tasks={"lease_ttl_s": 3, "poll_interval_s": 0.05},
                    bmc={"timeout_s": 0.5, "retries": 0, "verify_poll_s": 0.01, "verify_timeout_s": 2,
                         "sync_interval_s": 0})


@pytest.fixture(autouse=True)
def _fresh_fake_machines() -> Iterator[None]:
    fake.reset_machines()
    yield
    fake.reset_machines()


@pytest.fixture
def boot(ctx: AppContext) -> Iterator[TestClient]:
    stub_ramdisk(ctx.settings.home)
    with TestClient(create_boot_app(ctx), base_url="http://10.0.0.1:8080") as client:
        yield client


@pytest.fixture
def lab(api: TestClient, admin_headers: dict[str, str], ctx: AppContext, runner: BackgroundRunner,
        boot: TestClient, tmp_path: Path) -> dict[str, Any]:
    """A golden image, a deployment plan (no build steps, a Hostname attribute) and an available server."""
    raw = tmp_path / "golden.raw"
    raw.write_bytes(DISK)
    stored = ctx.images.ingest(raw)
    image_id = record_golden_image(ctx, stored, "golden-1", "", "test", None, [])
    plan = api.post("/rest/build-plans", headers=admin_headers, json={
        "name": "as-is", "description": "", "oeBuildPlanType": "deploy", "buildStep": [],
        "customAttributes": [{"name": "Hostname", "type": "hostname", "value": "", "description": "",
                              "constraints": "{}"}]}).json()
    deployment = api.post("/rest/deployment-plans", headers=admin_headers, json={
        "name": "golden as is", "description": "", "oeBuildPlanURI": plan["uri"],
        "goldenImageURI": f"/rest/golden-images/{image_id}"}).json()
    servers = []
    for host in ("rack3-u1.example", "rack3-u2.example"):
        r = api.post("/rest/server-hardware", headers=admin_headers,
                     json={"hostname": host, "username": "admin", "password": PASSWORD, "driver": "fake"})
        server = api.get(wait_task(api, admin_headers, r.json()["uri"])["associatedResource"]["resourceUri"],
                         headers=admin_headers).json()
        task_uri = api.put(f"{server['uri']}/provisionState", headers=admin_headers,
                           json={"event": "inspect"}).json()["uri"]
        wait_state(api, admin_headers, server["uri"], "inspect-wait")
        PlayedAgent(boot, server["macAddresses"][0].lower())
        assert wait_task(api, admin_headers, task_uri)["taskState"] == "Completed"
        servers.append(api.get(server["uri"], headers=admin_headers).json())
    return {"servers": servers, "osdp": f"/rest/os-deployment-plans/{deployment['id']}"}


def wait_state(api: TestClient, headers: dict[str, str], uri: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = api.get(uri, headers=headers).json()
        if body["provisionState"] == state:
            return body
        assert time.monotonic() < deadline, f"{body['name']}: still {body['provisionState']}, waiting for {state}"
        time.sleep(0.05)


def profile_body(lab: dict[str, Any], server: dict[str, Any], hostname: str, name: str = "sp1") -> dict[str, Any]:
    return {"type": "ServerProfileV12", "name": name, "serverHardwareUri": server["uri"],
            "serverHardwareTypeUri": "/rest/server-hardware-types/x", "enclosureGroupUri": None,
            "bootMode": {"manageMode": True, "mode": "UEFIOptimized", "pxeBootPolicy": "Auto"},
            "osDeploymentSettings": {"osDeploymentPlanUri": lab["osdp"], "osCustomAttributes": [
                {"name": "Hostname", "value": hostname, "type": "hostname"}]}}


def bmc(host: str) -> fake.FakeMachine:
    return fake.get_machine(BmcTarget("fake", host, 623, "admin", PASSWORD))


def deploy_as_agent(boot: TestClient, server: dict[str, Any], *, corrupt: bool = False) -> dict[str, Any]:
    """Boot, fetch the image, write it (report progress), report the outcome; returns the command."""
    command = PlayedAgent(boot, server["macAddresses"][0].lower()).write_image(corrupt=corrupt)
    assert command["params"]["size"] == len(DISK)
    assert command["image"] == DISK and hashlib.sha256(DISK).hexdigest() == command["params"]["sha256"]
    return command


def test_a_profile_deploys_its_server_in_phases(api: TestClient, admin_headers: dict[str, str],
                                               boot: TestClient, lab: dict[str, Any]) -> None:
    server = lab["servers"][0]
    r = api.post("/rest/server-profiles", headers=admin_headers, json=profile_body(lab, server, "node01"))
    assert r.status_code == 202, r.text
    task_uri = r.json()["uri"]
    wait_state(api, admin_headers, server["uri"], "deploy-wait")
    deploy_as_agent(boot, server)
    task = wait_task(api, admin_headers, task_uri)
    assert task["taskState"] == "Completed", task["taskErrors"]
    assert [(c["name"], c["taskState"], c["percentComplete"]) for c in task["childTasks"]] == [
        (name, "Completed", 100) for name in ("Create the OS volume", "Personalize", "Export the image",
                                              "Boot the deploy agent", "Write the image", "Boot the operating system")]
    profile = api.get(task["associatedResource"]["resourceUri"], headers=admin_headers).json()
    assert profile["state"] == "Normal" and profile["serverHardwareUri"] == server["uri"]
    settings = profile["osDeploymentSettings"]
    assert settings["osDeploymentPlanUri"] == lab["osdp"] and settings["osVolumeUri"].startswith("/rest/os-volumes/")
    assert settings["osCustomAttributes"] == [{"name": "Hostname", "value": "node01"}]
    volume = api.get(settings["osVolumeUri"], headers=admin_headers)
    assert volume.status_code == 200
    # What the profile holds cannot go from under it.
    plan_uri = lab["osdp"].replace("/rest/os-deployment-plans/", "/rest/deployment-plans/")
    used = api.get(f"{plan_uri}/usedby", headers=admin_headers).json()["serverProfiles"]
    assert used == [{"name": "sp1", "uri": profile["uri"]}]
    for uri in (plan_uri, settings["osVolumeUri"], server["uri"]):
        refused = api.delete(uri, headers=admin_headers)
        assert refused.status_code == 409 and "sp1" in refused.json()["message"], (uri, refused.text)
    deployed = api.get(server["uri"], headers=admin_headers).json()
    assert deployed["provisionState"] == "deployed" and deployed["powerState"] == "On"
    machine = bmc(deployed["mpHostInfo"]["mpHostName"])
    assert machine.commands[-2:] == ["boot disk", "power cycle"] and machine.boot.persistent

    # A changed value redeploys: a new volume replaces the old one.
    r = api.put(profile["uri"], headers=admin_headers,
                json={**profile, "osDeploymentSettings": {**settings, "osCustomAttributes": [
                    {"name": "Hostname", "value": "node01-b"}]}})
    assert r.status_code == 202, r.text
    wait_state(api, admin_headers, server["uri"], "deploy-wait")
    deploy_as_agent(boot, server)
    assert wait_task(api, admin_headers, r.json()["uri"])["taskState"] == "Completed"
    again = api.get(profile["uri"], headers=admin_headers).json()
    assert again["osDeploymentSettings"]["osVolumeUri"] != settings["osVolumeUri"]
    assert api.get(settings["osVolumeUri"], headers=admin_headers).status_code == 404
    assert api.get("/rest/os-volumes", headers=admin_headers).json()["total"] == 1

    # Delete releases the server: power off, erase by the agent, available; the volume goes too.
    r = api.delete(profile["uri"], headers=admin_headers)
    assert r.status_code == 202 and r.json()["name"] == "Delete"
    wait_state(api, admin_headers, server["uri"], "clean-wait")
    agent = PlayedAgent(boot, server["macAddresses"][0].lower())
    erase = agent.next_command()
    assert erase["name"] == "erase"
    agent.report(erase, state="succeeded", result={"disks": ["sda"]})
    assert wait_task(api, admin_headers, r.json()["uri"])["taskState"] == "Completed"
    assert api.get(profile["uri"], headers=admin_headers).status_code == 404
    released = api.get(server["uri"], headers=admin_headers).json()
    assert released["provisionState"] == "available" and released["powerState"] == "Off"
    assert api.get("/rest/os-volumes", headers=admin_headers).json()["total"] == 0


def test_a_checksum_mismatch_fails_the_deploy_powers_off_and_alerts(api: TestClient, admin_headers: dict[str, str],
                                                                   boot: TestClient, lab: dict[str, Any]) -> None:
    server = lab["servers"][1]
    r = api.post("/rest/server-profiles", headers=admin_headers, json=profile_body(lab, server, "node02"))
    wait_state(api, admin_headers, server["uri"], "deploy-wait")
    deploy_as_agent(boot, server, corrupt=True)
    task = wait_task(api, admin_headers, r.json()["uri"])
    assert task["taskState"] == "Error" and "SHA-256 mismatch" in task["taskErrors"][0]["message"]
    failed = api.get(server["uri"], headers=admin_headers).json()
    assert failed["provisionState"] == "deploy-failed" and "SHA-256 mismatch" in failed["lastError"]
    assert failed["powerState"] == "Off" and bmc(failed["mpHostInfo"]["mpHostName"]).commands[-1] == "power off"
    profile = api.get(task["associatedResource"]["resourceUri"], headers=admin_headers).json()
    assert profile["state"] == "Error" and profile["status"] == "Critical"
    alerts = api.get("/rest/alerts", headers=admin_headers).json()["members"]
    assert any(a["associatedResource"]["resourceUri"] == server["uri"] and a["alertState"] == "Active"
               and "SHA-256 mismatch" in a["description"] for a in alerts)


def test_a_bmc_that_stops_answering_mid_deploy_is_tried_again_and_the_deploy_finishes(
        api: TestClient, admin_headers: dict[str, str], boot: TestClient, lab: dict[str, Any],
        ctx: AppContext) -> None:
    ctx.settings.provisioning.phase_retry_backoff_s = 1.5
    server = lab["servers"][0]
    r = api.post("/rest/server-profiles", headers=admin_headers, json=profile_body(lab, server, "node03"))
    wait_state(api, admin_headers, server["uri"], "deploy-wait")
    machine = bmc(server["mpHostInfo"]["mpHostName"])
    machine.dead = True  # the BMC reboots while the agent writes the image
    deploy_as_agent(boot, server)
    deadline = time.monotonic() + 30
    while True:
        task = api.get(r.json()["uri"], headers=admin_headers).json()
        booting = [c for c in task["childTasks"] if c["name"] == "Boot the operating system"]
        if booting and "Trying again in 1.5 s (1 of 2)" in booting[0]["taskStatus"]:
            break
        assert time.monotonic() < deadline and task["taskState"] == "Running", task
        time.sleep(0.05)
    assert "did not answer" in booting[0]["taskStatus"]
    machine.dead = False  # back before the retry
    task = wait_task(api, admin_headers, r.json()["uri"])
    assert task["taskState"] == "Completed", task["taskErrors"]
    assert api.get(server["uri"], headers=admin_headers).json()["provisionState"] == "deployed"
    assert machine.commands[-2:] == ["boot disk", "power cycle"]


def test_a_bmc_that_refuses_the_password_mid_deploy_fails_it_without_retrying(
        api: TestClient, admin_headers: dict[str, str], boot: TestClient, lab: dict[str, Any],
        ctx: AppContext) -> None:
    ctx.settings.provisioning.phase_retry_backoff_s = 30  # a retry would outlast the test's patience
    server = lab["servers"][1]
    r = api.post("/rest/server-profiles", headers=admin_headers, json=profile_body(lab, server, "node04"))
    wait_state(api, admin_headers, server["uri"], "deploy-wait")
    machine = bmc(server["mpHostInfo"]["mpHostName"])
    machine.password = "changed-on-the-bmc"
    deploy_as_agent(boot, server)
    task = wait_task(api, admin_headers, r.json()["uri"])
    assert task["taskState"] == "Error" and "rejected the credentials" in task["taskErrors"][0]["message"]
    booting = next(c for c in task["childTasks"] if c["name"] == "Boot the operating system")
    assert "Trying again" not in booting["taskStatus"]
    assert api.get(server["uri"], headers=admin_headers).json()["provisionState"] == "deploy-failed"


def test_deleting_a_profile_mid_deploy_aborts_cleanly(api: TestClient, admin_headers: dict[str, str],
                                                      boot: TestClient, lab: dict[str, Any]) -> None:
    server = lab["servers"][0]
    r = api.post("/rest/server-profiles", headers=admin_headers, json=profile_body(lab, server, "node03"))
    apply_uri = r.json()["uri"]
    wait_state(api, admin_headers, server["uri"], "deploy-wait")
    profile_uri = api.get(apply_uri, headers=admin_headers).json()["associatedResource"]["resourceUri"]
    delete = api.delete(profile_uri, headers=admin_headers)
    assert delete.status_code == 202, delete.text
    wait_state(api, admin_headers, server["uri"], "clean-wait")
    agent = PlayedAgent(boot, server["macAddresses"][0].lower())
    erase = agent.next_command()
    assert erase["name"] == "erase"  # the write_image that was queued never reached an agent
    agent.report(erase, state="failed", error="erasing /dev/sda failed: Input/output error")
    failed = wait_task(api, admin_headers, delete.json()["uri"])
    assert failed["taskState"] == "Error" and "Input/output error" in failed["taskErrors"][0]["message"]
    assert api.get(server["uri"], headers=admin_headers).json()["provisionState"] == "clean-failed"
    assert wait_task(api, admin_headers, apply_uri)["taskState"] in ("Terminated", "Error")
    delete = api.delete(profile_uri, headers=admin_headers)  # a failed delete may be asked again
    assert delete.status_code == 202, delete.text
    wait_state(api, admin_headers, server["uri"], "clean-wait")
    agent = PlayedAgent(boot, server["macAddresses"][0].lower())
    erase = agent.next_command()
    agent.report(erase, state="succeeded", result={"disks": ["sda"]})
    assert wait_task(api, admin_headers, delete.json()["uri"])["taskState"] == "Completed"
    assert api.get(server["uri"], headers=admin_headers).json()["provisionState"] == "available"
    assert api.get("/rest/os-volumes", headers=admin_headers).json()["total"] == 0
    assert api.get("/rest/server-profiles", headers=admin_headers).json()["total"] == 0


def test_a_restarted_runner_resumes_the_deploy(api: TestClient, admin_headers: dict[str, str], ctx: AppContext,
                                               boot: TestClient, lab: dict[str, Any], runner: BackgroundRunner
                                               ) -> None:
    server = lab["servers"][1]
    r = api.post("/rest/server-profiles", headers=admin_headers, json=profile_body(lab, server, "node04"))
    wait_state(api, admin_headers, server["uri"], "deploy-wait")
    runner.stop()  # the appliance dies while the server boots into the agent
    ctx.__dict__.pop("bmcs", None)  # a new process builds a new BMC driver pool
    second = BackgroundRunner(ctx)
    second.start()
    try:
        deploy_as_agent(boot, server)
        task = wait_task(api, admin_headers, r.json()["uri"])
    finally:
        second.stop()
        runner.start = lambda: None  # type: ignore[method-assign]
        runner.stop = lambda: None  # type: ignore[method-assign]  # the fixture must not stop it twice
    assert task["taskState"] == "Completed", task["taskErrors"]
    assert api.get(server["uri"], headers=admin_headers).json()["provisionState"] == "deployed"
    assert api.get("/rest/os-volumes", headers=admin_headers).json()["total"] == 1
    assert bmc(server["mpHostInfo"]["mpHostName"]).commands.count("power on") == 2  # inspect, deploy: not again


def test_refused_profiles(api: TestClient, admin_headers: dict[str, str], boot: TestClient,
                          lab: dict[str, Any]) -> None:
    server = lab["servers"][0]
    for body, status, words in [
        ({**profile_body(lab, server, "x"), "serverHardwareUri": "/rest/server-hardware/nope"}, 400, "no server"),
        ({**profile_body(lab, server, "x"), "osDeploymentSettings": {
            "osDeploymentPlanUri": "/rest/os-deployment-plans/nope", "osCustomAttributes": []}}, 400, "does not exist"),
        (profile_body(lab, server, "not a host name!"), 400, "Hostname"),
        ({"name": ""}, 400, "name"),
        ({**profile_body(lab, server, "x"), "osDeploymentSettings": {"osCustomAttributes": "Hostname=x"}}, 400,
         "osCustomAttributes"),
    ]:
        r = api.post("/rest/server-profiles", headers=admin_headers, json=body)
        assert r.status_code == status and words in r.text, (body, r.text)
    plan = api.get(lab["osdp"].replace("/rest/os-deployment-plans/", "/rest/deployment-plans/"),
                   headers=admin_headers).json()
    bare = api.post("/rest/deployment-plans", headers=admin_headers, json={
        "name": "no image", "description": "", "oeBuildPlanURI": plan["oeBuildPlanURI"]})
    assert bare.status_code in (201, 202), bare.text
    r = api.post("/rest/server-profiles", headers=admin_headers, json={
        **profile_body(lab, server, "x"), "osDeploymentSettings": {
            "osDeploymentPlanUri": bare.json()["uri"], "osCustomAttributes": [{"name": "Hostname", "value": "x"}]}})
    assert r.status_code == 400 and "has neither a golden image to deploy nor an installer" in r.text, r.text
    assert api.get(server["uri"], headers=admin_headers).json()["provisionState"] == "available"
    managed = api.put(f"{server['uri']}/provisionState", headers=admin_headers, json={"event": "manage"})
    assert managed.status_code == 200
    r = api.post("/rest/server-profiles", headers=admin_headers, json=profile_body(lab, server, "x"))
    assert r.status_code == 409 and r.json()["errorCode"] == "INVALID_PROVISION_STATE"
    assert api.get("/rest/server-profiles", headers=admin_headers).json()["total"] == 0
    assert api.get(server["uri"], headers=admin_headers).json()["provisionState"] == "manageable"


def deployed(api: TestClient, headers: dict[str, str], boot: TestClient, lab: dict[str, Any],
             server: dict[str, Any], hostname: str) -> None:
    r = api.post("/rest/server-profiles", headers=headers, json=profile_body(lab, server, hostname, f"sp-{hostname}"))
    wait_state(api, headers, server["uri"], "deploy-wait")
    deploy_as_agent(boot, server)
    assert wait_task(api, headers, r.json()["uri"])["taskState"] == "Completed"


def capture(api: TestClient, headers: dict[str, str], server: dict[str, Any], name: str) -> Any:
    return api.post("/rest/golden-images", headers=headers, json={
        "type": "GoldenImage", "name": name, "imageCapture": True, "serverHardwareUri": server["uri"]})


def test_capture_streams_a_running_servers_disk_into_a_golden_image(
        api: TestClient, admin_headers: dict[str, str], ctx: AppContext, boot: TestClient, lab: dict[str, Any],
        tmp_path: Path) -> None:
    server = lab["servers"][0]
    deployed(api, admin_headers, boot, lab, server, "node05")
    r = capture(api, admin_headers, server, "captured-node05")
    assert r.status_code == 202, r.text
    assert api.get(server["uri"], headers=admin_headers).json()["provisionState"] in ("capturing", "capture-wait")
    wait_state(api, admin_headers, server["uri"], "capture-wait")
    written = bytearray(DISK)  # what the server's disk holds now: the deployed image and a file written since
    written[(2 << 20):(2 << 20) + 16] = b"written-on-node5"
    PlayedAgent(boot, server["macAddresses"][0].lower()).read_disk(bytes(written), cut=True)
    task = wait_task(api, admin_headers, r.json()["uri"])
    assert task["taskState"] == "Completed", task["taskErrors"]
    assert [(c["name"], c["taskState"]) for c in task["childTasks"]] == [
        (name, "Completed") for name in ("Boot the deploy agent", "Read the disk", "Boot the operating system")]
    back = api.get(server["uri"], headers=admin_headers).json()
    assert back["provisionState"] == "deployed" and back["powerState"] == "On"
    assert bmc(back["mpHostInfo"]["mpHostName"]).commands[-2:] == ["boot disk", "power cycle"]
    image = api.get(task["associatedResource"]["resourceUri"], headers=admin_headers).json()
    assert image["name"] == "captured-node05" and image["imageCapture"] is True
    raw = tmp_path / "captured.raw"
    qemu_img.convert(ctx.images.golden_path(image["checkSum"]), raw, src_format="qcow2", dst_format="raw")
    assert raw.read_bytes() == bytes(written)
    log = api.get(f"/rest/golden-images/archive/{image['id']}", headers=admin_headers).text
    assert "capture of the disk of server" in log and f"sha256 {hashlib.sha256(written).hexdigest()}" in log
    assert not [p.name for p in ctx.images.incoming_dir.iterdir() if p.name.startswith("capture-")]


def test_a_capture_whose_disk_arrives_damaged_fails_and_boots_the_server_back(
        api: TestClient, admin_headers: dict[str, str], ctx: AppContext, boot: TestClient,
        lab: dict[str, Any]) -> None:
    server = lab["servers"][1]
    deployed(api, admin_headers, boot, lab, server, "node06")
    r = capture(api, admin_headers, server, "captured-node06")
    wait_state(api, admin_headers, server["uri"], "capture-wait")
    agent = PlayedAgent(boot, server["macAddresses"][0].lower())
    command = agent.read_disk(DISK, corrupt=True)
    task = wait_task(api, admin_headers, r.json()["uri"])
    assert task["taskState"] == "Error" and "the disk arrived with SHA-256" in task["taskErrors"][0]["message"]
    failed = api.get(server["uri"], headers=admin_headers).json()
    assert failed["provisionState"] == "capture-failed" and "SHA-256" in failed["lastError"]
    assert bmc(failed["mpHostInfo"]["mpHostName"]).commands[-2:] == ["boot disk", "power cycle"]
    alerts = api.get("/rest/alerts", headers=admin_headers).json()["members"]
    assert any(a["associatedResource"]["resourceUri"] == server["uri"] and a["alertState"] == "Active" for a in alerts)
    assert api.get("/rest/golden-images", headers=admin_headers).json()["total"] == 1  # the deployed one only
    assert not [p.name for p in ctx.images.incoming_dir.iterdir() if p.name.startswith("capture-")]
    # The command has ended: the appliance takes no more of its disk.
    late = boot.put(f"/agent/v1/nodes/{agent.node}/disk/{command['id']}", content=b"x",
                    headers={**agent.headers, "Content-Range": "bytes 0-0/1"})
    assert late.status_code == 409, late.text


def test_refused_captures_and_disk_uploads(api: TestClient, admin_headers: dict[str, str], boot: TestClient,
                                          lab: dict[str, Any]) -> None:
    server = lab["servers"][0]  # available: nothing deployed to capture
    r = capture(api, admin_headers, server, "nothing")
    assert r.status_code == 409 and r.json()["errorCode"] == "INVALID_PROVISION_STATE", r.text
    r = api.post("/rest/golden-images", headers=admin_headers, json={
        "name": "both", "imageCapture": True, "serverHardwareUri": server["uri"], "osVolumeURI": "/rest/os-volumes/x"})
    assert r.status_code == 400 and "not both" in r.text
    r = capture(api, admin_headers, {"uri": "/rest/server-hardware/nope"}, "nowhere")
    assert r.status_code == 404, r.text
    agent = PlayedAgent(boot, server["macAddresses"][0].lower())
    url = f"/agent/v1/nodes/{agent.node}/disk/00000000-0000-0000-0000-000000000000"
    for headers, status in [
        ({"Content-Range": "bytes 0-0/1"}, 404),  # no such read_disk command
        ({"Content-Range": "bytes 5-1/10"}, 400),
        ({"Content-Range": "0-1/10"}, 400),
        ({"Content-Range": f"bytes 0-0/{1 << 60}"}, 413),
    ]:
        r = boot.put(url, content=b"x", headers={**agent.headers, **headers})
        assert r.status_code == status, (headers, r.text)
    r = boot.put(url, content=b"x", headers={"X-Ingot-Agent-Token": "forged", "Content-Range": "bytes 0-0/1"})
    assert r.status_code == 401, r.text
    assert boot.get("/agent/v1/nodes/x/disk/../../etc", headers=agent.headers).status_code == 404


def test_deploys_build_their_images_within_the_parallel_bound(api: TestClient, admin_headers: dict[str, str],
                                                              ctx: AppContext, boot: TestClient,
                                                              lab: dict[str, Any]) -> None:
    ctx.__dict__["build_slots"] = threading.BoundedSemaphore(1)  # provisioning.parallel_builds = 1
    started = [api.post("/rest/server-profiles", headers=admin_headers,
                        json=profile_body(lab, server, f"node1{n}", f"sp-bound-{n}")).json()["uri"]
               for n, server in enumerate(lab["servers"])]
    for server in lab["servers"]:  # the agent's part is not bounded: both wait for their agents at once
        wait_state(api, admin_headers, server["uri"], "deploy-wait")
    for server in lab["servers"]:
        deploy_as_agent(boot, server)
    tasks = [wait_task(api, admin_headers, uri) for uri in started]
    assert [t["taskState"] for t in tasks] == ["Completed", "Completed"], [t["taskErrors"] for t in tasks]

    def phase(task: dict[str, Any], name: str) -> dict[str, Any]:
        uri = next(c["uri"] for c in task["childTasks"] if c["name"] == name)
        body: dict[str, Any] = api.get(uri, headers=admin_headers).json()
        return body

    builds = sorted((phase(t, "Create the OS volume")["startTime"], phase(t, "Export the image")["completedTime"])
                    for t in tasks)
    assert builds[0][1] <= builds[1][0], builds  # one build after the other, never both at once


# --- installer deploys ----------------------------------------------------------------------------
INSTALLER_KERNEL = b"installer kernel\n"
NIC_CONSTRAINTS = ('{"ipv4static": true, "ipv4dhcp": true, "ipv4disable": false, "parameters": '
                   '["dns1", "dns2", "gateway", "ipaddress", "mac", "netmask", "vlanid"]}')
ROOT_HASH = "$6$ingotsalt$" + "a" * 86


def installer_plan(api: TestClient, headers: dict[str, str], ctx: AppContext, installer: dict[str, Any],
                   name: str = "rhel 9 kickstart") -> str:
    """A build plan with the answer files' vocabulary, a deployment plan running ``installer``, and the
    installer media in place; returns the plan's OneView URI."""
    media = ctx.settings.home / "boot" / "installers" / installer["media"]
    media.mkdir(parents=True, exist_ok=True)
    (media / "vmlinuz").write_bytes(INSTALLER_KERNEL)
    (media / "initrd.img").write_bytes(b"installer initrd\n")
    build = api.post("/rest/build-plans", headers=headers, json={
        "name": f"{name} attributes", "description": "", "oeBuildPlanType": "deploy", "buildStep": [],
        "customAttributes": [
            {"name": "Hostname", "type": "hostname", "value": "", "description": "", "constraints": "{}"},
            {"name": "RootPassword", "type": "string", "value": ROOT_HASH, "description": "", "constraints": "{}"},
            {"name": "NIC1", "type": "nic", "value": "", "description": "", "constraints": NIC_CONSTRAINTS}]})
    assert build.status_code in (201, 202), build.text
    plan = api.post("/rest/deployment-plans", headers=headers, json={
        "name": name, "description": "", "oeBuildPlanURI": build.json()["uri"], "installer": installer})
    assert plan.status_code == 201, plan.text
    assert plan.json()["installer"]["media"] == installer["media"] and plan.json()["goldenImageURI"] == ""
    return f"/rest/os-deployment-plans/{plan.json()['id']}"


def installer_profile(osdp: str, server: dict[str, Any], hostname: str, address: str) -> dict[str, Any]:
    """OneView's shape: the NIC flattened into sub-field attributes, no MAC (the server's is used)."""
    return {"type": "ServerProfileV12", "name": f"sp-{hostname}", "serverHardwareUri": server["uri"],
            "osDeploymentSettings": {"osDeploymentPlanUri": osdp, "osCustomAttributes": [
                {"name": "Hostname", "value": hostname}, {"name": "NIC1.dhcp", "value": False},
                {"name": "NIC1.ipaddress", "value": address}, {"name": "NIC1.netmask", "value": "255.255.255.0"},
                {"name": "NIC1.gateway", "value": "10.0.0.1"}, {"name": "NIC1.dns1", "value": "10.0.0.2"}]}}


def start_installer_deploy(api: TestClient, headers: dict[str, str], boot: TestClient, osdp: str,
                           server: dict[str, Any], hostname: str, address: str) -> tuple[str, str, str]:
    """Create the profile, wait until the server boots its installer; returns the apply task's URI, the
    server's iPXE script then, and the path of the answer files in its kernel arguments."""
    r = api.post("/rest/server-profiles", headers=headers, json=installer_profile(osdp, server, hostname, address))
    assert r.status_code == 202, r.text
    wait_state(api, headers, server["uri"], "deploy-wait")
    script = boot.get(f"/ipxe/{server['macAddresses'][0].lower()}/boot.ipxe").text
    found = re.search(r"(?:inst\.ks|url|s)=http://10\.0\.0\.1:8080(/installer/[^/\s]+/)", script)
    assert found, script
    return r.json()["uri"], script, found.group(1)


def call_back(boot: TestClient, answer: str, event: str) -> Any:
    """What the answer file's callback line for ``event`` sends: its URL, bearer token and body."""
    token = re.search(r"Authorization: Bearer ([A-Za-z0-9_-]+)", answer)
    url = re.search(r"(http://10\.0\.0\.1:8080/installer/events)", answer)
    assert token and url and f'{{"event": "{event}"}}' in answer.replace('\\"', '"'), answer
    return boot.post(url.group(1).removeprefix("http://10.0.0.1:8080"), json={"event": event},
                     headers={"Authorization": f"Bearer {token.group(1)}"})


def child(task: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in task["childTasks"] if c["name"] == name)


def test_an_installer_deploy_boots_the_installer_and_follows_its_callbacks(
        api: TestClient, admin_headers: dict[str, str], boot: TestClient, lab: dict[str, Any],
        ctx: AppContext) -> None:
    osdp = installer_plan(api, admin_headers, ctx, {
        "kind": "kickstart", "os": "rhel", "version": "9", "media": "rhel-9.4",
        "kernelArgs": "inst.repo=http://mirror.example/rhel/9.4/BaseOS/x86_64/os/ ip=dhcp"})
    server = lab["servers"][0]
    mac = server["macAddresses"][0].lower()
    task_uri, script, path = start_installer_deploy(api, admin_headers, boot, osdp, server, "node-7", "10.0.0.27")
    machine = bmc(server["mpHostInfo"]["mpHostName"])
    assert machine.power == "On" and machine.boot.device == "pxe" and not machine.boot.persistent

    assert "kernel http://10.0.0.1:8080/boot/installers/rhel-9.4/vmlinuz initrd=initrd.img " in script
    assert "initrd --name initrd.img http://10.0.0.1:8080/boot/installers/rhel-9.4/initrd.img" in script
    assert " inst.repo=http://mirror.example/rhel/9.4/BaseOS/x86_64/os/ ip=dhcp inst.ks=" in script
    assert boot.get("/boot/installers/rhel-9.4/vmlinuz").content == INSTALLER_KERNEL
    kickstart = boot.get(f"{path}ks.cfg")
    assert kickstart.status_code == 200, kickstart.text
    parser = KickstartParser(makeVersion(RHEL9))
    parser.readKickstartFromString(kickstart.text)
    network = parser.handler.network.network
    assert parser.handler.network.hostname == "node-7" and parser.handler.rootpw.password == ROOT_HASH
    assert [(n.device, n.bootProto, n.ip, n.netmask, n.gateway, n.nameserver) for n in network if n.device] == [
        (mac, "static", "10.0.0.27", "255.255.255.0", "10.0.0.1", "10.0.0.2")]
    assert boot.get(f"{path}preseed.cfg").status_code == 404  # a kickstart deploy has one answer file

    assert call_back(boot, kickstart.text, "start").status_code == 200
    task = api.get(task_uri, headers=admin_headers).json()
    deadline = time.monotonic() + 30
    while "The installer is running" not in child(task, "Install the operating system")["taskStatus"]:
        assert time.monotonic() < deadline, task
        time.sleep(0.1)
        task = api.get(task_uri, headers=admin_headers).json()
    assert call_back(boot, kickstart.text, "success").status_code == 200
    task = wait_task(api, admin_headers, task_uri)
    assert task["taskState"] == "Completed", task["taskErrors"]
    assert [(c["name"], c["taskState"]) for c in task["childTasks"]] == [
        (name, "Completed") for name in ("Render the answer file", "Boot the installer",
                                         "Install the operating system", "Boot the operating system")]
    deployed = api.get(server["uri"], headers=admin_headers).json()
    assert deployed["provisionState"] == "deployed"
    assert machine.boot.device == "disk" and machine.boot.persistent and machine.commands[-1] == "boot disk"
    profile = api.get(task["associatedResource"]["resourceUri"], headers=admin_headers).json()
    assert profile["state"] == "Normal" and not profile["osDeploymentSettings"].get("osVolumeUri")
    # The deploy has ended, and its token with it; the server's script is no longer the installer's.
    assert boot.get(f"{path}ks.cfg").status_code == 401
    assert call_back(boot, kickstart.text, "failure").status_code == 401
    assert "installers" not in boot.get(f"/ipxe/{mac}/boot.ipxe").text
    details = [e["detail"] for e in ctx.boot_events.take()]  # the boot services' runtime writes these
    assert any("answer file ks.cfg for" in d for d in details) and any("installer success on" in d for d in details)


def test_an_installer_reporting_failure_fails_the_deploy_powers_off_and_alerts(
        api: TestClient, admin_headers: dict[str, str], boot: TestClient, lab: dict[str, Any],
        ctx: AppContext) -> None:
    osdp = installer_plan(api, admin_headers, ctx, {"kind": "autoinstall", "os": "ubuntu", "media": "noble"},
                          "ubuntu autoinstall")
    server = lab["servers"][1]
    task_uri, script, path = start_installer_deploy(api, admin_headers, boot, osdp, server, "node-8", "10.0.0.28")
    assert f" autoinstall ds=nocloud-net;s=http://10.0.0.1:8080{path}\n" in script
    user_data = boot.get(f"{path}user-data").text
    assert boot.get(f"{path}meta-data").status_code == 200 and "node-8" in user_data
    assert boot.get(f"{path}vendor-data").status_code == 404
    # A second outcome must agree with the first; a bad event is refused.
    assert boot.post("/installer/events", json={"event": "done"},
                     headers={"Authorization": "Bearer " + re.findall(r"Bearer ([A-Za-z0-9_-]+)", user_data)[0]}
                     ).status_code == 400
    assert call_back(boot, user_data, "failure").status_code == 200
    assert call_back(boot, user_data, "success").status_code == 409
    task = wait_task(api, admin_headers, task_uri)
    assert task["taskState"] == "Error" and "the installer reported failure" in task["taskErrors"][0]["message"]
    failed = api.get(server["uri"], headers=admin_headers).json()
    assert failed["provisionState"] == "deploy-failed" and "the installer reported failure" in failed["lastError"]
    assert failed["powerState"] == "Off"
    alerts = api.get("/rest/alerts", headers=admin_headers).json()["members"]
    assert any(a["associatedResource"]["resourceUri"] == server["uri"] and a["alertState"] == "Active"
               and "installer reported failure" in a["description"] for a in alerts)
    assert boot.get(f"{path}user-data").status_code == 401


def test_a_preseed_deploy_is_called_back_by_plain_gets(api: TestClient, admin_headers: dict[str, str],
                                                       boot: TestClient, lab: dict[str, Any], ctx: AppContext) -> None:
    """debian-installer's busybox wget can only GET: the preseed's callbacks are GETs with the token in the path."""
    osdp = installer_plan(api, admin_headers, ctx, {"kind": "preseed", "os": "debian", "version": "12",
                                                    "media": "bookworm"}, "debian 12 preseed")
    task_uri, _, path = start_installer_deploy(api, admin_headers, boot, osdp, lab["servers"][1], "node-6",
                                               "10.0.0.26")
    preseed = boot.get(f"{path}preseed.cfg").text
    commands = {line.split(" ", 3)[1]: shlex.split(line.split(" ", 3)[3]) for line in preseed.splitlines()
                if line.startswith("d-i preseed/")}
    start = commands["preseed/early_command"]
    assert start[:4] == ["wget", "-q", "-O", "/dev/null"] and start[4].endswith("/start")
    assert boot.get(start[4].removeprefix("http://10.0.0.1:8080")).json() == {"status": "recorded", "event": "start"}
    success = next(arg for arg in commands["preseed/late_command"] if arg.endswith("/success"))
    assert boot.get(success.removeprefix("http://10.0.0.1:8080")).status_code == 200
    task = wait_task(api, admin_headers, task_uri)
    assert task["taskState"] == "Completed", task["taskErrors"]
    assert boot.get(success.removeprefix("http://10.0.0.1:8080")).status_code == 401  # the deploy has ended
    assert boot.get("/installer/events/guessed/start").status_code == 401


def test_an_installer_that_never_calls_back_times_out_fails_and_alerts(
        api: TestClient, admin_headers: dict[str, str], boot: TestClient, lab: dict[str, Any],
        ctx: AppContext) -> None:
    ctx.settings.provisioning.deploy_wait_s = 2
    osdp = installer_plan(api, admin_headers, ctx, {"kind": "preseed", "os": "debian", "media": "bookworm"},
                          "debian preseed")
    server = lab["servers"][0]
    task_uri, script, path = start_installer_deploy(api, admin_headers, boot, osdp, server, "node-9", "10.0.0.29")
    assert f" auto=true priority=critical url=http://10.0.0.1:8080{path}preseed.cfg\n" in script
    task = wait_task(api, admin_headers, task_uri)  # the installer fetched nothing and said nothing
    assert task["taskState"] == "Error" and "Timed out in deploy-wait" in task["taskErrors"][0]["message"]
    failed = api.get(server["uri"], headers=admin_headers).json()
    assert failed["provisionState"] == "deploy-failed" and failed["powerState"] == "Off"
    alerts = api.get("/rest/alerts", headers=admin_headers).json()["members"]
    assert any(a["associatedResource"]["resourceUri"] == server["uri"] and a["alertState"] == "Active"
               and "Timed out in deploy-wait" in a["description"] for a in alerts)
    profile = api.get(task["associatedResource"]["resourceUri"], headers=admin_headers).json()
    assert profile["state"] == "Error" and "Timed out" in profile["stateReason"]


def test_refused_installer_plans_and_requests(api: TestClient, admin_headers: dict[str, str], boot: TestClient,
                                              lab: dict[str, Any], ctx: AppContext) -> None:
    build = api.post("/rest/build-plans", headers=admin_headers, json={
        "name": "vocabulary", "description": "", "oeBuildPlanType": "deploy", "buildStep": [],
        "customAttributes": []}).json()
    base = {"name": "bad", "description": "", "oeBuildPlanURI": build["uri"]}
    golden = api.get(lab["osdp"].replace("/rest/os-deployment-plans/", "/rest/deployment-plans/"),
                     headers=admin_headers).json()["goldenImageURI"]
    for installer, field, words in [
        ({"kind": "autoyast", "media": "x"}, "installer.kind", "unknown kind"),
        ({"kind": "unattend", "os": "windows", "version": "2022", "media": "x"}, "installer.kind", "wimboot"),
        ({"kind": "kickstart", "os": "debian", "media": "x"}, "installer.os", "no templates for os"),
        ({"kind": "kickstart", "media": "../../etc"}, "installer.media", "directory name"),
        ({"kind": "kickstart", "media": "x", "kernelArgs": "inst.ks=${evil}"}, "installer.kernelArgs", "iPXE"),
        ({"kind": "kickstart", "media": "x", "kernelArgs": 'a="b c"'}, "installer.kernelArgs", "iPXE"),
        ({"kind": "kickstart"}, "installer.media", "is required"),
        ("kickstart", "installer.kind", "must be an object"),
    ]:
        r = api.post("/rest/deployment-plans", headers=admin_headers, json={**base, "installer": installer})
        assert r.status_code == 400 and words in r.text, (installer, r.text)
        assert [e["errorSource"] for e in r.json()["nestedErrors"]] == [field], r.text
    both = api.post("/rest/deployment-plans", headers=admin_headers, json={
        **base, "goldenImageURI": golden, "installer": {"kind": "kickstart", "media": "x"}})
    assert both.status_code == 400 and "not both" in both.text
    assert api.get("/rest/deployment-plans?count=100", headers=admin_headers).json()["total"] == 1

    # The boot listener gives nothing to a guessed token, a traversal or an unknown media file.
    for path in ("/installer/not-a-token/ks.cfg", "/installer/x/../../etc/passwd"):
        assert boot.get(path).status_code in (401, 404), path
    for path in ("/boot/installers/%2e%2e/ramdisk/vmlinuz", "/boot/installers/x/%2e%2e%2f%2e%2e%2fetc/passwd",
                 "/boot/installers/x/ks.cfg", "/boot/installers/.hidden/vmlinuz"):
        assert boot.get(path).status_code == 404, path
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer guessed"}):
        assert boot.post("/installer/events", json={"event": "success"}, headers=headers).status_code == 401
    assert boot.post("/installer/events", content=b"x" * (2 << 20),
                     headers={"Authorization": "Bearer guessed"}).status_code in (400, 401)
