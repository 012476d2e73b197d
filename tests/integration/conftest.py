"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import Cli
from tests.support.live import LiveAppliance


@pytest.fixture
def cli(live: LiveAppliance, tmp_path: Path) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(live, tmp_path / "cli" / "session.json", work)


@pytest.fixture
def admin_cli(cli: Cli) -> Cli:
    result = cli.login()
    assert result.returncode == 0, result.stderr
    return cli
