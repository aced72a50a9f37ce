"""The FastAPI app: ``create_app(settings)`` builds one; ``app`` is built from the environment.

Run it with ``hycas serve`` (or ``uvicorn service.main:app``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from service.api.errors import install_error_handlers
from service.api.routes import batches, defaults, health, jobs, metrics, models, page, preview
from service.core.config import Settings
from service.metrics import RequestMetricsMiddleware
from service.runtime import create_runtime
from workers.model_cache import ModelSource
from workers.version import package_version

DOCS_ASSETS_URL = "/docs-assets"
"""Where the gateway serves the Swagger UI and ReDoc scripts, styles and icon."""


def create_app(
    settings: Settings | None = None, model_source: ModelSource | None = None
) -> FastAPI:
    """The API for ``settings`` (default: from the environment); models from ``model_source``
    (default: the model repository)."""
    settings = settings or Settings()
    runtime = create_runtime(settings, model_source)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        runtime.close()

    # Swagger UI and ReDoc from the assets fastapi-offline ships: /docs works with no internet.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS_URL,
        swagger_ui_parameters={"validatorUrl": None},
        title="HyCAS Certify",
        version=package_version(),
        description="Certified L2 robustness of image classifiers: randomized smoothing and "
        "Lipschitz margin certificates for HyCAS models.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(RequestMetricsMiddleware)
    for router in (
        jobs.router,
        preview.router,
        defaults.router,
        batches.router,
        models.router,
        health.router,
        metrics.router,
        page.router,
    ):
        app.include_router(router)
    # The page at / and its script and style: static files of the package, nothing external.
    app.mount(page.WEB_URL, StaticFiles(directory=page.WEB_DIRECTORY), name="web")
    return app


app = create_app()
