"""Inspection through the real API, task runner and boot listener on the fake BMC driver; this test
plays the agent over its HTTP API (the real agent in the emulated rack is tests/e2e/test_rack.py).
Covers the provision states on the way, the BMC commands, an abort, a TTL expiry, a restart of
the task runner mid-wait, and refused events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appliance.config import Settings
from appliance.context import AppContext
from appliance.drivers.power import fake
from appliance.drivers.types import BmcTarget
from tests.support.agent_play import PlayedAgent, stub_ramdisk
from tests.support.runner import BackgroundRunner, wait_task
from web.boot import create_boot_app

PASSWORD = "Bmc-Secret-0815"
INVENTORY = {"cpu": {"model": "Fake CPU", "count": 4, "architecture": "x86_64"}, "memory_bytes": 2000 << 20,
             "physical_memory_bytes": 2048 << 20,
             "disks": [{"name": "sda", "size_bytes": 480 << 30, "rotational": False, "removable": False,
                        "model": "SSD", "vendor": "ATA", "serial": "S3Z1NB0K", "wwn": "0x5002538e40a1b2c3"}],
             "nics": [], "system": {"sys_vendor": "Ingot", "product_name": "Fake Server 1000"}}


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


def add(api: TestClient, headers: dict[str, str], host: str) -> dict[str, Any]:
    r = api.post("/rest/server-hardware", headers=headers,
                 json={"hostname": host, "username": "admin", "password": PASSWORD, "driver": "fake"})
    task = wait_task(api, headers, r.json()["uri"])
    assert task["taskState"] == "Completed", task
    server: dict[str, Any] = api.get(task["associatedResource"]["resourceUri"], headers=headers).json()
    return server


def event(api: TestClient, headers: dict[str, str], server: dict[str, Any], name: str) -> Any:
    return api.put(f"{server['uri']}/provisionState", headers=headers, json={"event": name})


def wait_state(api: TestClient, headers: dict[str, str], server: dict[str, Any], state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = api.get(server["uri"], headers=headers).json()
        if body["provisionState"] == state:
            return body
        assert time.monotonic() < deadline, f"still {body['provisionState']}, waiting for {state}"
        time.sleep(0.05)


def play_agent(boot: TestClient, mac: str) -> None:
    PlayedAgent(boot, mac, INVENTORY)


def test_inspect_boots_the_agent_stores_the_inventory_and_makes_the_server_available(
        api: TestClient, admin_headers: dict[str, str], runner: BackgroundRunner, boot: TestClient) -> None:
    server = add(api, admin_headers, "rack2-u1.example")
    assert server["provisionState"] == "manageable" and "inspect" in server["provisionEvents"]
    r = event(api, admin_headers, server, "inspect")
    assert r.status_code == 202, r.text
    waiting = wait_state(api, admin_headers, server, "inspect-wait")
    assert waiting["targetProvisionState"] == "available"
    bmc = fake.get_machine(BmcTarget("fake", "rack2-u1.example", 623, "admin", PASSWORD))
    assert bmc.commands[-2:] == ["boot pxe", "power on"] and not bmc.boot.persistent
    play_agent(boot, waiting["macAddresses"][0].lower())
    task = wait_task(api, admin_headers, r.json()["uri"])
    assert task["taskState"] == "Completed", task
    done = api.get(server["uri"], headers=admin_headers).json()
    assert done["provisionState"] == "available" and done["lastError"] is None
    assert done["powerState"] == "Off" and bmc.commands[-1] == "power off"
    assert done["memoryMb"] == 2048 and done["processorCoreCount"] == 4
    assert done["hardwareInventory"]["disks"][0]["serial"] == "S3Z1NB0K" and done["inspected"]


def test_abort_fails_the_inspection_with_the_reason(api: TestClient, admin_headers: dict[str, str],
                                                   runner: BackgroundRunner) -> None:
    server = add(api, admin_headers, "rack2-u2.example")
    task_uri = event(api, admin_headers, server, "inspect").json()["uri"]
    wait_state(api, admin_headers, server, "inspect-wait")
    r = event(api, admin_headers, server, "abort")
    assert r.status_code == 200 and r.json()["provisionState"] == "inspect-failed"
    task = wait_task(api, admin_headers, task_uri)
    assert task["taskState"] == "Error" and "Aborted in inspect-wait" in task["taskErrors"][0]["message"]
    alerts = api.get("/rest/alerts", headers=admin_headers).json()["members"]
    assert any(a["associatedResource"]["resourceUri"] == server["uri"] and a["alertState"] == "Active" for a in alerts)
    assert event(api, admin_headers, server, "manage").json()["provisionState"] == "manageable"


def test_a_silent_agent_times_out(api: TestClient, admin_headers: dict[str, str], ctx: AppContext,
                                  runner: BackgroundRunner) -> None:
    ctx.settings.provisioning.inspect_wait_s = 1
    server = add(api, admin_headers, "rack2-u3.example")
    task = wait_task(api, admin_headers, event(api, admin_headers, server, "inspect").json()["uri"])
    assert task["taskState"] == "Error" and "Timed out in inspect-wait after 1 s" in task["taskErrors"][0]["message"]
    failed = api.get(server["uri"], headers=admin_headers).json()
    assert failed["provisionState"] == "inspect-failed" and "Timed out" in failed["lastError"]


def test_a_restarted_runner_resumes_the_wait(api: TestClient, admin_headers: dict[str, str], ctx: AppContext,
                                             boot: TestClient) -> None:
    first = BackgroundRunner(ctx)
    first.start()
    try:
        server = add(api, admin_headers, "rack2-u4.example")
        task_uri = event(api, admin_headers, server, "inspect").json()["uri"]
        waiting = wait_state(api, admin_headers, server, "inspect-wait")
    finally:
        first.stop()
    play_agent(boot, waiting["macAddresses"][0].lower())  # the agent reports while no runner runs
    ctx.__dict__.pop("bmcs", None)  # a restarted process builds a new BMC driver pool; the old one closed
    second = BackgroundRunner(ctx)
    second.start()
    try:
        task = wait_task(api, admin_headers, task_uri)
    finally:
        second.stop()
    assert task["taskState"] == "Completed", (task["taskErrors"], task["taskStatus"])
    assert api.get(server["uri"], headers=admin_headers).json()["provisionState"] == "available"
    bmc = fake.get_machine(BmcTarget("fake", "rack2-u4.example", 623, "admin", PASSWORD))
    assert bmc.commands.count("power on") == 1  # not booted a second time


def test_refused_events(api: TestClient, admin_headers: dict[str, str], runner: BackgroundRunner) -> None:
    server = add(api, admin_headers, "rack2-u5.example")
    r = event(api, admin_headers, server, "unmaintain")
    assert r.status_code == 409 and r.json()["errorCode"] == "INVALID_PROVISION_STATE"
    r = event(api, admin_headers, server, "deploy")
    assert r.status_code == 400 and "server profiles" in r.json()["message"]
    r = event(api, admin_headers, server, "explode")
    assert r.status_code == 400
    assert api.get(server["uri"], headers=admin_headers).json()["provisionState"] == "manageable"
