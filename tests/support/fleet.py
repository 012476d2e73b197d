"""A fleet of simulated BMCs in its own process (``python -m lab.bmc``), stopped by its PID:
how tests and benchmarks make BMCs that can die under the appliance."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def favour(pid: int, niceness: int = -10) -> None:
    """Give ``pid`` the CPU before other work on this machine (as root; otherwise leave it be).
    Simulated BMCs stand for hardware of their own; on a two-CPU machine where another test worker
    boots QEMU servers, they must not answer late because of it."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, niceness)


class FleetProcess:
    def __init__(self, count: int, address_base: str, user: str, password: str, *options: str) -> None:
        """``options``: more ``lab.bmc`` flags, e.g. ``--dead 1 --slow 2``."""
        argv = [sys.executable, "-m", "lab.bmc", "--count", str(count), "--address-base", address_base,
                "--port", "0", "--user", user, "--password", password, *options]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
        favour(self.proc.pid)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the BMC fleet did not start")
        self.bmcs: list[dict[str, Any]] = json.loads(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
