"""Call a model's ``loss`` or ``score`` with substituted parameters, never changing the model.

``torch.func.functional_call`` calls ``forward``; recommender models expose ``loss`` and ``score``
instead. A throw-away wrapper holds the model as its child ``model`` and forwards to the chosen
method, so the parameter names are the model's own, prefixed with ``model.``. Parameters not in
``params`` (and all buffers) are the model's own. ``functional_call`` swaps tensors into the
module for the duration of the call and restores them, so two threads must not call the same
model object at once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from metarec.models.batch import SeqBatch


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


def functional_loss(model: nn.Module, params: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
    """Scalar ``model.loss(batch)`` under ``params``."""
    return call_method(model, "loss", params, (batch,))


def functional_score(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    batch: SeqBatch,
    items: torch.Tensor | None = None,
) -> torch.Tensor:
    """``model.score(batch, items)`` under ``params``: (B, N), or (B, M) for candidates."""
    return call_method(model, "score", params, (batch,), {"items": items})
