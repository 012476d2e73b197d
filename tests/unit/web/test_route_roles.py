"""Every route needs a role, unless it is deliberately public (login, version, health)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI
from fastapi.routing import APIRoute

from web.app import ROUTERS
from web.deps import PUBLIC_ROUTES


def _api_routes(app: FastAPI) -> Iterator[APIRoute]:
    """Routes on the app itself and in every router module it includes (FastAPI may include routers
    lazily, so app.routes alone is not the full list)."""
    for route in app.routes:
        if isinstance(route, APIRoute):
            yield route
    for module in ROUTERS:
        yield from (r for r in module.router.routes if isinstance(r, APIRoute))


def _required_roles(route: APIRoute) -> list[str]:
    found = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        role = getattr(dep.call, "required_role", None)
        if role is not None:
            found.append(str(role))
        stack.extend(dep.dependencies)
    return found


def test_every_rest_route_declares_a_role(app_without_db: FastAPI) -> None:
    checked, missing = 0, []
    for route in _api_routes(app_without_db):
        if not (route.path.startswith("/rest") or route.path == "/metrics"):
            continue
        for method in route.methods:
            checked += 1
            if (method, route.path) in PUBLIC_ROUTES:
                assert not _required_roles(route), f"{method} {route.path} is public but asks for a role"
            elif not _required_roles(route):
                missing.append(f"{method} {route.path}")
    assert checked >= 25  # the walk really saw the API
    assert missing == []


def test_public_routes_exist(app_without_db: FastAPI) -> None:
    paths = {(m, r.path) for r in _api_routes(app_without_db) for m in r.methods}
    assert {p for p in PUBLIC_ROUTES if p[1].startswith("/rest")} <= paths


def test_a_route_without_role_is_caught() -> None:
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/rest/oops")
    def oops() -> None:
        return None

    assert [r for r in router.routes if isinstance(r, APIRoute) and not _required_roles(r)]
