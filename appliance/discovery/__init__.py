"""Finding BMCs on a management subnet: an RMCP codec (``rmcp``) and an asyncio scanner (``scanner``)."""

from __future__ import annotations

from appliance.discovery.rmcp import DecodeError
from appliance.discovery.scanner import Discovered, scan

__all__ = ["DecodeError", "Discovered", "scan"]
