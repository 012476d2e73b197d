from __future__ import annotations

import io
import json
import logging

import pytest

from appliance import logs


@pytest.mark.parametrize("message, secret", [
    ('login body {"userName": "a", "password": "hunter22"}', "hunter22"),
    ("auth=AbC123sessionid", "AbC123sessionid"),
    ("token ingot_abcdefghijklmnop used", "abcdefghijklmnop"),
    ("connecting to postgresql://ingot:dbpass@10.0.0.1/ingot", "dbpass"),
    ("Authorization: Bearer-ish secret=topsecret", "topsecret"),
])
def test_redact(message: str, secret: str) -> None:
    assert secret not in logs.redact(message)


def test_json_lines_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("INFO", "json", stream)
        logging.getLogger("t").info("user %s password=%s", "bob", "hunter22", extra={"request_id": "r1"})
        try:
            raise ValueError("password=inexception")
        except ValueError:
            logging.getLogger("t").exception("boom")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["msg"] == "user bob password=***" and lines[0]["request_id"] == "r1"
    assert "inexception" not in stream.getvalue()
