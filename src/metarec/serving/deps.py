"""The service's state and the FastAPI dependencies that hand its parts to the routes.

Routes never reach into ``request.app.state`` themselves: they declare ``Service``,
``Settings``, ``Store``, ``Registry`` or ``ActiveModel`` and the write guard ``require_key``,
so a test can swap any of them with ``app.dependency_overrides``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

import torch
from fastapi import Depends, HTTPException, Request

from metarec.serving.metrics import ServiceMetrics
from metarec.serving.recommender import AdaptCache
from metarec.serving.registry import ModelRegistry, ServedModel
from metarec.serving.settings import ServeSettings
from metarec.serving.store import EventStore, open_store

API_KEY_HEADER = "X-API-Key"


@dataclass(eq=False)
class ServiceState:
    settings: ServeSettings
    store: EventStore
    registry: ModelRegistry
    cache: AdaptCache
    metrics: ServiceMetrics
    ready: bool = False


def _encode_text(model: ServedModel, texts: list[str]) -> torch.Tensor:
    """New items' text through the encoder the model was trained with (cached on disk)."""
    from metarec.text.cache import encode_with_cache

    return encode_with_cache(texts, model=model.text_model, progress=False)


def open_service(settings: ServeSettings) -> ServiceState:
    """Open the store and load the models (the lifespan calls this; nothing loads at import)."""
    store = open_store(settings.db)
    registry = ModelRegistry(
        list(settings.models),
        added_items=store.items,
        encode=_encode_text,
        folders=settings.registry,
        index=settings.index if settings.retrieval == "faiss" else None,
    )
    cache = AdaptCache(settings.adapt_cache_ttl_s, settings.adapt_cache_size)
    return ServiceState(settings, store, registry, cache, ServiceMetrics())


def get_service(request: Request) -> ServiceState:
    return request.app.state.service


def get_settings(request: Request) -> ServeSettings:
    """Set by ``create_app``, so it is there before the lifespan has loaded anything."""
    return request.app.state.settings


Service = Annotated[ServiceState, Depends(get_service)]
Settings = Annotated[ServeSettings, Depends(get_settings)]


def get_store(s: Service) -> EventStore:
    return s.store


def get_registry(s: Service) -> ModelRegistry:
    return s.registry


def active_model(s: Service) -> ServedModel:
    """One read of the active version: the whole request is answered by the model it got."""
    return s.registry.active


Store = Annotated[EventStore, Depends(get_store)]
Registry = Annotated[ModelRegistry, Depends(get_registry)]
ActiveModel = Annotated[ServedModel, Depends(active_model)]


def require_key(request: Request, settings: Settings) -> None:
    """Writes and admin need ``X-API-Key`` when the service has a key (constant-time compare)."""
    if settings.api_key is None:
        return
    given = request.headers.get(API_KEY_HEADER, "")
    if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
        raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header")


KeyRequired = Depends(require_key)
