"""Inner-loop optimizers as pure ``(init, update)`` pairs.

``init(params) -> state`` and ``update(grads, state, params) -> (new_params, new_state)`` never
write into a tensor, so the graph through every step is kept and second-order meta-gradients flow.
The maths is torch.optim's (one step of ``sgd``/``adagrad``/``adamw`` equals one step of
``torch.optim.SGD``/``Adagrad``/``AdamW`` with the same settings).

A learning rate or weight decay is a float, a tensor (learned, e.g. ``softplus(raw)``), or a
mapping from fast-parameter name to float or tensor: one value per tensor, per group (the caller
repeats a group's value for each of its names) or per element (a tensor of the parameter's shape).
Arguments are checked eagerly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

Params = dict[str, torch.Tensor]
Hyper = float | torch.Tensor | Mapping[str, float | torch.Tensor]


class InnerOptimizer(NamedTuple):
    init: Callable[[Params], Any]
    update: Callable[[Params, Any, Params], tuple[Params, Any]]


class SGDState(NamedTuple):
    momentum: Params  # empty when momentum == 0


class AdagradState(NamedTuple):
    count: int
    sum: Params  # running sum of squared gradients


class AdamState(NamedTuple):
    count: int
    mu: Params  # first moment
    nu: Params  # second moment


def sgd(lr: Hyper, momentum: float = 0.0, weight_decay: Hyper = 0.0) -> InnerOptimizer:
    """p <- p - lr * (g + wd * p), with optional heavy-ball momentum (no dampening)."""
    _check(lr, "learning rate")
    _check(weight_decay, "weight_decay value")
    _check(momentum, "momentum value")

    def init(params: Params) -> SGDState:
        return SGDState({k: torch.zeros_like(p) for k, p in params.items()} if momentum else {})

    def update(grads: Params, state: SGDState, params: Params) -> tuple[Params, SGDState]:
        new, bufs = {}, {}
        for k, p in params.items():
            g = _decayed(grads[k], p, _at(weight_decay, k))
            if momentum:
                g = bufs[k] = momentum * state.momentum[k] + g
            new[k] = p - _at(lr, k) * g
        return new, SGDState(bufs)

    return InnerOptimizer(init, update)


def adagrad(
    lr: Hyper = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: Hyper = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
) -> InnerOptimizer:
    """Adagrad as torch.optim.Adagrad: L2 weight decay added to the gradient."""
    _check(lr, "learning rate")
    _check(lr_decay, "lr_decay value")
    _check(weight_decay, "weight_decay value")
    _check(initial_accumulator_value, "initial_accumulator_value")
    _check(eps, "epsilon value")

    def init(params: Params) -> AdagradState:
        return AdagradState(
            0, {k: torch.full_like(p, initial_accumulator_value) for k, p in params.items()}
        )

    def update(grads: Params, state: AdagradState, params: Params) -> tuple[Params, AdagradState]:
        count = state.count + 1
        new, sums = {}, {}
        for k, p in params.items():
            g = _decayed(grads[k], p, _at(weight_decay, k))
            clr = _at(lr, k) / (1 + (count - 1) * lr_decay)
            sums[k] = state.sum[k] + g * g
            new[k] = p - clr * g / (_sqrt(sums[k]) + eps)
        return new, AdagradState(count, sums)

    return InnerOptimizer(init, update)


def adamw(
    lr: Hyper = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: Hyper = 1e-2,
) -> InnerOptimizer:
    """AdamW as torch.optim.AdamW: decoupled weight decay p <- p * (1 - lr * wd)."""
    _check(lr, "learning rate")
    _check(eps, "epsilon value")
    _check(weight_decay, "weight_decay value")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"invalid beta parameter at index {i}: {beta}")
    b1, b2 = betas

    def init(params: Params) -> AdamState:
        zeros = {k: torch.zeros_like(p) for k, p in params.items()}
        return AdamState(0, zeros, dict(zeros))

    def update(grads: Params, state: AdamState, params: Params) -> tuple[Params, AdamState]:
        count = state.count + 1
        bc1, bc2_sqrt = 1 - b1**count, math.sqrt(1 - b2**count)
        new, mu, nu = {}, {}, {}
        for k, p in params.items():
            g, lr_k = grads[k], _at(lr, k)
            p = p * (1 - lr_k * _at(weight_decay, k))
            mu[k] = b1 * state.mu[k] + (1 - b1) * g
            nu[k] = b2 * state.nu[k] + (1 - b2) * g * g
            new[k] = p - (lr_k / bc1) * mu[k] / (_sqrt(nu[k]) / bc2_sqrt + eps)
        return new, AdamState(count, mu, nu)

    return InnerOptimizer(init, update)


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite derivative at 0: sqrt'(0) is inf, which turns a zero gradient (say of a
    LoRA A while B = 0) into NaN in second-order meta-gradients. The shift, the dtype's smallest
    normal number, is far below float rounding of any value the optimizers add ``eps`` to."""
    return torch.sqrt(x + torch.finfo(x.dtype).tiny)


def _decayed(g: torch.Tensor, p: torch.Tensor, wd: float | torch.Tensor) -> torch.Tensor:
    if isinstance(wd, float | int) and wd == 0:
        return g
    return g + wd * p


def _at(h: Hyper, name: str) -> float | torch.Tensor:
    if not isinstance(h, Mapping):
        return h
    if name not in h:
        raise ValueError(f"no hyperparameter given for fast parameter {name!r}")
    return h[name]


def _check(h: Hyper, what: str) -> None:
    """Reject negative (or NaN) values, whatever the form the value takes."""
    values = h.values() if isinstance(h, Mapping) else [h]
    for v in values:
        ok = bool(torch.all(v.detach() >= 0)) if isinstance(v, torch.Tensor) else v >= 0
        if not ok:
            raise ValueError(f"invalid {what}: {v}")
