"""Server hardware end to end through a running ``ingot serve``, against real BMC emulators:
OpenIPMI's ipmi_sim (cross-checked with ipmitool) and sushy-tools' Redfish emulator. Every
response and the appliance's whole log are then searched for the BMC passwords."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support.ipmi_sim import FRU, IpmiSim, ipmi_sim_fixture  # noqa: F401 - fixture
from tests.support.ipmi_sim import PASSWORD as IPMI_PASSWORD
from tests.support.ipmi_sim import USER as IPMI_USER
from tests.support.live import LiveAppliance
from tests.support.sushy import PASSWORD as REDFISH_PASSWORD
from tests.support.sushy import SYSTEM_MAC, SYSTEM_UUID, SushyEmulator, sushy_emulator_fixture  # noqa: F401
from tests.support.sushy import USER as REDFISH_USER

pytestmark = pytest.mark.slow
WRONG_PASSWORD = "Not-The-Bmc-Pass-0815"
# The Redfish emulator's fake driver applies power changes 1-11 s late, on purpose.
BMC_ENV = {"INGOT_BMC__VERIFY_TIMEOUT_S": "40", "INGOT_BMC__VERIFY_POLL_S": "0.2", "INGOT_BMC__TIMEOUT_S": "5",
           "INGOT_BMC__SYNC_INTERVAL_S": "0",
           "INGOT_LOG_LEVEL": "DEBUG"}  # the secrets check searches everything the appliance says


class Recorder:
    """An API client that keeps every response body, so the test can search them all."""

    def __init__(self, client: httpx.Client, session: str) -> None:
        self.client = client
        self.session = session
        self.bodies: list[str] = []

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        self.bodies.append(response.text)
        return response

    def wait(self, task_uri: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.call("GET", task_uri)
            assert response.status_code == 200, f"GET {task_uri}: {response.status_code} {response.text}"
            task: dict[str, Any] = response.json()
            if task["taskState"] not in ("New", "Starting", "Running", "Pending", "Stopping"):
                return task
            time.sleep(0.1)
        raise AssertionError(f"{task_uri} did not finish in {timeout} s")

    def run(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.call(method, path, json=body)
        assert response.status_code == 202, response.text
        return self.wait(response.json()["uri"])


@pytest.fixture
def appliance(tmp_path: Path, fresh_database_url: str | None) -> Iterator[LiveAppliance]:
    live = LiveAppliance(tmp_path / "home", fresh_database_url, extra_env=BMC_ENV)
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def api(appliance: LiveAppliance) -> Iterator[Recorder]:
    session = appliance.login()
    with appliance.client(session) as client:
        yield Recorder(client, session)


def _no_secrets(live: LiveAppliance, api: Recorder, *secrets: str) -> None:
    texts = {"log": live.log_text(), **{f"response {i}": body for i, body in enumerate(api.bodies)}}
    assert texts["log"], "the appliance wrote no log"
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a BMC password appears in the {where}"



def open_console(url: str, tls: ssl.SSLContext, session: str, timeout: float = 30) -> ClientConnection:
    """websockets' connect with a bound of its own. After an opening handshake that timed out,
    websockets 17 waits for its reader thread, which a TLS socket does not always wake: in CI under
    load that wait lasted 20 minutes. So the connect runs in a daemon thread, and past ``timeout``
    the test fails instead of hanging."""
    opened: list[ClientConnection] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            opened.append(connect(url, ssl=tls, additional_headers={"auth": session}, open_timeout=timeout))
        except BaseException as exc:  # handed to the test below
            failed.append(exc)

    worker = threading.Thread(target=run, name="console-connect", daemon=True)
    worker.start()
    worker.join(timeout + 10)
    if failed:
        raise failed[0]
    if not opened:
        pytest.fail(f"the console websocket {url} did not open within {timeout + 10:.0f} s")
    return opened[0]

def test_ipmi_server_through_ingot(appliance: LiveAppliance, api: Recorder, ipmi_sim: IpmiSim) -> None:
    ipmi_sim.ipmitool("chassis", "power", "off")
    ipmi_sim.ipmitool("chassis", "bootdev", "none")

    task = api.run("POST", "/rest/server-hardware", {
        "hostname": "127.0.0.1", "port": ipmi_sim.port, "username": IPMI_USER, "password": IPMI_PASSWORD,
        "driver": "ipmi", "name": "sim-1"})
    assert task["taskState"] == "Completed", task
    uri = task["associatedResource"]["resourceUri"]
    server = api.call("GET", uri).json()
    assert (server["manufacturer"], server["model"], server["serialNumber"], server["partNumber"]) == (
        FRU["manufacturer"], FRU["product"], FRU["serial"], FRU["part"])
    assert server["macAddresses"] == [FRU["mac"]] and server["uuid"]
    assert server["powerState"] == "Off" and server["state"] == "NoProfileApplied"

    for state, control, ipmitool_says in (("On", "MomentaryPress", "on"), ("Off", "PressAndHold", "off"),
                                          ("On", "ColdBoot", "on")):
        task = api.run("PUT", f"{uri}/powerState", {"powerState": state, "powerControl": control})
        assert task["taskState"] == "Completed", task
        assert api.call("GET", uri).json()["powerState"] == state
        deadline = time.monotonic() + 10  # ipmi_sim completes a cycle's "on" half a moment later
        while ipmi_sim.power_file() != ("1" if ipmitool_says == "on" else "0") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ipmi_sim.ipmitool("chassis", "power", "status").stdout.strip() == f"Chassis Power is {ipmitool_says}"

    task = api.run("PUT", f"{uri}/bootDevice", {"device": "pxe", "persistent": False})
    assert task["taskState"] == "Completed", task
    assert "Force PXE" in ipmi_sim.ipmitool("chassis", "bootparam", "get", "5").stdout
    assert api.call("GET", uri).json()["bootDevice"]["device"] == "pxe"

    # The serial console through the websocket: what the server prints arrives, keystrokes go back.
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    ws_url = appliance.url.replace("https://", "wss://") + uri + "/console"
    with open_console(ws_url, tls, api.session) as ws:
        assert b"serial console of sim-1 connected" in ws.recv(timeout=20)  # SOL is active from here
        ipmi_sim.write_serial("Ingot SOL through the websocket\r\n")
        seen = b""
        deadline = time.monotonic() + 20
        while b"through the websocket" not in seen and time.monotonic() < deadline:
            message = ws.recv(timeout=10)
            seen += message if isinstance(message, bytes) else message.encode()
        assert b"Ingot SOL through the websocket" in seen
        ws.send("root\r")
        deadline = time.monotonic() + 10
        while b"root\r" not in ipmi_sim.serial.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b"root\r" in ipmi_sim.serial.received

    # The same BMC under another name with a wrong password: refused, and nothing kept.
    task = api.run("POST", "/rest/server-hardware", {
        "hostname": "localhost", "port": ipmi_sim.port, "username": IPMI_USER, "password": WRONG_PASSWORD,
        "driver": "ipmi"})
    assert task["taskState"] == "Error" and task["taskErrors"][0]["errorCode"] == "BMC_AUTH_FAILED"
    assert api.call("GET", "/rest/server-hardware").json()["total"] == 1

    _no_secrets(appliance, api, IPMI_PASSWORD, WRONG_PASSWORD)


def test_redfish_server_through_ingot(appliance: LiveAppliance, api: Recorder, sushy_emulator: SushyEmulator) -> None:
    task = api.run("POST", "/rest/server-hardware", {
        "hostname": sushy_emulator.url, "username": REDFISH_USER, "password": REDFISH_PASSWORD,
        "driver": "redfish", "name": "redfish-1"})
    assert task["taskState"] == "Completed", task
    uri = task["associatedResource"]["resourceUri"]
    server = api.call("GET", uri).json()
    assert server["uuid"] == SYSTEM_UUID and SYSTEM_MAC in server["macAddresses"]
    system = sushy_emulator.system()
    assert server["driver"] == "redfish"
    assert (server["manufacturer"], server["model"]) == (system.get("Manufacturer"), system.get("Model"))

    for state, control in (("On", "MomentaryPress"), ("Off", "PressAndHold"), ("On", "ColdBoot")):
        task = api.run("PUT", f"{uri}/powerState", {"powerState": state, "powerControl": control})
        assert task["taskState"] == "Completed", task
        assert api.call("GET", uri).json()["powerState"] == state
        assert sushy_emulator.system()["PowerState"] == state

    task = api.run("PUT", f"{uri}/bootDevice", {"device": "pxe", "persistent": False})
    assert task["taskState"] == "Completed", task
    assert json.dumps(sushy_emulator.system()["Boot"]).count("Pxe") >= 1

    task = api.run("POST", "/rest/server-hardware", {
        "hostname": sushy_emulator.url.replace("127.0.0.1", "localhost"), "username": REDFISH_USER,
        "password": WRONG_PASSWORD, "driver": "redfish"})
    assert task["taskState"] == "Error" and task["taskErrors"][0]["errorCode"] == "BMC_AUTH_FAILED"
    _no_secrets(appliance, api, REDFISH_PASSWORD, WRONG_PASSWORD)
