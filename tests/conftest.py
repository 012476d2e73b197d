"""Shared fixtures.

Everything that touches the database runs once per backend: ``sqlite`` and ``postgresql`` (a
real server started for the session, see tests/support/postgres.py). Choose with
``--backends=sqlite`` while iterating; ``make test`` runs both.

Isolation: each backend's schema is migrated once per session; after every test all tables are
emptied. (Rolling back one outer transaction is not enough here: the task runner and the API use
many sessions on several threads.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete

from appliance.config import Settings
from appliance.context import AppContext
from appliance.db import migrate
from appliance.db.base import Base
from appliance.db.session import make_engine, make_session_factory, unit_of_work
from appliance.roles import Role
from appliance.services.users import UserService
from tests.support.browser import page  # noqa: F401 - fixture for the browser tests
from tests.support.live import ADMIN_PASSWORD, LiveAppliance
from tests.support.postgres import PostgresServer
from tests.support.runner import runner  # noqa: F401 - fixture for every test module
from web.app import create_app

BACKENDS = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backends", default=",".join(BACKENDS),
                     help="comma-separated database backends to run against (sqlite,postgresql)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        chosen = [b for b in metafunc.config.getoption("--backends").split(",") if b]
        unknown = set(chosen) - set(BACKENDS)
        if unknown:
            raise pytest.UsageError(f"unknown backends: {unknown}")
        if metafunc.definition.get_closest_marker("one_backend"):
            chosen = chosen[:1]
        metafunc.parametrize("backend", chosen, scope="session")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow tests (QEMU, guestfish, live appliances) first, each file's tests kept
    together and in order: the xdist workers (``--dist loadfile``) start on the long files and fill
    the end with short ones, instead of finishing on a long file alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order within each group kept


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh database for this backend (each live appliance gets its own, see ``fresh_database_url``)."""
    if backend == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.create_database()
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'ingot.db'}"


@pytest.fixture
def fresh_database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """For live appliances: None means "the default SQLite under INGOT_HOME"."""
    if backend == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.create_database()
    return None


@pytest.fixture(scope="session")
def migrated_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url, node_name="test-node",
                    tasks={"lease_ttl_s": 3, "poll_interval_s": 0.05})


@pytest.fixture
def ctx(settings: Settings, migrated_engine: Engine) -> Iterator[AppContext]:
    settings.home.mkdir(parents=True, exist_ok=True)
    context = AppContext(settings=settings, engine=migrated_engine,
                         session_factory=make_session_factory(migrated_engine), node_name="test-node")
    yield context
    with unit_of_work(context.session_factory) as db:
        for table in reversed(Base.metadata.sorted_tables):
            db.execute(delete(table))


@pytest.fixture
def admin(ctx: AppContext) -> str:
    """Creates Administrator; returns the password."""
    with unit_of_work(ctx.session_factory) as db:
        UserService(db).create("Administrator", ADMIN_PASSWORD, Role.INFRASTRUCTURE_ADMINISTRATOR)
    return ADMIN_PASSWORD


@pytest.fixture
def api(ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), base_url="https://testserver") as client:
        yield client


def login(client: TestClient, user: str = "Administrator", password: str = ADMIN_PASSWORD) -> dict[str, str]:
    r = client.post("/rest/login-sessions", json={"userName": user, "password": password})
    assert r.status_code == 200, r.text
    return {"auth": r.json()["sessionID"], "X-API-Version": "4600"}


@pytest.fixture
def admin_headers(api: TestClient, admin: str) -> dict[str, str]:
    return login(api)


@pytest.fixture
def make_user(ctx: AppContext, api: TestClient, admin: str):  # type: ignore[no-untyped-def]
    """make_user(role) -> headers of a fresh session for a new user with that role."""
    counter = iter(range(1000))

    def _make(role: Role) -> dict[str, str]:
        name = f"user{next(counter)}"
        with unit_of_work(ctx.session_factory) as db:
            UserService(db).create(name, "Passw0rd-" + name, role)
        return login(api, name, "Passw0rd-" + name)

    return _make


@pytest.fixture
def live(tmp_path: Path, fresh_database_url: str | None) -> Iterator[LiveAppliance]:
    """A running appliance process (with the test task handlers) on loopback."""
    appliance = LiveAppliance(tmp_path / "live-home", fresh_database_url)
    appliance.start()
    try:
        yield appliance
    finally:
        appliance.stop()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(os.environ.get("INGOT_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path
