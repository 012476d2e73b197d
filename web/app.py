"""``create_app(ctx)``: the HTTPS application (REST API + web UI), built from the composition
object rather than module globals, so tests can build as many as they like."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

import appliance
from appliance.context import AppContext
from web import errors
from web.metrics import Metrics
from web.middleware import ApiMiddleware
from web.routers import (
    alerts,
    artifact_bundles,
    audit,
    backups,
    build_plans,
    deployment_plans,
    golden_images,
    metrics,
    netboot,
    os_volumes,
    plan_scripts,
    server_hardware,
    server_profiles,
    sessions,
    tasks,
    users,
    version,
)
from web.ui import routes as ui

ROUTERS = (version, sessions, users, tasks, alerts, audit, backups, server_hardware, server_profiles, netboot,
           golden_images, os_volumes, plan_scripts, build_plans, deployment_plans, artifact_bundles, metrics)


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(
        title="Ingot appliance API",
        version=appliance.__version__,
        description="OneView / Image Streamer compatible REST API of the Ingot provisioning appliance.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.ctx = ctx
    app.state.metrics = Metrics(ctx)
    for module in ROUTERS:
        app.include_router(module.router)
    ui.mount(app)
    errors.install(app)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    # Image uploads stream to disk under their own limit (web/uploads.py), not the JSON body limit.
    app.add_middleware(ApiMiddleware, ctx=ctx, metrics=app.state.metrics, upload_paths=(golden_images.PATH,))
    return app
