"""Model versions (admin): list them, activate one, roll back to the one before."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from metarec.serving.deps import KeyRequired, Service
from metarec.serving.schemas import Activated, ModelVersion

router = APIRouter()


@router.get("/models", response_model=list[ModelVersion], dependencies=[KeyRequired])
def models(s: Service) -> list[ModelVersion]:
    """The versions this service may serve (registry folders are scanned again)."""
    s.registry.rescan()
    return [ModelVersion(**v) for v in s.registry.versions()]


@router.post(
    "/models/{version}/activate",
    response_model=Activated,
    dependencies=[KeyRequired],
)
def activate(version: str, s: Service) -> Activated:
    """Atomically switch the served model; requests in flight finish on the old one."""
    try:
        model = s.registry.activate(version)
    except KeyError:
        raise HTTPException(404, f"version: no model version {version!r}") from None
    s.metrics.model_info(model.version)
    return Activated(active=model.version, previous=s.registry.previous)


@router.post("/models/rollback", response_model=Activated, dependencies=[KeyRequired])
def rollback(s: Service) -> Activated:
    """Back to the version active before the last activation."""
    try:
        model = s.registry.rollback()
    except LookupError as e:
        raise HTTPException(409, str(e)) from None
    s.metrics.model_info(model.version)
    return Activated(active=model.version, previous=s.registry.previous)
