"""What ``make test`` installs must be present: a missing tool fails the test that needs it with
what to install, never skips it. A skipped test proves nothing, and a skip would hide an install
step missing from the Makefile (a fresh machine's CI would stay green without ever running it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lab.netns import unavailable_reason


def require_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run `make deps-test`", pytrace=False)


def require_files(*paths: Path) -> None:
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make deps-test`", pytrace=False)


def require_lab() -> None:
    """Network namespaces (root, iproute2), which the lab and its tests are built on."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(f"lab networks cannot be made here: {reason} (`make test` runs as root)", pytrace=False)
