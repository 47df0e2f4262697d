"""The app factory: ``create_app(settings, store, submitter)`` wires the HTTP API.

Ports and adapters: the store (SQLite or PostgreSQL) and the submitter (the Ray Jobs API, or
a fake in unit tests) come in from outside; :func:`build_app` is the one place that picks the
real ones for ``sedtune serve``.

Routes: ``GET /health`` (no auth), ``GET /ready``, ``GET /openapi.json``, ``/v1/jobs…`` and
``/v1/schedules…`` (:mod:`service.api.routes_jobs`, :mod:`service.api.routes_schedules`).
Every route but ``/health`` needs a bearer token (:mod:`service.api.auth`); a request body
over ``max_body_bytes`` gets 413 before it is read (:mod:`service.api.limits`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.api.auth import BearerAuthMiddleware, bearer_scheme
from service.api.deps import Services
from service.api.errors import add_service_error_handlers, validation_handler
from service.api.limits import BodyLimitMiddleware
from service.server.jobs import Clock, JobService, utcnow
from service.server.loops import Loop
from service.server.scheduler import Scheduler
from service.server.settings import Settings
from service.server.submitter import RayJobsSubmitter, Submitter, SubmitterError
from service.store.repo import Store

LOG = logging.getLogger(__name__)

API_VERSION = "1"


def create_app(settings: Settings, store: Store, submitter: Submitter, *, background: bool = True,
               clock: Clock = utcnow) -> FastAPI:
    """The FastAPI app.

    Args:
        settings: Resolved settings (tokens must not be empty).
        store: The job store.
        submitter: The cluster port.
        background: Run the reconciler and the scheduler loops while the app runs (unit tests
            call ``app.state.services.jobs.reconcile_once()`` / ``scheduler.tick()`` instead).
        clock: Returns now (aware UTC).
    """
    jobs = JobService(settings, store, submitter, clock)
    svc = Services(settings, store, submitter, jobs, Scheduler(store, jobs, clock))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loops = []
        if background:
            loops = [Loop("sedtune-reconciler", jobs.reconcile_once, settings.reconcile_interval_s).start(),
                     Loop("sedtune-scheduler", svc.scheduler.tick, settings.scheduler_tick_s).start()]
        try:
            yield
        finally:
            for loop in loops:
                loop.stop()

    app = FastAPI(title="sedtune", version=API_VERSION, lifespan=lifespan, openapi_url=None, docs_url=None,
                  redoc_url=None,
                  description="Tune the post-processing of sound event detection models on Ray.")
    app.state.services = svc
    app.add_exception_handler(RequestValidationError, validation_handler)
    add_service_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(BearerAuthMiddleware, tokens=settings.tokens)  # outermost: 401 before any body

    from service.api import routes_jobs, routes_schedules

    app.include_router(routes_jobs.router)
    app.include_router(routes_schedules.router)

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        """Liveness (no auth): the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["service"], dependencies=[Security(bearer_scheme)],
             responses={503: {"description": "the store or Ray cannot be reached"}})
    def ready() -> Any:
        """Readiness: the store and the Ray Jobs API answer."""
        checks = {"db": "ok", "ray": "ok"}
        try:
            store.ping()
        except Exception as e:
            checks["db"] = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        try:
            submitter.ping()
        except SubmitterError as e:
            checks["ray"] = str(e)
        ok = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ok else "not ready", **checks}
        return JSONResponse(status_code=200 if ok else 503, content=body)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> JSONResponse:
        """The OpenAPI document (auth like every route but /health)."""
        return JSONResponse(app.openapi())

    return app


def build_app(settings: Settings) -> FastAPI:
    """The real app of ``sedtune serve``: SQL store at ``settings.db_url``, Ray Jobs API submitter."""
    os.makedirs(settings.service_dir, exist_ok=True)
    legacy = os.path.join(settings.output_roots[0], "mlflow.db")
    if os.path.isfile(legacy) and settings.tracking_uri != f"sqlite:///{legacy}":
        LOG.warning("the embedded MLflow store is now %s (out of the jobs' output tree); the runs logged "
                    "before stay in %s, untouched", settings.tracking_uri, legacy)
    store = Store(settings.db_url)
    return create_app(settings, store, RayJobsSubmitter(settings.ray_address))
