"""The clock is injected wherever time decides behaviour (leases, session expiry) so tests don't wait."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from appliance.db.base import utcnow

Clock = Callable[[], datetime]
system_clock: Clock = utcnow
