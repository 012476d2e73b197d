"""A real Redfish BMC for tests: ``sushy-emulator`` (sushy-tools) with its fake driver.

The emulator listens on 127.0.0.1 on a free port, plain HTTP, with HTTP basic auth from an
htpasswd file (bcrypt is the only digest sushy-tools accepts). The fake driver keeps one
system in memory; it applies power changes 1-11 s after the request on purpose, so tests must
let verification poll (machine-notes §5d).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.support.ipmi_sim import free_port

USER = "root"
PASSWORD = "s3cret-redfish"
SYSTEM_UUID = "27946b59-9e44-4fa7-8e91-f3527a1ef094"
SYSTEM_MAC = "52:54:00:77:01:20"


class SushyEmulator:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ingot-sushy-"))
        self.port = free_port(socket.SOCK_STREAM)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        (self.root / "htpasswd").write_text(f"{USER}:{digest}\n")
        (self.root / "state").mkdir()
        config = self.root / "emulator.conf"
        config.write_text(
            f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
            f"SUSHY_EMULATOR_LISTEN_PORT = {self.port}\n"
            f"SUSHY_EMULATOR_STATE_DIR = {str(self.root / 'state')!r}\n"
            f"SUSHY_EMULATOR_FAKE_DRIVER = True\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(self.root / 'htpasswd')!r}\n"
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': {SYSTEM_UUID!r}, 'name': 'node-a', 'power_state': 'Off',"
            f" 'external_notifier': False, 'nics': [{{'mac': {SYSTEM_MAC!r}, 'ip': '10.77.1.20'}}]}}]\n"
        )
        return config

    def start(self) -> None:
        config = self._write_config()
        exe = Path(sys.executable).with_name("sushy-emulator")
        log = open(self.root / "emulator.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([str(exe), "--config", str(config), "--fake"], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONWARNINGS": "ignore"})
        log.close()
        for _ in range(150):  # up to ~15 s
            if self.proc.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited: {(self.root / 'emulator.log').read_text()}")
            try:
                if httpx.get(f"{self.url}/redfish/v1/", timeout=1).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("sushy-emulator did not answer within 15 s")

    def system(self) -> dict[str, object]:
        """The system as the emulator reports it (for cross-checks)."""
        r = httpx.get(f"{self.url}/redfish/v1/Systems/{SYSTEM_UUID}", auth=(USER, PASSWORD), timeout=5)
        r.raise_for_status()
        data: dict[str, object] = r.json()
        return data

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module", name="sushy_emulator")
def sushy_emulator_fixture() -> Iterator[SushyEmulator]:
    """A running emulator for the test module (import this name into the module to use ``sushy_emulator``)."""
    emulator = SushyEmulator()
    try:
        emulator.start()
        yield emulator
    finally:
        emulator.stop()
