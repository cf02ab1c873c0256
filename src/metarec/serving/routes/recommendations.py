"""Recommendations: for a known user from the store, or for a new user from the body."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from metarec.serving.deps import ActiveModel, Service, ServiceState, Settings
from metarec.serving.recommender import Ranked, for_history, for_new_user
from metarec.serving.schemas import NewUserRequest, Recommendations, RecommendedItem
from metarec.serving.settings import ServeSettings

router = APIRouter()


def _check_k(k: int, settings: ServeSettings) -> None:
    """``max_k`` is a setting, so it is checked here and not in the schema."""
    if not 1 <= k <= settings.max_k:
        raise HTTPException(422, f"k must be between 1 and {settings.max_k}, got {k}")


def _answer(s: ServiceState, user: str | None, version: str, ranked: Ranked) -> Recommendations:
    """The response body; the adaptation time also goes to the metrics."""
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


@router.get("/users/{user}/recommendations", response_model=Recommendations)
def user_recommendations(
    user: str,
    s: Service,
    settings: Settings,
    model: ActiveModel,
    k: Annotated[int, Query(description="how many items")] = 10,
    exclude_seen: Annotated[
        bool, Query(description="leave out items the user interacted with")
    ] = True,
) -> Recommendations:
    """Top-k for a user from the history in the event store (popularity if none)."""
    _check_k(k, settings)
    if not 1 <= len(user) <= 256:
        raise HTTPException(422, "user must be 1 to 256 characters")
    history = s.store.user_items(user, settings.history_limit)
    ranked = for_history(model, s.store, history, k, exclude_seen, user)
    return _answer(s, user, model.version, ranked)


@router.post("/recommendations", response_model=Recommendations)
def new_user_recommendations(
    body: NewUserRequest, s: Service, settings: Settings, model: ActiveModel
) -> Recommendations:
    """Top-k for a new or anonymous user from the interactions in the body, adapted to them
    at request time (``adapt=false``: the unadapted answer, for comparison)."""
    _check_k(body.k, settings)
    if len(body.items) > settings.max_items:
        raise HTTPException(
            422, f"items: at most {settings.max_items} per request, got {len(body.items)}"
        )
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
    return _answer(s, body.user, model.version, ranked)
