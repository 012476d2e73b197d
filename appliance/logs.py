"""Structured logging with secrets scrubbed from every record.

Services never log secrets on purpose; the redaction filter is the second line of defence for
things that slip into messages (a password in a URL, an ``auth`` header, a token).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from appliance.security import TOKEN_PREFIX

_SECRET_PATTERNS = [
    # key=value / "key": "value" for keys that carry secrets
    re.compile(
        r"""(?P<key>["']?(?:password|passwd|secret|sessionID|session_id|auth|token|authorization|csrf\w*)["']?"""
        r"""\s*[:=]\s*["']?)(?P<value>[^"'\s,&}]+)""",
        re.IGNORECASE,
    ),
    re.compile(r"(?P<key>" + re.escape(TOKEN_PREFIX) + r")(?P<value>[A-Za-z0-9_\-]+)"),
    re.compile(r"(?P<key>://[^/\s:@]+:)(?P<value>[^@\s/]+)(?=@)"),  # user:password@host
]
MASK = "***"


def redact(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group("key") + MASK, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus any ``extra`` fields."""

    _standard = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._standard and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_text:
            entry["exc"] = record.exc_text
        elif record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry)


def configure(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Access lines are produced by our own middleware (with the user and request id), not uvicorn.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # The sh package logs every process it starts at INFO; golden_images/qemu_img.py reports failures itself.
    logging.getLogger("sh").setLevel(logging.WARNING)
