"""The web UI: server-rendered pages over the same services as the REST API.

Theory of operation
-------------------
- Pages are Jinja2 templates (autoescaped) rendered here from service calls; there is no front-end
  build and nothing is loaded from outside the appliance. ``static/ui.js`` adds the live parts:
  it polls ``GET /rest/tasks/{id}`` for every task on the page that is still active and updates
  its progress bar and state badge, and it sends the few state-changing buttons (cancel a task,
  clear an alert, start a backup) to the REST API.
- Signing in (``POST /ui/login``) opens a login session of kind ``ui`` whose id goes into the
  ``ingot_session`` cookie (HttpOnly, Secure, SameSite=Strict). Each page resolves that cookie in
  its own unit of work and checks the role it needs with ``Principal.require``. Without a valid
  session a page answers 303 to ``/ui/login?next=<page>``; ``next`` is only ever followed to a
  relative ``/ui/`` path.
- CSRF: the session's token is in ``<meta name="csrf-token">``; JS sends it to ``/rest`` as
  ``X-CSRF-Token`` (checked by ``web.deps.current_principal``) and every form posting to
  ``/ui/...`` carries it as the ``csrf`` field, checked here. The login form has no session yet,
  so it uses a double-submit token (a short-lived cookie plus the same value in the form).
- :class:`UiRoute` turns errors into pages: a missing session into the login redirect, an
  ``ApplianceError`` into a friendly page with that error's HTTP status, a bad query parameter
  into a 400 page. It also puts the security headers (CSP without inline script or style,
  ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin``) on every UI response.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, FastAPI, Form, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

import appliance
from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.errors import (
    ApplianceError,
    AuthenticationFailed,
    Forbidden,
    InvalidInput,
    NotFound,
    SessionInvalid,
)
from appliance.query import CollectionQuery, Condition, Op
from appliance.roles import Role
from appliance.services.alerts import AlertService
from appliance.services.audit import AuditService
from appliance.services.auth import AuthService, Principal
from appliance.services.backups import BackupService
from appliance.services.tasks import TaskService
from appliance.services.users import UserService
from appliance.tasks.states import ACTIVE_STATES, TaskState
from web.deps import UI_COOKIE, app_context
from web.schemas.common import ts

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
LOGIN_CSRF_COOKIE = "ingot_login_csrf"
PAGE_SIZE = 50
DEFAULT_NEXT = "/ui/"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
NAV = (
    ("dashboard", "Dashboard", "/ui/"),
    ("servers", "Servers", "/ui/servers"),
    ("netboot", "Network boot", "/ui/netboot"),
    ("images", "Images", "/ui/images"),
    ("plans", "Plans", "/ui/plans"),
    ("profiles", "Profiles", "/ui/profiles"),
    ("tasks", "Tasks", "/ui/tasks"),
    ("alerts", "Alerts", "/ui/alerts"),
    ("activity", "Activity", "/ui/activity"),
    ("backups", "Backups", "/ui/backups"),
    ("users", "Users", "/ui/users"),
)
ACTIVE_STATE_NAMES = frozenset(s.value for s in ACTIVE_STATES)
CANCELLABLE = frozenset({"New", "Running", "Pending", "Starting"})  # as web.schemas.tasks isCancellable
SEVERITY_ORDER = ("Critical", "Warning", "Unknown", "OK")
_SAFE_NEXT = re.compile(r"/ui/[A-Za-z0-9/_.~%=&?+-]*")


class LoginRequired(Exception):
    """No valid UI session: the page answers with a redirect to the login form."""


class CsrfRejected(ApplianceError):
    """A form posted to /ui without this session's CSRF token. Only the UI raises it."""

    msg_fmt = "The form did not carry this session's CSRF token; it may be stale or come from another site."
    error_code = "CSRF_TOKEN_INVALID"
    http_status = 403
    default_actions = ("Reload the page and submit the form again.",)


# --- templates -----------------------------------------------------------------------------------
def _when(value: datetime | None) -> Markup:
    """A timestamp readable as it is (UTC); ui.js rewrites it into the browser's local time."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}">{}</time>').format(ts(utc), utc.strftime("%Y-%m-%d %H:%M:%S UTC"))


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _size(n: int | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(("html",), default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, duration=_duration, size=_size, slug=_slug)
    env.globals.update(
        nav=NAV, version=appliance.__version__, active_states=ACTIVE_STATE_NAMES, cancellable=CANCELLABLE,
        Role=Role,
    )
    return env


TEMPLATES = _environment()


def render(request: Request, template: str, *, principal: Principal | None, page: str = "", status: int = 200,
           **values: Any) -> HTMLResponse:
    body = TEMPLATES.get_template(template).render(principal=principal, page=page, **values)
    return HTMLResponse(body, status_code=status)


# --- the route class: error pages, login redirects, security headers -------------------------------
def _secure(response: Response) -> Response:
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def safe_next(target: str | None) -> str:
    """Where to go after logging in: only a relative path inside the UI (no open redirect)."""
    if not target or not _SAFE_NEXT.fullmatch(target) or "//" in target or ".." in target:
        return DEFAULT_NEXT
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/"):
        return DEFAULT_NEXT
    return target


def login_redirect(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = safe_next(here) if request.method == "GET" else DEFAULT_NEXT
    return RedirectResponse("/ui/login?" + urlencode({"next": target}), status_code=303)


def _error_page(request: Request, error: ApplianceError) -> HTMLResponse:
    principal: Principal | None = getattr(request.state, "ui_principal", None)
    title = {400: "Invalid request", 401: "Not signed in", 403: "Insufficient role", 404: "Not found",
             409: "Conflict", 412: "Changed meanwhile",
             413: "Request too large"}.get(error.http_status, "Something went wrong")
    if isinstance(error, CsrfRejected):
        title = "Form rejected"
    return render(request, "error.html", principal=principal, status=error.http_status, title=title,
                  error=error, forbidden=isinstance(error, Forbidden))


class UiRoute(APIRoute):
    """Routes of the UI router: errors become pages, every response gets the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                response = login_redirect(request)
            except ApplianceError as exc:
                response = _error_page(request, exc)
            except StarletteHTTPException as exc:
                if not isinstance(exc.__cause__, ApplianceError):  # e.g. a body limit hit while parsing
                    raise
                response = _error_page(request, exc.__cause__)
            except RequestValidationError as exc:
                fields = ", ".join(".".join(str(p) for p in e.get("loc", ())[1:]) or "request" for e in exc.errors())
                response = _error_page(request, InvalidInput(reason=f"check {fields}"))
            except Exception:
                log.exception("UI page %s failed", request.url.path)
                response = _error_page(request, ApplianceError("An unexpected error occurred; see the appliance log."))
            return _secure(response)

        return guarded


class UiStaticFiles(StaticFiles):
    """``/ui/static``: the same security headers on the CSS and JS."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


router = APIRouter(route_class=UiRoute, include_in_schema=False)


# --- per-page session and CSRF ---------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    """One page request: its transaction, its caller, and the app's context."""

    request: Request
    db: Session
    ctx: AppContext
    principal: Principal

    def render(self, template: str, page: str, status: int = 200, **values: Any) -> HTMLResponse:
        return render(self.request, template, principal=self.principal, page=page, status=status, **values)

    def may(self, role: Role) -> bool:
        return self.principal.role.allows(role)


def _resolve(request: Request, db: Session, ctx: AppContext) -> Principal:
    try:
        principal = AuthService(db, ctx.settings.sessions, ctx.clock).resolve(request.cookies.get(UI_COOKIE))
    except SessionInvalid:
        raise LoginRequired() from None
    if principal.via != "session":  # an API token in the cookie is not a UI login
        raise LoginRequired()
    request.state.principal_name = principal.name  # the access log and audit row name the caller
    request.state.ui_principal = principal
    return principal


@contextmanager
def view(request: Request, role: Role, csrf: str | None = None, *, check_csrf: bool = False) -> Iterator[View]:
    """Open a unit of work, resolve the UI session, check the role (and the form's CSRF token)."""
    ctx = app_context(request)
    with unit_of_work(ctx.session_factory) as db:
        principal = _resolve(request, db, ctx)
        if check_csrf and not (principal.csrf_token and csrf
                               and hmac.compare_digest(principal.csrf_token.encode(), csrf.encode())):
            raise CsrfRejected()
        principal.require(role)
        yield View(request=request, db=db, ctx=ctx, principal=principal)


CsrfField = Annotated[str, Form()]


def _login_form(request: Request, next_url: str, status: int = 200, error: str | None = None,
                user_name: str = "") -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", principal=None, status=status, title="Sign in", next_url=next_url,
                      login_csrf=token, error=error, user_name=user_name)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path="/ui/login", secure=True, httponly=True,
                        samesite="strict")
    return response


# --- login / logout --------------------------------------------------------------------------------
@router.get("/ui/login")
def login_page(request: Request, next_url: Annotated[str | None, Query(alias="next")] = None) -> Response:
    target = safe_next(next_url)
    ctx = app_context(request)
    if request.cookies.get(UI_COOKIE):
        try:
            with unit_of_work(ctx.session_factory) as db:
                _resolve(request, db, ctx)
            return RedirectResponse(target, status_code=303)  # already signed in
        except LoginRequired:
            pass
    return _login_form(request, target)


@router.post("/ui/login")
def login_submit(
    request: Request,
    user_name: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    next_url: Annotated[str, Form(alias="next", max_length=2048)] = DEFAULT_NEXT,
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    target = safe_next(next_url)
    request.state.audit_user = user_name[:64]
    request.state.audit_message = "login (web UI)"
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not csrf or not hmac.compare_digest(expected.encode(), csrf.encode()):
        return _login_form(request, target, status=403, user_name=user_name,
                           error="The sign-in form expired. Please try again.")
    if not user_name or not password:
        return _login_form(request, target, status=401, user_name=user_name,
                           error="Enter your user name and password.")
    ctx = app_context(request)
    client = request.client.host if request.client else ""
    try:
        with unit_of_work(ctx.session_factory) as db:
            session_id, _ = AuthService(db, ctx.settings.sessions, ctx.clock).login(
                user_name, password, kind="ui", source_ip=client)
    except AuthenticationFailed as exc:
        return _login_form(request, target, status=401, user_name=user_name, error=exc.message)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(UI_COOKIE, session_id, path="/", secure=True, httponly=True, samesite="strict")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui/login", secure=True, httponly=True, samesite="strict")
    return response


@router.post("/ui/logout")
def logout(request: Request, csrf: CsrfField = "") -> Response:
    with view(request, Role.READ_ONLY, csrf, check_csrf=True) as v:
        cookie = request.cookies.get(UI_COOKIE)
        if cookie:
            AuthService(v.db, v.ctx.settings.sessions, v.ctx.clock).logout(cookie)
        request.state.audit_message = "logout (web UI)"
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(UI_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


# --- pages ---------------------------------------------------------------------------------------
@router.get("/ui")
def ui_root() -> RedirectResponse:
    return RedirectResponse(DEFAULT_NEXT, status_code=303)


@router.get("/ui/")
def dashboard(request: Request) -> Response:
    with view(request, Role.READ_ONLY) as v:
        tasks = TaskService(v.db, v.ctx.clock)
        alerts = AlertService(v.db, v.ctx.clock)
        task_counts = tasks.counts()
        alert_counts = alerts.active_counts()
        user_count = None
        if v.may(Role.INFRASTRUCTURE_ADMINISTRATOR):
            user_count = UserService(v.db, v.ctx.clock).list(CollectionQuery(count=0)).total
        recent = tasks.list(CollectionQuery(count=10)).members
        active_alerts = alerts.list(CollectionQuery(
            count=10, conditions=(Condition("alertState", Op.NE, "Cleared"),))).members
        return v.render(
            "dashboard.html", "dashboard", title="Dashboard",
            task_counts=_ordered_task_counts(task_counts), task_total=sum(task_counts.values()),
            active_total=sum(n for s, n in task_counts.items() if s in ACTIVE_STATE_NAMES),
            alert_counts=[(s, alert_counts.get(s, 0)) for s in SEVERITY_ORDER if s != "OK" or alert_counts.get(s)],
            user_count=user_count, tasks=recent, alerts=active_alerts,
        )


def _ordered_task_counts(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    order = [s.value for s in TaskState]
    return sorted(((s, n) for s, n in counts.items() if n), key=lambda item: (
        order.index(item[0]) if item[0] in order else len(order), item[0]))


def _start(start: int | None) -> int:
    return max(0, start or 0)


@router.get("/ui/tasks")
def tasks_page(request: Request, state: Annotated[str | None, Query(max_length=32)] = None,
               start: Annotated[int | None, Query(ge=0)] = None) -> Response:
    states = [s.value for s in TaskState]
    if state and state not in states:
        raise InvalidInput(reason=f"state must be one of {', '.join(states)}")
    with view(request, Role.READ_ONLY) as v:
        conditions = (Condition("taskState", Op.EQ, state),) if state else ()
        page = TaskService(v.db, v.ctx.clock).list(
            CollectionQuery(start=_start(start), count=PAGE_SIZE, conditions=conditions))
        return v.render("tasks.html", "tasks", title="Tasks", tasks=page.members,
                        states=states, state=state or "", can_cancel=v.may(Role.OPERATOR),
                        watch_new=not state and page.start == 0,
                        pager=_pager("/ui/tasks", page.start, page.total, {"state": state}))


@router.get("/ui/tasks/{task_id}")
def task_page(request: Request, task_id: str) -> Response:
    with view(request, Role.READ_ONLY) as v:
        svc = TaskService(v.db, v.ctx.clock)
        task = svc.get(task_id)
        parent = svc.get(task.parent_id) if task.parent_id else None
        return v.render("task.html", "tasks", title=task.name, task=task, children=svc.children(task.id),
                        parent=parent, can_cancel=v.may(Role.OPERATOR))


@router.get("/ui/alerts")
def alerts_page(request: Request, state: Annotated[str | None, Query(max_length=16)] = None,
                start: Annotated[int | None, Query(ge=0)] = None) -> Response:
    choices = ("Active", "Locked", "Cleared")
    if state and state not in choices:
        raise InvalidInput(reason=f"state must be one of {', '.join(choices)}")
    with view(request, Role.READ_ONLY) as v:
        conditions = (Condition("alertState", Op.EQ, state),) if state else ()
        page = AlertService(v.db, v.ctx.clock).list(
            CollectionQuery(start=_start(start), count=PAGE_SIZE, conditions=conditions))
        return v.render("alerts.html", "alerts", title="Alerts", alerts=page.members, states=choices,
                        state=state or "", can_clear=v.may(Role.OPERATOR),
                        pager=_pager("/ui/alerts", page.start, page.total, {"state": state}))


@router.get("/ui/activity")
def activity_page(request: Request, start: Annotated[int | None, Query(ge=0)] = None) -> Response:
    with view(request, Role.INFRASTRUCTURE_ADMINISTRATOR) as v:
        page = AuditService(v.db, v.ctx.clock).list(CollectionQuery(start=_start(start), count=PAGE_SIZE))
        return v.render("activity.html", "activity", title="Activity", entries=page.members,
                        pager=_pager("/ui/activity", page.start, page.total, {}))


@router.get("/ui/backups")
def backups_page(request: Request) -> Response:
    with view(request, Role.INFRASTRUCTURE_ADMINISTRATOR) as v:
        tasks = TaskService(v.db, v.ctx.clock)
        backups = BackupService(v.db, v.ctx.settings.home, v.ctx.clock, tasks).list(CollectionQuery(count=100))
        recent = tasks.list(CollectionQuery(count=5, conditions=(Condition("kind", Op.EQ, "backup"),)))
        return v.render("backups.html", "backups", title="Backups", backups=backups.members,
                        backup_total=backups.total, tasks=recent.members)


# --- users ---------------------------------------------------------------------------------------
def _users_page(v: View, status: int = 200, error: ApplianceError | None = None, notice: str | None = None,
                form: Mapping[str, str] | None = None) -> HTMLResponse:
    users = UserService(v.db, v.ctx.clock).list(CollectionQuery())
    return v.render("users.html", "users", status=status, title="Users", users=users.members,
                    roles=[r.value for r in Role], error=error, notice=notice,
                    form=dict(form or {"user_name": "", "full_name": "", "email": "", "role": Role.READ_ONLY.value}))


@router.get("/ui/users")
def users_page(request: Request, created: Annotated[str | None, Query(max_length=64)] = None,
               deleted: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    notice = f"User {created} was created." if created else f"User {deleted} was deleted." if deleted else None
    with view(request, Role.INFRASTRUCTURE_ADMINISTRATOR) as v:
        return _users_page(v, notice=notice)


@router.post("/ui/users")
def create_user(
    request: Request,
    csrf: CsrfField = "",
    user_name: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    role: Annotated[str, Form(max_length=64)] = Role.READ_ONLY.value,
    full_name: Annotated[str, Form(max_length=255)] = "",
    email: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    form = {"user_name": user_name, "full_name": full_name, "email": email, "role": role}
    try:
        with view(request, Role.INFRASTRUCTURE_ADMINISTRATOR, csrf, check_csrf=True) as v:
            if role not in {r.value for r in Role}:
                raise InvalidInput(reason=f"role must be one of {', '.join(r.value for r in Role)}")
            if not password:
                raise InvalidInput(reason="a password is required")
            user = UserService(v.db, v.ctx.clock).create(user_name, password, Role(role), full_name, email)
            request.state.audit_message = f"created user {user.name} (web UI)"
            name = user.name
    except (CsrfRejected, Forbidden):
        raise
    except ApplianceError as exc:  # show the problem next to the form, keeping what was typed
        with view(request, Role.INFRASTRUCTURE_ADMINISTRATOR) as v:
            return _users_page(v, status=exc.http_status, error=exc, form=form)
    return RedirectResponse("/ui/users?" + urlencode({"created": name}), status_code=303)


@router.post("/ui/users/{name}/delete")
def delete_user(request: Request, name: str, csrf: CsrfField = "") -> Response:
    try:
        with view(request, Role.INFRASTRUCTURE_ADMINISTRATOR, csrf, check_csrf=True) as v:
            svc = UserService(v.db, v.ctx.clock)
            user = svc.get(name)
            if user.id == v.principal.user_id:
                raise InvalidInput(reason="you cannot delete the account you are signed in with")
            svc.delete(user.id)
            request.state.audit_message = f"deleted user {user.name} (web UI)"
            deleted = user.name
    except (CsrfRejected, Forbidden):
        raise
    except ApplianceError as exc:
        with view(request, Role.INFRASTRUCTURE_ADMINISTRATOR) as v:
            return _users_page(v, status=exc.http_status, error=exc)
    return RedirectResponse("/ui/users?" + urlencode({"deleted": deleted}), status_code=303)


# --- helpers and mounting ------------------------------------------------------------------------
@dataclass(frozen=True)
class Pager:
    start: int
    end: int
    total: int
    prev_url: str | None
    next_url: str | None


def _pager(base: str, start: int, total: int, params: Mapping[str, str | None]) -> Pager:
    def url(at: int) -> str:
        query = {k: v for k, v in params.items() if v}
        if at:
            query["start"] = str(at)
        return base + (f"?{urlencode(query)}" if query else "")

    prev_url = url(max(0, start - PAGE_SIZE)) if start > 0 else None
    next_url = url(start + PAGE_SIZE) if start + PAGE_SIZE < total else None
    return Pager(start=start, end=min(total, start + PAGE_SIZE), total=total, prev_url=prev_url, next_url=next_url)


@router.get("/ui/{rest:path}")
def not_found(request: Request, rest: str) -> Response:
    """Unknown UI paths: the login redirect first (nothing is revealed), then a 404 page."""
    with view(request, Role.READ_ONLY):
        pass
    raise NotFound(kind="page", ident=request.url.path)


def mount(app: FastAPI) -> None:
    """Add ``/ui/static`` and the UI pages to the app (called by ``web.app.create_app``)."""
    from web.ui import hardware, images, netboot, plans, profiles  # here, not at the top: they build on this module

    app.mount("/ui/static", UiStaticFiles(directory=HERE / "static"), name="ui-static")
    app.include_router(hardware.router)  # before ``router``: its catch-all 404 must come last
    app.include_router(netboot.router)
    app.include_router(images.router)
    app.include_router(plans.router)
    app.include_router(profiles.router)
    app.include_router(router)
