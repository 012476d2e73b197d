"""Running the ``ingot`` CLI as a user does: a subprocess with a private session file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.live import ADMIN_PASSWORD, LiveAppliance

INGOT = Path(sys.executable).with_name("ingot")


class Cli:
    """Runs ``ingot`` with a private session file; stdin is empty unless ``input`` is given."""

    def __init__(self, live: LiveAppliance, config: Path, cwd: Path) -> None:
        self.live = live
        self.config = config
        self.cwd = cwd

    @property
    def ca_cert(self) -> Path:
        return self.live.home / "tls" / "tls.crt"

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
                 config: Path | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        # COLUMNS/LINES: a pytest-xdist worker sets them (80x24); the tests read the CLI's output as
        # a pipe gives it, whoever runs pytest.
        environment = {k: v for k, v in os.environ.items()
                       if not k.startswith("INGOT_") and k not in ("COLUMNS", "LINES")}
        environment["INGOT_CLI_CONFIG"] = str(config or self.config)
        environment.update(env or {})
        return subprocess.run(
            [str(INGOT), *args], input=input, stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True, text=True, env=environment, cwd=self.cwd, timeout=timeout, check=False,
        )

    def login(self, user: str = "Administrator", password: str = ADMIN_PASSWORD,
              config: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self("login", "--host", self.live.url, "--user", user, "--password-stdin",
                    "--ca-cert", str(self.ca_cert), input=password + "\n", config=config)

    def json(self, *args: str, **kwargs: Any) -> Any:
        result = self(*args, "--json", **kwargs)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)
