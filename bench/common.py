"""What the long benchmarks share: a deadline for ``--timeout``, SIGTERM as an exception (so that
their ``finally`` clean-ups run), and the machine facts every report starts with."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

GiB = 1 << 30


class OutOfTime(Exception):
    """The run passed --timeout."""


class Terminated(Exception):
    """SIGTERM arrived."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, step: str) -> None:
        if self.left() <= 0:
            raise OutOfTime(f"the run passed --timeout {self.seconds:.0f} s before {step}")


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def file_system(where: Path) -> str:
    """``<fstype> <device> <mount point> (N GiB free)`` of the file system holding ``where``."""
    df = subprocess.run(["df", "--output=fstype,source,target", str(where)], capture_output=True, text=True,
                        timeout=30, check=False).stdout.splitlines()
    fs = " ".join(df[-1].split()) if len(df) > 1 else "unknown"
    return f"{fs} ({shutil.disk_usage(where).free / GiB:.0f} GiB free)"
