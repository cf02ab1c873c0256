"""Call a model's ``loss`` or ``score`` with substituted parameters, never changing the model.

``torch.func.functional_call`` calls ``forward``; recommender models expose ``loss`` and ``score``
instead. A throw-away wrapper holds the model as its child ``model`` and forwards to the chosen
method, so the parameter names are the model's own, prefixed with ``model.``. Parameters not in
``params`` (and all buffers) are the model's own. ``functional_call`` swaps tensors into the
module for the duration of the call and restores them, so two threads must not call the same
model object at once.

Like/click tasks (``LikeBatch``) have no model method of their own: their loss is binary
cross-entropy on the pointwise logit, the dot-product ``score`` of (user vector, candidate item
vector), computed here through the same functional call. ``functional_loss`` dispatches on the
batch type, so the inner loop and every meta-learner take like/click tasks unchanged.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metarec.models.batch import FeedbackBatch, LikeBatch, SeqBatch


class _Method(nn.Module):
    """Calls ``model.<method>`` as its forward."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.model, self.method)(*args, **kwargs)


def call_method(
    model: nn.Module,
    method: str,
    params: dict[str, torch.Tensor],
    args: tuple = (),
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """``model.<method>(*args, **kwargs)`` with ``params`` in place of the named parameters."""
    prefixed = {f"model.{name}": value for name, value in params.items()}
    return functional_call(_Method(model, method), prefixed, args, kwargs or {}, strict=False)


def functional_loss(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    batch: Any,
    item_vectors: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scalar ``model.loss(batch)`` under ``params``; for a ``LikeBatch``, ``pointwise_loss``;
    for a ``FeedbackBatch``, its next-item loss plus ``like_weight`` x its ``pointwise_loss``.

    ``item_vectors`` (from ``fixed_item_vectors``) skips recomputing an unchanged item tower.
    """
    if isinstance(batch, LikeBatch):
        return pointwise_loss(model, params, batch, item_vectors)
    if isinstance(batch, FeedbackBatch):
        seq = functional_loss(model, params, batch.next_item, item_vectors)
        return seq + batch.like_weight * pointwise_loss(model, params, batch.like, item_vectors)
    kwargs = {} if item_vectors is None else {"item_vectors": item_vectors}
    return call_method(model, "loss", params, (batch,), kwargs)


def _untouched_tower(model: nn.Module, touched: tuple[str, ...]) -> nn.Module | None:
    """The model's item tower when none of the ``touched`` parameters belongs to it."""
    tower = getattr(model, "items", None)
    if tower is None or not hasattr(tower, "all_items"):
        return None
    if any(name.startswith("items.") for name in touched):
        return None
    return tower


def fixed_item_vectors(model: nn.Module, touched: tuple[str, ...]) -> torch.Tensor | None:
    """(N, D) catalogue vectors computed once, when the model has an item tower that none of the
    ``touched`` (fast) parameters belongs to; None otherwise. Gradients to the tower's own
    parameters still flow through the returned tensor (it is computed under the caller's mode)."""
    tower = _untouched_tower(model, touched)
    return None if tower is None else tower.all_items()


_CATALOGUE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def frozen_item_vectors(model: nn.Module, touched: tuple[str, ...]) -> torch.Tensor | None:
    """Like ``fixed_item_vectors`` but detached and, in eval mode, cached until a tensor of the
    item tower changes (in place or replaced): for adaptation and scoring that need no gradient
    toward the tower. The catalogue pass (for a text tower an MLP over every item's text
    embedding) then runs once per model version instead of once per user."""
    tower = _untouched_tower(model, touched)
    if tower is None:
        return None
    if tower.training:  # id dropout draws a new mask each call: nothing to cache
        with torch.no_grad():
            return tower.all_items()
    tensors = [*tower.parameters(), *tower.buffers()]
    key = tuple((id(t), t._version, t.data_ptr()) for t in tensors)
    cached = _CATALOGUE.get(tower)
    if cached is not None and cached[0] == key:
        return cached[1]
    with torch.no_grad():
        vectors = tower.all_items()
    _CATALOGUE[tower] = (key, vectors)
    return vectors


def pointwise_logits(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    batch: LikeBatch,
    item_vectors: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) like/click logits: ``score`` of each row's history against its one candidate."""
    cand = batch.candidates[:, None]
    scores = functional_score(model, params, batch.history(), cand, item_vectors)  # (B, 1)
    return scores[:, 0]


def like_logits(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    batch: Any,
    item_vectors: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) like/click logits of a pointwise batch: ``pointwise_logits`` for a ``LikeBatch``,
    the model's own ``score`` for a ``FeatureBatch`` (a model over precomputed features)."""
    if isinstance(batch, LikeBatch):
        return pointwise_logits(model, params, batch, item_vectors)
    return call_method(model, "score", params, (batch,))


def pointwise_loss(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    batch: LikeBatch,
    item_vectors: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean binary cross-entropy of ``pointwise_logits`` against ``batch.labels`` (0/1)."""
    logits = pointwise_logits(model, params, batch, item_vectors)
    return F.binary_cross_entropy_with_logits(logits, batch.labels.to(logits.dtype))


def functional_score(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    batch: SeqBatch,
    items: torch.Tensor | None = None,
    item_vectors: torch.Tensor | None = None,
) -> torch.Tensor:
    """``model.score(batch, items)`` under ``params``: (B, N), or (B, M) for candidates."""
    kwargs = (
        {"items": items} if item_vectors is None else {"items": items, "item_vectors": item_vectors}
    )
    return call_method(model, "score", params, (batch,), kwargs)
