"""What the endpoints compute: top-k for a history, request-time adaptation, cold-start answers.

Every model call goes through ``ServedModel.lock`` (the functional calls swap tensors into the
module, so two threads must not use one model object at once) and through
``meta.inference``: ``adapt_user`` is the same function the benchmarks and ``metarec adapt``
call. Adapted parameters are cached per (model version, user, items) for ``ttl_s`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metarec.meta.inference import adapt_user, recommend
from metarec.serving.like import known_ratings, p_like
from metarec.serving.registry import ServedModel
from metarec.serving.store import EventStore


@dataclass(frozen=True)
class Ranked:
    items: list[tuple[str, float, str]]  # (item id, score, text)
    source: str  # "model" | "popularity"
    adapted: bool = False
    adapt_ms: float | None = None
    p_like: list[float] | None = None  # one per item when the model has a like head

    @property
    def p_likes(self) -> list[float | None]:
        return list(self.p_like) if self.p_like is not None else [None] * len(self.items)


class AdaptCache:
    """Least-recently-used adapted parameters with a time to live."""

    def __init__(self, ttl_s: float = 300.0, max_entries: int = 10_000):
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._data: OrderedDict[tuple, tuple[float, dict[str, torch.Tensor]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> dict[str, torch.Tensor] | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            if time.monotonic() - hit[0] > self.ttl_s:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return hit[1]

    def put(self, key: tuple, value: dict[str, torch.Tensor]) -> None:
        if self.ttl_s <= 0 or self.max_entries <= 0:
            return
        with self._lock:
            self._data[key] = (time.monotonic(), value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def known_indices(model: ServedModel, raw: Sequence[str]) -> list[int]:
    """Catalogue indices of the raw ids the model knows, in order (unknown ones dropped)."""
    return [model.item_index[r] for r in raw if r in model.item_index]


def rank(
    model: ServedModel,
    history: list[int],
    k: int,
    exclude_seen: bool,
    fast: dict[str, torch.Tensor] | None = None,
) -> list[tuple[str, float, str]]:
    """Top-k (id, score, text) from ``history`` (indices, oldest first)."""
    history = history[-model.max_len :] if history else history
    with model.lock:
        idx, scores = recommend(
            model.checkpoint.model, fast, history, k, None if exclude_seen else (), model.index
        )
    items = model.checkpoint.items
    return [
        (items[int(i)], float(s), model.item_text[int(i)]) for i, s in zip(idx, scores, strict=True)
    ]


def popular(
    model: ServedModel, store: EventStore, k: int, exclude: Sequence[str] = ()
) -> list[tuple[str, float, str]]:
    """The cold-start answer: the most frequent items in the store that the model knows."""
    banned = set(exclude)
    out = []
    for item, count in store.item_counts(k + len(banned) + 50):
        if item in model.item_index and item not in banned:
            out.append((item, float(count), model.item_text[model.item_index[item]]))
        if len(out) == k:
            break
    return out


def for_history(
    model: ServedModel,
    store: EventStore,
    raw_history: Sequence[str],
    k: int,
    exclude_seen: bool,
    user: str | None = None,
) -> Ranked:
    """A known user's recommendations; popularity when none of its items is in the model.
    With a like head, ``p_like`` from the history and ``user``'s ratings in the store."""
    history = known_indices(model, raw_history)
    if not history:
        return Ranked(popular(model, store, k, raw_history if exclude_seen else ()), "popularity")
    items = rank(model, history, k, exclude_seen)
    rated = store.user_ratings(user) if model.like is not None and user is not None else {}
    ratings = known_ratings(model, raw_history, [rated.get(r) for r in raw_history])
    return Ranked(items, "model", p_like=p_like(model, history, ratings, [i for i, *_ in items]))


def for_new_user(
    model: ServedModel,
    store: EventStore,
    cache: AdaptCache,
    user: str | None,
    raw_items: Sequence[str],
    k: int,
    adapt: bool,
    exclude_seen: bool,
    ratings: Sequence[float | None] | None = None,
) -> Ranked:
    """Recommendations for the K interactions of a request, adapted to them when ``adapt``;
    with a like head, ``p_like`` from them and their ``ratings`` (one per item, or None)."""
    history = known_indices(model, raw_items)
    if not history:
        return Ranked(popular(model, store, k, raw_items if exclude_seen else ()), "popularity")
    rated = known_ratings(model, raw_items, ratings or [None] * len(raw_items))
    if not adapt or len(history) < 2 or model.adapter is None:  # None: no adaptation chosen
        items = rank(model, history, k, exclude_seen)
        return Ranked(items, "model", p_like=p_like(model, history, rated, [i for i, *_ in items]))
    key = (model.version, user, tuple(history))
    fast = cache.get(key)
    spent = 0.0
    if fast is None:
        start = time.perf_counter()
        with model.lock:
            fast = adapt_user(model.checkpoint.model, model.adapter, history[-model.max_len :])
        spent = 1000.0 * (time.perf_counter() - start)
        cache.put(key, fast)
    items = rank(model, history, k, exclude_seen, fast)
    probs = p_like(model, history, rated, [i for i, *_ in items])
    return Ranked(items, "model", True, spent, probs)
