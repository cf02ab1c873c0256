"""A learned update rule between model versions: per-tensor mixing of old and fine-tuned weights.

In the spirit of SML (Zhang et al., SIGIR 2020, "learn how to transfer the old model to the new
period"), but as cheap as it gets: for every parameter tensor k a coefficient
``a_k = sigmoid(l_k)`` sets how far the new version moves from the old weights toward the
fine-tuned ones,

    theta_new[k] = theta_old[k] + a_k * (theta_ft[k] - theta_old[k]),

so ``a = 0`` keeps the old model and ``a = 1`` is the fine-tuned one. The logits ``l`` are fitted
by gradient descent on a later period's next-item loss of the mixed weights (through
``torch.func.functional_call``; the model itself never changes), and the fitted rule is applied to
the next transition. Buffers are taken from the fine-tuned model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from metarec.meta.functional import functional_loss

Weights = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class MixingConfig:
    steps: int = 40  # Adam steps on the logits per fit
    lr: float = 0.1
    init_logit: float = 0.0  # a = 0.5 before the first fit

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"invalid learning rate: {self.lr}")


def parameter_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def initial_logits(names: Iterable[str], value: float = 0.0) -> dict[str, torch.Tensor]:
    """One scalar logit per parameter tensor."""
    return {name: torch.tensor(float(value)) for name in names}


def mix(old: Weights, new: Weights, logits: Weights) -> dict[str, torch.Tensor]:
    """``old + a * (new - old)``, a = sigmoid(logit), for every tensor named in ``logits``
    (differentiable in the logits; ``old`` and ``new`` are taken as constants)."""
    out = {}
    for name, logit in logits.items():
        o, n = old[name].detach(), new[name].detach()
        a = torch.sigmoid(logit).to(o.dtype)
        out[name] = (1 - a) * o + a * n  # exactly old at a = 0, exactly new at a = 1
    return out


def coefficients(logits: Weights) -> dict[str, float]:
    """The mixing coefficient a of every tensor."""
    return {name: float(torch.sigmoid(v)) for name, v in logits.items()}


def fit_logits(
    model: nn.Module,
    old: Weights,
    new: Weights,
    logits: Weights,
    batch_at: Callable[[int], Any],
    config: MixingConfig,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Logits that minimise ``model.loss`` of ``mix(old, new, logits)`` on ``batch_at(step)``
    (one model batch per Adam step), starting from ``logits``; (fitted logits, losses).
    ``model`` supplies the architecture and buffers only; it is put in eval mode (no dropout)
    for the fit and returned to its mode after."""
    fitted = {k: v.detach().clone().requires_grad_(True) for k, v in logits.items()}
    opt = torch.optim.Adam(list(fitted.values()), lr=config.lr)
    losses: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for step in range(config.steps):
            loss = functional_loss(model, mix(old, new, fitted), batch_at(step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        model.train(was_training)
    return {k: v.detach() for k, v in fitted.items()}, losses


def apply_mixing(model: nn.Module, old: Weights, new: Weights, logits: Weights) -> nn.Module:
    """Load ``mix(old, new, logits)`` into ``model`` (in place; buffers from ``new``)."""
    with torch.no_grad():
        mixed = mix(old, new, logits)
        state = {k: v.detach().clone() for k, v in new.items()}
        state.update({k: v.detach().clone() for k, v in mixed.items()})
        model.load_state_dict(state)
    return model
