"""Request-scoped dependencies: the transaction, the caller, and the role a route needs.

Every route under /rest (except the few public ones listed in ``PUBLIC_ROUTES``) depends on
``require(<role>)``; tests/unit/web/test_route_roles.py fails for a route that forgets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from appliance.context import AppContext
from appliance.errors import SessionInvalid
from appliance.roles import Role
from appliance.services.auth import AuthService, Principal

UI_COOKIE = "ingot_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_ROUTES = frozenset({
    ("GET", "/rest/version"), ("POST", "/rest/login-sessions"), ("GET", "/rest/health"),
    ("GET", "/ui/login"), ("POST", "/ui/login"),
})


def app_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


AppDep = Annotated[AppContext, Depends(app_context)]


def db_session(ctx: AppDep) -> Iterator[Session]:
    """One transaction per request: committed if the route returns, rolled back if it raises."""
    session = ctx.session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# scope="function": commit before the response is sent. With FastAPI's default ("request") the
# commit runs after the response has gone out, so a client that follows a 202 at once (the HPE
# SDK's TaskMonitor does) could ask for a task that is not committed yet and get a 404.
DbDep = Annotated[Session, Depends(db_session, scope="function")]


def credential_from(request: HTTPConnection) -> tuple[str | None, bool]:
    """(credential, from_cookie). The OneView ``auth`` header wins, then a Bearer token, then the
    UI cookie."""
    header = request.headers.get("auth")
    if header:
        return header.strip(), False
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip(), False
    return request.cookies.get(UI_COOKIE), True


def current_principal(request: Request, db: DbDep, ctx: AppDep) -> Principal:
    credential, from_cookie = credential_from(request)
    principal = AuthService(db, ctx.settings.sessions, ctx.clock).resolve(credential)
    # A cookie rides along on any request the browser makes, so a state-changing call through it
    # must also prove it came from our own page (CSRF token from the page, in a header).
    if (from_cookie and request.method not in SAFE_METHODS
            and (not principal.csrf_token or request.headers.get(CSRF_HEADER) != principal.csrf_token)):
        raise SessionInvalid("The request did not carry this session's CSRF token.")
    request.state.principal_name = principal.name
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require(role: Role) -> Callable[[Principal], Principal]:
    def check(principal: PrincipalDep) -> Principal:
        principal.require(role)
        return principal

    check.required_role = role  # type: ignore[attr-defined]  # read by the route-role test
    return check


ReadOnly = Annotated[Principal, Depends(require(Role.READ_ONLY))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.INFRASTRUCTURE_ADMINISTRATOR))]
