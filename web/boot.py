"""The plain-HTTP listener reserved for boot traffic (iPXE scripts, kernels, images, agent
callbacks). The network-boot issue mounts its routes here; until then it answers only a probe."""

from __future__ import annotations

from fastapi import FastAPI

from appliance.context import AppContext
from web import errors


def create_boot_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(title="Ingot boot", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    errors.install(app)

    @app.get("/boot/ping")
    def ping() -> dict[str, str]:
        return {"status": "OK"}

    return app
