"""Alembic environment: runs against the engine handed over by appliance.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

import appliance.models  # noqa: F401  (registers every table on Base.metadata)
from appliance.db.base import Base

engine: Engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
