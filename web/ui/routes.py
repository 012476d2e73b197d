"""Web UI routes (placeholder until the UI pages land)."""

from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    return None
