"""/rest/server-hardware through the real app, database and task runner, on the fake BMC driver.
(The IPMI and Redfish paths against real BMC emulators are in test_server_hardware_bmc.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from starlette.websockets import WebSocketDisconnect

from appliance.config import Settings
from appliance.context import AppContext
from appliance.drivers.power import fake
from appliance.drivers.types import BmcTarget, PowerState
from appliance.roles import Role
from tests.support.runner import BackgroundRunner, wait_task

PASSWORD = "Bmc-Secret-4711"  # distinctive, so a grep for it cannot match anything by accident


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # Short BMC patience so dead-BMC paths finish quickly; verification polls fast.
    return Settings(home=tmp_path / "home", database_url=database_url, node_name="test-node",
                    tasks={"lease_ttl_s": 3, "poll_interval_s": 0.05},
                    bmc={"timeout_s": 0.5, "retries": 0, "backoff_s": 0.01, "verify_poll_s": 0.01,
                         "verify_timeout_s": 2, "circuit_failures": 2, "circuit_reset_s": 60,
                         "sync_interval_s": 0})


@pytest.fixture(autouse=True)
def _fresh_fake_machines() -> Iterator[None]:
    fake.reset_machines()
    yield
    fake.reset_machines()


def machine(host: str, password: str = PASSWORD) -> fake.FakeMachine:
    return fake.get_machine(BmcTarget("fake", host, 623, "admin", password))


def add(api: TestClient, headers: dict[str, str], host: str, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    response = api.post("/rest/server-hardware", headers=headers, json={
        "hostname": host, "username": "admin", "password": PASSWORD, "driver": "fake",
        "licensingIntent": "OneView", "configurationState": "Managed", **extra})
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == response.json()["uri"]
    task = wait_task(api, headers, response.json()["uri"])
    return task, api.get(task["associatedResource"]["resourceUri"], headers=headers).json()


def power(api: TestClient, headers: dict[str, str], server: dict[str, Any], state: str, control: str) -> dict[str, Any]:
    response = api.put(f"{server['uri']}/powerState", headers=headers,
                       json={"powerState": state, "powerControl": control})
    assert response.status_code == 202, response.text
    return wait_task(api, headers, response.json()["uri"])


def test_add_reads_inventory_and_hides_credentials(api: TestClient, admin_headers: dict[str, str],
                                                     runner: BackgroundRunner, ctx: AppContext) -> None:
    task, server = add(api, admin_headers, "rack1-u1.example")
    assert task["taskState"] == "Completed", task
    assert task["associatedResource"]["resourceCategory"] == "server-hardware"
    bmc = machine("rack1-u1.example")
    assert server["state"] == "NoProfileApplied" and server["status"] == "OK"
    assert server["powerState"] == "Off" and server["driver"] == "fake" and server["mpPort"] == 623
    assert server["serialNumber"] == bmc.serial_number and server["uuid"] == bmc.uuid
    assert server["model"] == "Fake Server 1000" and server["manufacturer"] == "Ingot"
    assert server["macAddresses"] == list(bmc.mac_addresses)
    assert {s["name"] for s in server["sensors"]} == {"Inlet Temp", "Fan 1"}
    assert server["mpHostInfo"]["mpHostName"] == "rack1-u1.example"
    listing = api.get("/rest/server-hardware", headers=admin_headers).json()
    assert listing["total"] == 1 and listing["members"][0]["uri"] == server["uri"]
    # Credentials are write-only and encrypted at rest.
    for body in (server, listing, task):
        assert PASSWORD not in str(body) and "admin" not in str(body.get("members", body)).replace("Administrator", "")
    with ctx.engine.connect() as conn:
        stored = conn.execute(text("SELECT password_sealed FROM server_hardware")).scalar_one()
    assert PASSWORD not in stored and stored.startswith("fernet:")


def test_power_requests_reach_the_bmc_and_show_on_the_resource(
        api: TestClient, admin_headers: dict[str, str], runner: BackgroundRunner) -> None:
    _, server = add(api, admin_headers, "rack1-u2.example")
    bmc = machine("rack1-u2.example")
    for state, control, expected, command in [
        ("On", "MomentaryPress", "On", "power on"),
        ("Off", "MomentaryPress", "Off", "power soft-off"),
        ("On", "ColdBoot", "On", "power cycle"),
        ("On", "Reset", "On", "power reset"),
        ("Off", "PressAndHold", "Off", "power off"),
    ]:
        task = power(api, admin_headers, server, state, control)
        assert task["taskState"] == "Completed", task
        assert task["associatedResource"]["resourceUri"] == server["uri"]
        assert api.get(server["uri"], headers=admin_headers).json()["powerState"] == expected
        assert bmc.commands[-1] == command
    assert bmc.power is PowerState.OFF


def test_invalid_power_requests_are_400(api: TestClient, admin_headers: dict[str, str],
                                        runner: BackgroundRunner) -> None:
    _, server = add(api, admin_headers, "rack1-u3.example")
    for body in ({"powerState": "Sideways", "powerControl": "MomentaryPress"},
                 {"powerState": "Off", "powerControl": "ColdBoot"},
                 {"powerState": "On", "powerControl": "MomentaryPress", "extra": 1}):
        response = api.put(f"{server['uri']}/powerState", headers=admin_headers, json=body)
        assert response.status_code == 400, body
        assert response.json()["errorCode"] in ("INVALID_INPUT", "VALIDATION_ERROR")
    assert api.put("/rest/server-hardware/nope/powerState", headers=admin_headers,
                   json={"powerState": "On", "powerControl": "MomentaryPress"}).status_code == 404


def test_boot_device_once_and_persistent(api: TestClient, admin_headers: dict[str, str],
                                         runner: BackgroundRunner) -> None:
    _, server = add(api, admin_headers, "rack1-u4.example")
    for body in ({"device": "pxe", "persistent": False, "mode": "uefi"}, {"device": "disk", "persistent": True}):
        response = api.put(f"{server['uri']}/bootDevice", headers=admin_headers, json=body)
        assert response.status_code == 202, response.text
        assert wait_task(api, admin_headers, response.json()["uri"])["taskState"] == "Completed"
        shown = api.get(server["uri"], headers=admin_headers).json()["bootDevice"]
        assert shown["device"] == body["device"] and shown["persistent"] == body["persistent"]
    assert machine("rack1-u4.example").boot.persistent is True


def test_duplicate_bmc_is_409_unless_forced(api: TestClient, admin_headers: dict[str, str],
                                            runner: BackgroundRunner) -> None:
    _, first = add(api, admin_headers, "rack1-u5.example")
    again = api.post("/rest/server-hardware", headers=admin_headers, json={
        "hostname": "rack1-u5.example", "username": "admin", "password": PASSWORD, "driver": "fake"})
    assert again.status_code == 409 and again.json()["errorCode"] == "DUPLICATE_NAME"
    # A forced re-add with wrong credentials fails and gives the server back as it was ...
    response = api.post("/rest/server-hardware", headers=admin_headers, json={
        "hostname": "rack1-u5.example", "username": "admin", "password": "typo", "driver": "fake", "force": True})
    task = wait_task(api, admin_headers, response.json()["uri"])
    assert task["taskState"] == "Error" and task["taskErrors"][0]["errorCode"] == "BMC_AUTH_FAILED"
    kept = api.get(first["uri"], headers=admin_headers).json()
    assert (kept["state"], kept["name"]) == ("NoProfileApplied", first["name"])
    assert power(api, admin_headers, kept, "On", "MomentaryPress")["taskState"] == "Completed"  # old password
    # ... and one with good credentials re-reads the same resource under its new name.
    task, second = add(api, admin_headers, "rack1-u5.example", force=True, name="renamed")
    assert task["taskState"] == "Completed" and second["uri"] == first["uri"] and second["name"] == "renamed"
    unknown = api.post("/rest/server-hardware", headers=admin_headers, json={
        "hostname": "x", "username": "admin", "password": "p", "driver": "telnet"})
    assert unknown.status_code == 400 and "telnet" in unknown.json()["message"]


def test_wrong_credentials_fail_the_add_and_keep_nothing(api: TestClient, admin_headers: dict[str, str],
                                                         runner: BackgroundRunner) -> None:
    machine("rack1-u6.example", password="the-real-one")
    task, _ = add(api, admin_headers, "rack1-u6.example")
    assert task["taskState"] == "Error"
    assert task["taskErrors"][0]["errorCode"] == "BMC_AUTH_FAILED"
    assert PASSWORD not in str(task)
    assert api.get("/rest/server-hardware", headers=admin_headers).json()["total"] == 0


def test_dead_bmc_is_reported_by_refresh_and_power_sync_then_recovers(
        api: TestClient, admin_headers: dict[str, str], runner: BackgroundRunner) -> None:
    _, server = add(api, admin_headers, "rack1-u7.example")
    _, healthy = add(api, admin_headers, "rack1-u8.example")
    machine("rack1-u7.example").dead = True
    response = api.put(f"{server['uri']}/refreshState", headers=admin_headers, json={"refreshState": "RefreshPending"})
    task = wait_task(api, admin_headers, response.json()["uri"])
    assert task["taskState"] == "Error" and task["taskErrors"][0]["errorCode"] == "BMC_UNREACHABLE"
    shown = api.get(server["uri"], headers=admin_headers).json()
    assert shown["state"] == "Error" and shown["status"] == "Critical" and shown["powerState"] == "Unknown"
    assert "did not answer" in shown["stateReason"]

    sync = wait_task(api, admin_headers, api.post("/rest/server-hardware/power-sync", headers=admin_headers)
                     .json()["uri"])
    assert sync["taskState"] == "Warning" and sync["percentComplete"] == 100
    assert sync["data"]["total"] == 2 and sync["data"]["reachable"] == 1
    assert [u["name"] for u in sync["data"]["unreachable"]] == [server["name"]]
    alerts = api.get("/rest/alerts", headers=admin_headers, params={"filter": "alertState='Active'"}).json()
    unreachable = [a for a in alerts["members"] if a["alertTypeID"] == "Ingot.ServerHardware.BmcUnreachable"]
    assert [a["associatedResource"]["resourceUri"] for a in unreachable] == [server["uri"]]
    assert api.get(healthy["uri"], headers=admin_headers).json()["status"] == "OK"

    # Fixed: the breaker is open after two failures, so the next sweep fails fast ...
    machine("rack1-u7.example").dead = False
    sync = wait_task(api, admin_headers, api.post("/rest/server-hardware/power-sync", headers=admin_headers)
                     .json()["uri"])
    assert sync["data"]["unreachable"][0]["errorCode"] == "BMC_CIRCUIT_OPEN"
    assert api.get(server["uri"], headers=admin_headers).json()["bmcCircuit"] == "open"
    # ... and a refresh is the operator's way to try again at once.
    ok = wait_task(api, admin_headers, api.put(f"{server['uri']}/refreshState", headers=admin_headers,
                                               json={"refreshState": "RefreshPending"}).json()["uri"])
    assert ok["taskState"] == "Completed", ok
    shown = api.get(server["uri"], headers=admin_headers).json()
    assert (shown["state"], shown["status"], shown["powerState"], shown["bmcCircuit"]) == (
        "NoProfileApplied", "OK", "Off", "closed")
    alerts = api.get("/rest/alerts", headers=admin_headers, params={"filter": "alertState='Active'"}).json()
    assert not [a for a in alerts["members"] if a["alertTypeID"] == "Ingot.ServerHardware.BmcUnreachable"]


def test_power_changed_behind_ingots_back_raises_a_drift_alert(
        api: TestClient, admin_headers: dict[str, str], runner: BackgroundRunner) -> None:
    _, server = add(api, admin_headers, "rack2-u1.example")
    assert power(api, admin_headers, server, "On", "MomentaryPress")["taskState"] == "Completed"
    machine("rack2-u1.example").power = PowerState.OFF  # someone pressed the button
    sync = wait_task(api, admin_headers, api.post("/rest/server-hardware/power-sync", headers=admin_headers)
                     .json()["uri"])
    assert sync["data"]["drift"] == [{"name": server["name"], "uri": server["uri"], "expected": "On",
                                      "actual": "Off"}]
    shown = api.get(server["uri"], headers=admin_headers).json()
    assert shown["powerState"] == "Off" and shown["status"] == "Warning" and shown["lastContact"]
    alerts = api.get("/rest/alerts", headers=admin_headers).json()["members"]
    assert any(a["alertTypeID"] == "Ingot.ServerHardware.PowerStateDrift" and a["alertState"] == "Active"
               for a in alerts)
    # Powering it on again through Ingot clears the drift on the next sweep.
    assert power(api, admin_headers, server, "On", "MomentaryPress")["taskState"] == "Completed"
    sync = wait_task(api, admin_headers, api.post("/rest/server-hardware/power-sync", headers=admin_headers)
                     .json()["uri"])
    assert sync["taskState"] == "Completed" and sync["data"]["drift"] == []


def test_roles(api: TestClient, admin_headers: dict[str, str], make_user: Any, runner: BackgroundRunner) -> None:
    _, server = add(api, admin_headers, "rack2-u2.example")
    reader, operator = make_user(Role.READ_ONLY), make_user(Role.OPERATOR)
    assert api.get(server["uri"], headers=reader).status_code == 200
    body = {"powerState": "On", "powerControl": "MomentaryPress"}
    assert api.put(f"{server['uri']}/powerState", headers=reader, json=body).status_code == 403
    allowed = api.put(f"{server['uri']}/powerState", headers=operator, json=body)
    assert allowed.status_code == 202
    assert wait_task(api, admin_headers, allowed.json()["uri"])["taskState"] == "Completed"
    assert api.post("/rest/server-hardware", headers=operator, json={
        "hostname": "h", "username": "u", "password": "p", "driver": "fake"}).status_code == 403
    assert api.delete(server["uri"], headers=operator).status_code == 403
    scan = api.post("/rest/server-hardware/discover", headers=operator, json={"cidr": "127.0.0.0/30"})
    assert scan.status_code == 403


def test_remove(api: TestClient, admin_headers: dict[str, str], runner: BackgroundRunner) -> None:
    _, server = add(api, admin_headers, "rack2-u3.example")
    machine("rack2-u3.example").dead = True  # a dead BMC never blocks removal
    response = api.delete(server["uri"], headers=admin_headers)
    assert response.status_code == 202 and response.json()["name"] == "Remove"
    assert wait_task(api, admin_headers, response.json()["uri"])["taskState"] == "Completed"
    assert api.get(server["uri"], headers=admin_headers).status_code == 404


def test_discover_rejects_bad_ranges(api: TestClient, admin_headers: dict[str, str]) -> None:
    for body, needle in (({"cidr": "10.0.0.0/8"}, "limit"), ({"cidr": "not-a-net"}, "cidr"),
                         ({"cidr": "127.0.0.0/30", "ipmiPorts": []}, "port"),
                         ({"cidr": "127.0.0.0/30", "ipmiPorts": [70000]}, "port")):
        response = api.post("/rest/server-hardware/discover", headers=admin_headers, json=body)
        assert response.status_code == 400, body
        assert needle in response.text.lower()


def test_console_websocket(api: TestClient, admin_headers: dict[str, str], runner: BackgroundRunner) -> None:
    _, server = add(api, admin_headers, "rack2-u4.example")
    path = server["uri"] + "/console"
    with api.websocket_connect(path, headers=admin_headers) as ws:
        assert ws.receive_bytes() == b"[Ingot: serial console of rack2-u4.example connected]\r\n"
        banner = ws.receive_bytes()
        assert b"Fake serial console" in banner
        ws.send_text("root\r")
        echoed = b""
        while b"root" not in echoed:
            echoed += ws.receive_bytes()
    for target, headers, code in ((path, {}, 4401), ("/rest/server-hardware/missing/console", admin_headers, 4404)):
        with api.websocket_connect(target, headers=headers) as ws, pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_bytes()
        assert closed.value.code == code
