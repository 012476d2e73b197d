"""A real appliance process on loopback for integration tests: start, wait until listening,
stop with SIGTERM or kill with SIGKILL — always by its own PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from lab.netns import in_namespace
from lab.network import boot_services_env as boot_services_env  # re-exported: tests and bench use it

REPO = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "Adm1n-test-pass"


class LiveAppliance:
    def __init__(self, home: Path, database_url: str | None, extra_env: dict[str, str] | None = None,
                 with_test_handlers: bool = True, serve_args: tuple[str, ...] = (),
                 netns: str | None = None) -> None:
        self.home = home
        self.database_url = database_url
        self.extra_env = extra_env or {}
        self.with_test_handlers = with_test_handlers
        self.serve_args = serve_args  # extra `ingot serve` options (plain serve only)
        self.netns = netns  # run inside this network namespace (network boot tests)
        self.proc: subprocess.Popen[bytes] | None = None
        self.https_port = 0
        self.http_port = 0
        self.log_path = home / "appliance.log"
        self._log: BinaryIO | None = None
        self._session: str | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.https_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INGOT_")}
        env.update({
            "INGOT_HOME": str(self.home),
            "INGOT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "INGOT_BIND_ADDRESS": "127.0.0.1",
            "INGOT_HTTPS_PORT": "0",
            "INGOT_HTTP_PORT": "0",
            "INGOT_TFTP_PORT": "0",
            "INGOT_DNS_PORT": "0",
            "INGOT_TASKS__LEASE_TTL_S": "6",
            "INGOT_TASKS__POLL_INTERVAL_S": "0.2",
            "PYTHONPATH": str(REPO),
        })
        if self.database_url:
            env["INGOT_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> LiveAppliance:
        self.home.mkdir(parents=True, exist_ok=True)
        self._session = None
        ready = self.home / "ready"
        ready.unlink(missing_ok=True)
        if self.with_test_handlers:
            argv = [sys.executable, "-m", "tests.support.serve", str(ready)]
        else:
            argv = [str(Path(sys.executable).with_name("ingot")), "serve", *self.serve_args,
                    "--ready-file", str(ready)]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]  # execs in place: the PID stays the appliance's
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=self.env(), cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.is_file() and ready.read_text().strip():
                self.https_port, self.http_port = (int(p) for p in ready.read_text().split())
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"appliance did not start; log:\n{self.log_path.read_text()[-4000:]}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        elif self.proc is not None:
            code = self.proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self, session: str | None = None) -> httpx.Client:
        headers = {"X-API-Version": "4600"}
        if session:
            headers["auth"] = session
        return httpx.Client(base_url=self.url, verify=False, headers=headers, timeout=30)

    def login(self, user: str = "Administrator", password: str = ADMIN_PASSWORD) -> str:
        with self.client() as c:
            r = c.post("/rest/login-sessions", json={"userName": user, "password": password})
            r.raise_for_status()
            return str(r.json()["sessionID"])

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.is_file() else ""

    def api(self, method: str, path: str, *, timeout: float = 30.0, **kwargs: Any) -> Any:
        """One REST call as Administrator, returning the JSON body; made from inside the
        appliance's network namespace when it runs in one (its API is unreachable from outside)."""

        def work() -> Any:
            if self._session is None:
                self._session = self.login()
            with self.client(self._session) as client:
                response = client.request(method, path, **kwargs)
            if response.status_code >= 300:
                raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
            return response.json() if response.content else None

        return work() if self.netns is None else in_namespace(self.netns, work, timeout + 5)

