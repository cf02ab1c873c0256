"""The one functional inner loop: meta-training, evaluation and request-time adaptation share it."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from metarec.adapt.policies import FastPolicy
from metarec.meta.functional import fixed_item_vectors, frozen_item_vectors, functional_loss
from metarec.meta.inner_optim import InnerOptimizer

Params = dict[str, torch.Tensor]


def adapt(
    model: nn.Module,
    policy: FastPolicy,
    fast: Params,
    support: Any,
    inner_opt: InnerOptimizer,
    steps: int,
    create_graph: bool = False,
    item_vectors: torch.Tensor | None = None,
) -> Params:
    """Run ``steps`` inner-optimizer steps on ``model.loss(support)``; return the new fast params.

    The model is called through ``functional_call`` with ``policy.effective_params(model, fast)``
    and is never changed. ``create_graph=True`` keeps the graph of every step, so a loss on the
    result can be differentiated through the adaptation (second-order MAML); with ``False`` the
    inner gradients are constants (first-order) but the result still depends on ``fast`` and on
    any tensor hyperparameters of ``inner_opt``. Works under ``torch.no_grad()`` too.

    ``item_vectors`` (N, D) stands in for the item tower's output in every step; by default it is
    computed once (``fixed_item_vectors``, differentiable toward the tower) when the policy leaves
    the tower alone. Callers that need no gradient toward the tower pass
    ``frozen_item_vectors`` (cached across calls).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    fast = dict(fast)
    if steps and (frozen := [k for k, v in fast.items() if not v.requires_grad]):
        raise ValueError(f"fast parameters {frozen} do not require grad")
    state = inner_opt.init(fast)
    with torch.enable_grad(), _twice_differentiable(create_graph):
        if steps and item_vectors is None:
            item_vectors = fixed_item_vectors(model, policy.touched)
        for _ in range(steps):
            params = policy.effective_params(model, fast)
            loss = functional_loss(model, params, support, item_vectors)
            grads = _grads(loss, fast, create_graph)
            fast, state = inner_opt.update(grads, state, fast)
    return fast


def adapt_detached(
    model: nn.Module,
    policy: FastPolicy,
    start: Params,
    support: Any,
    inner_opt: InnerOptimizer,
    steps: int,
) -> Params:
    """``adapt`` for evaluation and serving: from a detached copy of ``start``, with the cached
    catalogue vectors (``frozen_item_vectors``: no gradient toward the tower is needed), and
    the result detached."""
    fresh = {k: v.detach().requires_grad_() for k, v in start.items()}
    vectors = frozen_item_vectors(model, policy.touched) if steps else None
    fast = adapt(model, policy, fresh, support, inner_opt, steps, item_vectors=vectors)
    return {k: v.detach() for k, v in fast.items()}


def _grads(loss: torch.Tensor, fast: Params, create_graph: bool) -> Params:
    """d loss / d fast; a fast tensor the loss does not use gets a zero gradient."""
    names = list(fast)
    grads = torch.autograd.grad(
        loss, [fast[k] for k in names], create_graph=create_graph, allow_unused=True
    )
    return {
        k: torch.zeros_like(fast[k]) if g is None else g for k, g in zip(names, grads, strict=True)
    }


def _twice_differentiable(create_graph: bool) -> contextlib.AbstractContextManager:
    """The fused attention kernels have no double backward; the math kernel has. The selection
    is a process-wide flag that torch restores on exit."""
    return sdpa_kernel(SDPBackend.MATH) if create_graph else contextlib.nullcontext()
