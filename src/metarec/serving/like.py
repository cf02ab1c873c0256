"""``p_like`` beside each recommendation, from the served model's like head (``metarec like fit``).

The head reads the user's rated history: the same history the recommendations come from, each
item with its rating (the latest ``rating`` event in the store, or the request's ``ratings``),
``NEUTRAL_RATING`` where none is known. No like head, or no known history item: no ``p_like``.
"""

from __future__ import annotations

from collections.abc import Sequence

from metarec.like.workflow import NEUTRAL_RATING, predict_like
from metarec.serving.registry import ServedModel


def known_ratings(
    model: ServedModel, raw: Sequence[str], ratings: Sequence[float | None]
) -> list[float]:
    """One rating per raw id the model knows (aligned with ``known_indices``): its rating, or
    the neutral rating where it has none."""
    return [
        NEUTRAL_RATING if v is None else float(v)
        for r, v in zip(raw, ratings, strict=True)
        if r in model.item_index
    ]


def p_like(
    model: ServedModel, history: Sequence[int], ratings: Sequence[float], items: Sequence[str]
) -> list[float] | None:
    """P(like) of each recommended raw item id, or None without a like head or history."""
    if model.like is None or not history or not items:
        return None
    candidates = [model.item_index[i] for i in items]
    base = model.checkpoint.model
    with model.lock:
        if model.like_space is None:  # once per version: a pass over the whole catalogue
            model.like_space = model.like.space(base)
        probs = predict_like(
            model.like, base, list(history), list(ratings), candidates, model.like_space
        )
    return [float(p) for p in probs]
