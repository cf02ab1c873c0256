"""Probes and metrics: ``/healthz`` (alive), ``/readyz`` (able to answer), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from metarec.serving.deps import Service

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(s: Service) -> JSONResponse:
    """Models loaded and the event store reachable."""
    ok = s.ready and s.store.ping()
    body = {"ready": ok, "model_version": s.registry.active.version}
    return JSONResponse(body, 200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(s: Service) -> PlainTextResponse:
    """Prometheus text: request counts and latencies, adaptation time, model version."""
    body, content_type = s.metrics.render()
    return PlainTextResponse(body, media_type=content_type)
