"""``ingot serve`` as a real process: TLS, clean SIGTERM, SIGKILL mid-task, secrets kept out of logs."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.db.session import make_engine, make_session_factory, unit_of_work
from appliance.services.tasks import TaskService
from tests.support.live import ADMIN_PASSWORD, LiveAppliance

pytestmark = pytest.mark.slow


def queue_task(live: LiveAppliance, kind: str, **args: object) -> str:
    engine = make_engine(live.database_url or f"sqlite:///{live.home / 'ingot.db'}")
    try:
        with unit_of_work(make_session_factory(engine)) as db:
            return TaskService(db).create(kind=kind, name=f"{kind} task", owner="Administrator", args=args).id
    finally:
        engine.dispose()


def wait_task(client: httpx.Client, task_id: str, until: Callable[[dict[str, Any]], bool],
              timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = client.get(f"/rest/tasks/{task_id}").json()
        if until(task):
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} never reached the expected state: {task}")
        time.sleep(0.1)


def running_past(percent: int) -> Callable[[dict[str, Any]], bool]:
    return lambda t: t["taskState"] == "Running" and t["percentComplete"] >= percent


def ended(t: dict[str, Any]) -> bool:
    return t["taskState"] not in ("New", "Running", "Stopping")


def tls_handshake(port: int, version: ssl.TLSVersion) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw) as tls:
        return str(tls.version())


def test_tls_versions_and_self_signed_certificate(live: LiveAppliance) -> None:
    assert tls_handshake(live.https_port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert tls_handshake(live.https_port, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    cert = live.home / "tls" / "tls.crt"
    assert cert.is_file() and (live.home / "tls" / "tls.key").stat().st_mode & 0o077 == 0
    # The generated certificate verifies the connection when given as the CA.
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client:
        assert client.get(f"https://localhost:{live.https_port}/rest/version").status_code == 200
    # ... and the operator is told it is self-signed.
    with live.client(live.login()) as client:
        alerts = client.get("/rest/alerts", params={"filter": "alertTypeID='Ingot.Security.SelfSignedCertificate'"})
        assert alerts.json()["total"] == 1


def test_boot_listener_is_plain_http(live: LiveAppliance) -> None:
    r = httpx.get(f"http://127.0.0.1:{live.http_port}/boot/ping")
    assert r.json() == {"status": "OK"}
    assert httpx.get(f"http://127.0.0.1:{live.http_port}/rest/version").status_code == 404


def test_sigterm_is_a_clean_shutdown(live: LiveAppliance) -> None:
    assert live.stop() == 0
    assert '"msg": "stopped"' in live.log_text()


def test_sigkill_mid_task_then_restart(live: LiveAppliance) -> None:
    session = live.login()
    with live.client(session) as client:
        plain = queue_task(live, "test-slow", steps=200, delay=0.1)
        resumable = queue_task(live, "test-slow-resumable", steps=12, delay=0.1)
        wait_task(client, plain, running_past(2))
        wait_task(client, resumable, running_past(9))
    live.kill()

    live.start()  # same INGOT_HOME and database: the restart recognises its predecessor's leases
    with live.client(live.login()) as client:
        failed = wait_task(client, plain, ended)
        assert failed["taskState"] == "Error"
        error = failed["taskErrors"][0]
        assert error["errorCode"] == "TASK_INTERRUPTED"
        assert "The appliance stopped while this task was running" in error["message"]
        resumed = wait_task(client, resumable, ended)
        assert resumed["taskState"] == "Completed"
        assert resumed["taskStatus"] == "All 12 steps done (attempt 2)."
        alerts = client.get("/rest/alerts", params={"filter": "alertTypeID='Ingot.Tasks.Interrupted'"}).json()
        assert [a["associatedResource"]["resourceUri"] for a in alerts["members"]] == [f"/rest/tasks/{plain}"]
        assert client.get("/rest/tasks", params={"filter": "taskState='Running'"}).json()["total"] == 0


def test_secrets_never_in_logs_or_responses(live: LiveAppliance) -> None:
    session = live.login()
    with live.client(session) as client:
        bad = client.post("/rest/login-sessions", json={"userName": "Administrator", "password": "Wr0ng-Secret-77"})
        assert bad.status_code == 401
        created = client.post("/rest/users", json={"userName": "ops", "password": "Ops-Secret-Pass-1",
                                                    "role": "Operator"})
        assert created.status_code == 201
        token = client.post("/rest/api-tokens", json={"name": "ci"}).json()["token"]
        with live.client() as anon:
            assert anon.get("/rest/tasks", headers={"auth": token}).status_code == 200
        bodies = [
            client.get("/rest/users").text, client.get("/rest/users/ops").text,
            client.get("/rest/audit-logs").text, client.get("/rest/login-sessions").text,
            client.get("/rest/api-tokens").text, client.get("/rest/tasks").text,
        ]
        assert client.post("/rest/backups", json={}).status_code == 202
    live.stop()
    secrets = [ADMIN_PASSWORD, "Wr0ng-Secret-77", "Ops-Secret-Pass-1", session, token]
    logs = live.log_text()
    assert "POST /rest/login-sessions 401" in logs  # the log did record the calls...
    for secret in secrets:
        assert secret not in logs  # ...without the secrets
        for body in bodies:
            assert secret not in body
        for path in live.home.rglob("*.tar.gz"):  # backups hold digests, not secrets
            assert secret.encode() not in subprocess.run(["zcat", str(path)], capture_output=True).stdout
    for line in logs.splitlines():
        if line.startswith("{"):
            json.loads(line)  # structured: every line is one JSON object


def test_first_start_without_admin_password_writes_it_to_a_file(tmp_path: Path) -> None:
    live = LiveAppliance(tmp_path / "home", None, extra_env={"INGOT_ADMIN_PASSWORD": ""}, with_test_handlers=False)
    live.start()
    try:
        secret_file = live.home / "initial-admin-password"
        assert secret_file.stat().st_mode & 0o077 == 0
        password = secret_file.read_text().strip()
        assert live.login(password=password)
        assert password not in live.log_text()
    finally:
        live.stop()


def test_config_file_and_bad_config(tmp_path: Path) -> None:
    ingot = str(Path(sys.executable).with_name("ingot"))
    missing = subprocess.run([ingot, "serve", "--config", str(tmp_path / "nope.toml")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "configuration file not found" in missing.stderr

    config = tmp_path / "ingot.toml"
    config.write_text('[api]\nbind_address = "127.0.0.1"\nhttps_port = 0\nhttp_port = 0\n'
                      '[logging]\nformat = "text"\n')
    # The file's ports and bind address apply: the flat INGOT_* variables would win, so unset them.
    live = LiveAppliance(tmp_path / "home", None, with_test_handlers=False, serve_args=("--config", str(config)),
                         extra_env={"INGOT_HTTPS_PORT": "", "INGOT_HTTP_PORT": "", "INGOT_BIND_ADDRESS": ""})
    live.start()
    try:
        assert "INFO appliance.server" in live.log_text()  # text format came from the file
        assert live.login()
    finally:
        live.stop()


def test_a_202_task_is_readable_at_once(live: LiveAppliance) -> None:
    """The transaction that queues a task commits before the 202 leaves, so a client that follows
    the Location header immediately (the HPE SDK's TaskMonitor does) never gets a 404."""
    with live.client(live.login()) as client:
        for _ in range(30):
            accepted = client.post("/rest/backups", json={})
            assert accepted.status_code == 202
            followed = client.get(accepted.headers["Location"])
            assert followed.status_code == 200, followed.text
