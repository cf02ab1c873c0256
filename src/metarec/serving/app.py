"""The HTTP service: ``create_app(settings)`` builds a FastAPI app; models load in its lifespan.

Write endpoints (``POST /events``, admin) need the ``X-API-Key`` header when
``ServeSettings.api_key`` is set. Every body is size-limited before it is parsed, every field
is validated (422 names it), and an unknown user gets a cold-start answer, never a 5xx.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from metarec.serving.metrics import ServiceMetrics
from metarec.serving.recommender import AdaptCache, Ranked, for_history, for_new_user
from metarec.serving.registry import ModelRegistry, ServedModel
from metarec.serving.schemas import (
    Activated,
    EventsAck,
    EventsIn,
    ItemsAck,
    ItemsIn,
    ModelVersion,
    NewUserRequest,
    Recommendations,
    RecommendedItem,
)
from metarec.serving.store import Event, EventStore, open_store

API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class ServeSettings:
    models: tuple[Path, ...]  # checkpoint folders; the first is active at start-up
    registry: tuple[Path, ...] = ()  # folders whose subfolders are more versions (refresh)
    db: str = "metarec-events.db"  # sqlite:///PATH or a file path
    api_key: str | None = None
    max_body_bytes: int = 1_000_000
    max_batch: int = 1_000  # events per POST /events
    max_k: int = 100
    max_items: int = 200  # interactions per POST /recommendations
    max_new_items: int = 1_000  # items per POST /items
    adapt_cache_ttl_s: float = 300.0
    adapt_cache_size: int = 10_000
    history_limit: int = 200  # newest events of a user read from the store


@dataclass(eq=False)
class ServiceState:
    settings: ServeSettings
    store: EventStore
    registry: ModelRegistry
    cache: AdaptCache
    metrics: ServiceMetrics
    ready: bool = False


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, by its Content-Length or, for a
    chunked body, as soon as the bytes received pass the limit (nothing larger is buffered)."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body larger than {self.limit} bytes"
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await JSONResponse({"detail": detail}, 413)(scope, receive, send)
            return
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, limited, send)


def _encode_text(model: ServedModel, texts: list[str]) -> torch.Tensor:
    """New items' text through the encoder the model was trained with (cached on disk)."""
    from metarec.text.cache import encode_with_cache

    return encode_with_cache(texts, model=model.text_model, progress=False)


def _service(request: Request) -> ServiceState:
    return request.app.state.service


Service = Annotated[ServiceState, Depends(_service)]


def create_app(settings: ServeSettings) -> FastAPI:
    """The service over ``settings``; nothing is loaded until the app starts (lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.db)
        state = ServiceState(
            settings,
            store,
            ModelRegistry(
                list(settings.models),
                added_items=store.items,
                encode=_encode_text,
                folders=settings.registry,
            ),
            AdaptCache(settings.adapt_cache_ttl_s, settings.adapt_cache_size),
            ServiceMetrics(),
        )
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
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.middleware("http")
    async def request_metrics(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        service = getattr(request.app.state, "service", None)
        route = request.scope.get("route")
        if service is not None:
            path = getattr(route, "path", "unmatched")
            service.metrics.observe(request.method, path, response.status_code, start)
        return response

    def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get(API_KEY_HEADER, "")
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header")

    def check_k(k: int) -> None:
        if not 1 <= k <= settings.max_k:
            raise HTTPException(422, f"k must be between 1 and {settings.max_k}, got {k}")

    def answer(s: ServiceState, user: str | None, version: str, ranked: Ranked) -> Recommendations:
        if ranked.adapt_ms:
            s.metrics.adapt_seconds.observe(ranked.adapt_ms / 1000.0)
        items = [
            RecommendedItem(item=i, score=sc, text=t, p_like=p)
            for (i, sc, t), p in zip(ranked.items, ranked.p_likes, strict=True)
        ]
        return Recommendations(
            user=user,
            model_version=version,
            source=ranked.source,
            adapted=ranked.adapted,
            adapt_ms=ranked.adapt_ms,
            items=items,
        )

    @app.post("/events", response_model=EventsAck, dependencies=[Depends(require_key)])
    def post_events(body: EventsIn, s: Service) -> EventsAck:
        """Store a batch of events; the answer comes after they are durably written."""
        if len(body.events) > settings.max_batch:
            raise HTTPException(
                422, f"events: at most {settings.max_batch} per request, got {len(body.events)}"
            )
        now = time.time()
        events = [
            Event(e.user, e.item, e.type, now if e.timestamp is None else e.timestamp, e.value)
            for e in body.events
        ]
        stored = s.store.add_events(events)
        s.metrics.events_stored.inc(stored)
        return EventsAck(stored=stored)

    @app.get("/users/{user}/recommendations", response_model=Recommendations)
    def user_recommendations(
        user: str,
        s: Service,
        k: Annotated[int, Query(description="how many items")] = 10,
        exclude_seen: Annotated[
            bool, Query(description="leave out items the user interacted with")
        ] = True,
    ) -> Recommendations:
        """Top-k for a user from the history in the event store (popularity if none)."""
        check_k(k)
        if not 1 <= len(user) <= 256:
            raise HTTPException(422, "user must be 1 to 256 characters")
        model = s.registry.active
        history = s.store.user_items(user, settings.history_limit)
        ranked = for_history(model, s.store, history, k, exclude_seen, user)
        return answer(s, user, model.version, ranked)

    @app.post("/recommendations", response_model=Recommendations)
    def new_user_recommendations(body: NewUserRequest, s: Service) -> Recommendations:
        """Top-k for a new or anonymous user from the interactions in the body, adapted to them
        at request time (``adapt=false``: the unadapted answer, for comparison)."""
        check_k(body.k)
        if len(body.items) > settings.max_items:
            raise HTTPException(
                422, f"items: at most {settings.max_items} per request, got {len(body.items)}"
            )
        model = s.registry.active
        unknown = [raw for raw in body.items if raw not in model.item_index]
        if unknown:
            raise HTTPException(422, f"items: unknown item id(s) {unknown[:5]}")
        ranked = for_new_user(
            model,
            s.store,
            s.cache,
            body.user,
            body.items,
            body.k,
            body.adapt,
            body.exclude_seen,
            body.ratings,
        )
        return answer(s, body.user, model.version, ranked)

    @app.post("/items", response_model=ItemsAck, dependencies=[Depends(require_key)])
    def post_items(body: ItemsIn, s: Service) -> ItemsAck:
        """Add items with their text; they are recommendable at once, scored from the text."""
        if len(body.items) > settings.max_new_items:
            raise HTTPException(
                422, f"items: at most {settings.max_new_items} per request, got {len(body.items)}"
            )
        pairs = [(i.item, i.text) for i in body.items]
        if s.registry.active.checkpoint.model.config.item_repr == "id":
            raise HTTPException(
                422, "items: the active model knows items by id only and cannot score new ones"
            )
        stored = s.store.add_items(pairs)
        try:
            new = s.registry.add_items(pairs)
        except ValueError as e:
            raise HTTPException(422, f"items: {e}") from None
        return ItemsAck(stored=stored, new=new)

    @app.get("/healthz")
    def healthz() -> dict:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(s: Service) -> JSONResponse:
        """Models loaded and the event store reachable."""
        ok = s.ready and s.store.ping()
        body = {"ready": ok, "model_version": s.registry.active.version}
        return JSONResponse(body, 200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(s: Service) -> PlainTextResponse:
        """Prometheus text: request counts and latencies, adaptation time, model version."""
        body, content_type = s.metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    @app.get("/models", response_model=list[ModelVersion], dependencies=[Depends(require_key)])
    def models(s: Service) -> list[ModelVersion]:
        """The versions this service may serve (registry folders are scanned again)."""
        s.registry.rescan()
        return [ModelVersion(**v) for v in s.registry.versions()]

    @app.post(
        "/models/{version}/activate",
        response_model=Activated,
        dependencies=[Depends(require_key)],
    )
    def activate(version: str, s: Service) -> Activated:
        """Atomically switch the served model; requests in flight finish on the old one."""
        try:
            model = s.registry.activate(version)
        except KeyError:
            raise HTTPException(404, f"version: no model version {version!r}") from None
        s.metrics.model_info(model.version)
        return Activated(active=model.version, previous=s.registry.previous)

    @app.post("/models/rollback", response_model=Activated, dependencies=[Depends(require_key)])
    def rollback(s: Service) -> Activated:
        """Back to the version active before the last activation."""
        try:
            model = s.registry.rollback()
        except LookupError as e:
            raise HTTPException(409, str(e)) from None
        s.metrics.model_info(model.version)
        return Activated(active=model.version, previous=s.registry.previous)

    return app
