from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine

from appliance.config import Settings
from appliance.context import AppContext
from appliance.db.session import make_session_factory
from web.app import create_app


@pytest.fixture
def app_without_db(tmp_path: Path) -> FastAPI:
    """The app's routing table; nothing here opens the database."""
    engine = create_engine("sqlite://")
    settings = Settings(home=tmp_path)
    return create_app(AppContext(settings=settings, engine=engine, session_factory=make_session_factory(engine),
                                 node_name="unit"))
