"""The HTTP service: ``create_app(settings)`` builds a FastAPI app; models load in its lifespan.

Write endpoints (``POST /events``, admin) need the ``X-API-Key`` header when
``ServeSettings.api_key`` is set. Every body is size-limited before it is parsed, every field
is validated (422 names it), and an unknown user gets a cold-start answer, never a 5xx.
The endpoints live in ``serving/routes/`` (one router per resource), the state they share and
the dependencies that hand it out in ``serving/deps.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from metarec.serving.deps import open_service
from metarec.serving.middleware import BodyLimit, request_metrics
from metarec.serving.routes import ROUTERS
from metarec.serving.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def create_app(settings: ServeSettings) -> FastAPI:
    """The service over ``settings``; nothing is loaded until the app starts (lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = open_service(settings)
        state.metrics.model_info(state.registry.active.version)
        state.ready = True
        app.state.service = state
        yield
        state.ready = False

    app = FastAPI(
        title="metarec",
        summary="Recommendations that adapt to a new user at request time.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.middleware("http")(request_metrics)
    for router in ROUTERS:
        app.include_router(router)
    return app
