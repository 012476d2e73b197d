"""``python -m tests.support.serve``: the real ``ingot serve`` code path (settings from INGOT_*),
plus the test task handlers, so a test can run slow tasks in a real appliance process."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from appliance.config import load_settings
from appliance.server import serve
from tests.support.handlers import TEST_HANDLERS

if __name__ == "__main__":
    ready = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    asyncio.run(serve(load_settings(), extra_handlers=TEST_HANDLERS, ready_file=ready))
