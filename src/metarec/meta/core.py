"""The outer loop shared by MAML, first-order MAML, ANIL, Meta-SGD and learned optimizer settings.

A ``MetaLearner`` holds the meta-learned start of the fast parameters, an inner rule (the inner
optimizer, possibly with learned hyperparameters and a regulariser) and an ordinary
``torch.optim`` outer optimizer (AdamW by default). One meta step: for each task, adapt from the
start on the support set with the shared inner loop (``meta.inner.adapt``), take the query loss
of the adapted parameters, average over tasks, add ``weight * R`` if the rule has a regulariser,
and step the outer optimizer.

Tasks are processed by a Python loop, not ``vmap``: support and query sets of different users
differ in length, and the loop frees each task's graph after its backward pass, so memory grows
with one task, not the meta-batch.

When the policy leaves the item tower alone, the catalogue's item vectors are the same for every
task of a meta step. They are computed once per step, every task's losses read a detached copy
of them, the tasks' gradients toward that copy are summed, and one backward pass through the
tower turns the sum into the tower's meta-gradient: the same gradient as a tower pass per task
(tested), at one tower pass per meta step instead of two per task (for a text tower, an MLP over
every item's text embedding, that pass is most of a step's arithmetic).

What is meta-learned (``meta_learn``):

- ``"all"``: every trainable model parameter (for ``all``/``head``/``bias`` policies this includes
  the start of the fast parameters, which are model parameters), the learner-owned start of the
  fast parameters (LoRA A/B, the user vector) and the rule's hyperparameters;
- ``"fast"``: only the start of the fast parameters and the rule's hyperparameters;
- ``"hyper"``: only the rule's hyperparameters (Meta-SGD rates, learned lr/wd).

The outer optimizer updates model parameters in place, like any training loop; adaptation
(``adapt_task``, ``score``) never changes the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from metarec.adapt.policies import FastPolicy
from metarec.meta.functional import (
    fixed_item_vectors,
    frozen_item_vectors,
    functional_loss,
    functional_score,
)
from metarec.meta.inner import adapt, adapt_detached
from metarec.meta.inner_optim import InnerOptimizer

Params = dict[str, torch.Tensor]
Task = tuple[Any, Any]  # (support batch, query batch)
OuterFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]
META_LEARN = ("all", "fast", "hyper")

# The product's inner loop: plain SGD at INNER_LR for INNER_STEPS steps, and the AdamW outer
# rate OUTER_LR. coldstart-ml validated these for MAML, first-order MAML, Reptile and Meta-SGD
# (bench/README.md, 2026-12-03: Meta-SGD +0.0128 and MAML +0.0109 NDCG@10 over no adaptation at
# K = 5); one inner step at 0.01 hardly moves the head. Every algorithm config defaults to them,
# and so do adaptation at request time and ``metarec meta-train``.
INNER_LR = 0.05
INNER_STEPS = 3
OUTER_LR = 3e-4


class Learner(Protocol):
    """What every meta-learner offers, whatever its outer update (MAML-style or Reptile)."""

    model: nn.Module
    policy: Any
    config: Any
    start: dict[str, torch.Tensor]

    def meta_step(self, tasks: Sequence[Task]) -> dict[str, float]: ...

    def adapt_task(self, support: Any, steps: int | None = None) -> dict[str, torch.Tensor]: ...

    def score(
        self, fast: dict[str, torch.Tensor], batch: Any, items: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def meta_tensors(self) -> dict[str, torch.Tensor]: ...


class LoopSettings(Protocol):
    """The fields every algorithm config shares."""

    inner_steps: int
    eval_steps: int | None
    first_order: bool
    meta_learn: str
    outer_lr: float


def check_loop(config: LoopSettings) -> None:
    """Validate the shared fields (called from each config's ``__post_init__``)."""
    if not isinstance(config.inner_steps, int) or config.inner_steps < 0:
        raise ValueError(f"inner_steps must be a non-negative integer, got {config.inner_steps!r}")
    if config.eval_steps is not None and (
        not isinstance(config.eval_steps, int) or config.eval_steps < 0
    ):
        raise ValueError(f"eval_steps must be None or >= 0, got {config.eval_steps!r}")
    if config.meta_learn not in META_LEARN:
        raise ValueError(f"meta_learn must be one of {META_LEARN}, got {config.meta_learn!r}")
    if not config.outer_lr >= 0:
        raise ValueError(f"invalid learning rate: {config.outer_lr}")
    hyper_lr = getattr(config, "hyper_lr", None)
    if hyper_lr is not None and not hyper_lr >= 0:
        raise ValueError(f"invalid hyper_lr: {hyper_lr}")


def eval_steps(config: Any, steps: int | None) -> int:
    """Inner steps for adapting at evaluation or serving: ``steps`` if given, else the config's
    ``eval_steps``, else its ``inner_steps``."""
    if steps is not None:
        return steps
    return config.inner_steps if config.eval_steps is None else config.eval_steps


def adamw_outer(lr: float) -> OuterFactory:
    """The default outer optimizer: ``torch.optim.AdamW`` over the meta-parameter groups, with no
    weight decay on the ``hyper`` group (decaying raw rates toward 0 would pull every rate toward
    softplus(0) = ln 2)."""

    def make(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        groups = [{**g, "weight_decay": 0.0} if g["name"] == "hyper" else g for g in groups]
        return torch.optim.AdamW(groups, lr=lr)

    return make


def positive(raw: torch.Tensor) -> torch.Tensor:
    """Learned rates and decays are ``softplus(raw)``: positive, smooth, ~linear when large."""
    return F.softplus(raw)


def inverse_positive(value: torch.Tensor) -> torch.Tensor:
    """``raw`` with ``positive(raw) == value`` (value > 0)."""
    return value + torch.log(-torch.expm1(-value))


class InnerRule(Protocol):
    """How the inner loop steps: an inner optimizer, its learned tensors, an optional R."""

    def optimizer(self, detach: bool) -> InnerOptimizer: ...

    def tensors(self) -> Params: ...

    def regulariser(self) -> tuple[float, torch.Tensor] | None: ...


class FixedRule:
    """A given inner optimizer with nothing learned (MAML, first-order MAML, ANIL)."""

    def __init__(self, inner_opt: InnerOptimizer):
        self.inner_opt = inner_opt

    def optimizer(self, detach: bool) -> InnerOptimizer:
        return self.inner_opt

    def tensors(self) -> Params:
        return {}

    def regulariser(self) -> tuple[float, torch.Tensor] | None:
        return None


class MetaLearner:
    """Gradient-based meta-learning over a fast-parameter policy (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        policy: FastPolicy,
        config: LoopSettings,
        rule: InnerRule,
        start: Params | None = None,
        outer_opt: OuterFactory | None = None,
    ):
        self.model, self.policy, self.config, self.rule = model, policy, config, rule
        self.start = policy.init_fast(model) if start is None else start
        groups = self.param_groups()
        if not groups:
            raise ValueError(f"meta_learn={config.meta_learn!r} leaves nothing to meta-learn")
        self.outer = (outer_opt or adamw_outer(config.outer_lr))(groups)

    @classmethod
    def with_rule(
        cls,
        model: nn.Module,
        policy: FastPolicy,
        config: LoopSettings,
        rule_class: Callable[[Any, Params], InnerRule],
        outer_opt: OuterFactory | None = None,
    ) -> MetaLearner:
        """A learner whose inner rule is built from ``config`` and the fast parameters' start
        (Meta-SGD's rates, learned optimizer settings: one entry per fast tensor)."""
        start = policy.init_fast(model)
        return cls(
            model, policy, config, rule_class(config, start), start=start, outer_opt=outer_opt
        )

    def param_groups(self) -> list[dict[str, Any]]:
        """Non-empty groups ``model``, ``start`` (learner-owned fast starts) and ``hyper``."""
        mode = self.config.meta_learn
        own = {id(p) for p in self.model.parameters()}
        model_params = [p for p in self.start.values() if id(p) in own]
        if mode == "all":
            model_params = [p for p in self.model.parameters() if p.requires_grad]
        owned = [t for t in self.start.values() if id(t) not in own]
        groups = [
            {"name": "model", "params": model_params if mode != "hyper" else []},
            {"name": "start", "params": owned if mode != "hyper" else []},
            {"name": "hyper", "params": list(self.rule.tensors().values())},
        ]
        hyper_lr = getattr(self.config, "hyper_lr", None)
        if hyper_lr is not None:  # learned rates live in softplus space: they may move faster
            groups[-1]["lr"] = hyper_lr
        return [g for g in groups if g["params"]]

    def query_loss(
        self, support: Any, query: Any, item_vectors: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Query loss after adapting on ``support``, differentiable w.r.t. the meta-parameters
        (and ``item_vectors``, when given: the catalogue's vectors both losses then read)."""
        fast = adapt(
            self.model,
            self.policy,
            self.start,
            support,
            self.rule.optimizer(detach=False),
            self.config.inner_steps,
            create_graph=not self.config.first_order,
            item_vectors=item_vectors,
        )
        params = self.policy.effective_params(self.model, fast)
        return functional_loss(self.model, params, query, item_vectors)

    def meta_backward(self, tasks: Sequence[Task]) -> dict[str, float]:
        """Accumulate the meta-gradient of mean query loss + weight * R into ``.grad``."""
        if not tasks:
            raise ValueError("a meta step needs at least one task")
        params = [p for g in self.outer.param_groups for p in g["params"]]
        total = [torch.zeros_like(p) for p in params]
        shared, copy = self._shared_vectors(params)
        wrt = params + ([copy] if shared is not None else [])
        to_vectors = None if shared is None else torch.zeros_like(shared)
        query = 0.0
        for support, q in tasks:
            loss = self.query_loss(support, q, copy) / len(tasks)
            grads = torch.autograd.grad(loss, wrt, allow_unused=True)
            _add(total, grads[: len(params)])
            if to_vectors is not None and grads[-1] is not None:
                to_vectors += grads[-1]
            query += float(loss.detach())
        if shared is not None:  # one pass through the tower for the whole meta-batch
            _add(total, torch.autograd.grad(shared, params, to_vectors, allow_unused=True))
        stats = {"query_loss": query, "loss": query, "regulariser": 0.0}
        if (reg := self.rule.regulariser()) is not None:
            weight, value = reg
            _add(total, torch.autograd.grad(weight * value, params, allow_unused=True))
            r = float(value.detach())
            stats.update(regulariser=r, loss=query + weight * r)
        for p, g in zip(params, total, strict=True):
            p.grad = g if p.grad is None else p.grad + g
        return stats

    def _shared_vectors(
        self, params: list[torch.Tensor]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(tower output with its graph, or None; the copy every task reads, or None).

        The graph is kept only when the outer loop learns some tower parameter; otherwise the
        tasks read the cached detached catalogue. Both None when the policy adapts the tower."""
        tower = getattr(self.model, "items", None)
        own = {id(p) for p in tower.parameters()} if tower is not None else set()
        if not any(id(p) in own for p in params):
            return None, frozen_item_vectors(self.model, self.policy.touched)
        with torch.enable_grad():
            shared = fixed_item_vectors(self.model, self.policy.touched)
        if shared is None:
            return None, None
        return shared, shared.detach().requires_grad_()

    def meta_step(self, tasks: Sequence[Task]) -> dict[str, float]:
        """One outer update; returns ``loss`` (query + weight * R), ``query_loss``, ``regulariser``
        (R unweighted)."""
        self.outer.zero_grad(set_to_none=True)
        stats = self.meta_backward(tasks)
        self.outer.step()
        return stats

    def adapt_task(self, support: Any, steps: int | None = None) -> Params:
        """Adapted fast parameters (detached) for evaluation or serving."""
        steps = eval_steps(self.config, steps)
        return adapt_detached(
            self.model, self.policy, self.start, support, self.rule.optimizer(True), steps
        )

    def score(self, fast: Params, batch: Any, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B, N) or (B, M) of the model under adapted fast parameters."""
        params = self.policy.effective_params(self.model, fast)
        return functional_score(self.model, params, batch, items)

    def meta_tensors(self) -> Params:
        """Learner-owned meta-learned tensors (detached), e.g. for saving beside the model."""
        own = {id(p) for p in self.model.parameters()}
        out = {f"start.{k}": v.detach() for k, v in self.start.items() if id(v) not in own}
        out.update({f"hyper.{k}": v.detach() for k, v in self.rule.tensors().items()})
        return out


def _add(total: list[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
    for i, g in enumerate(grads):
        if g is not None:
            total[i] = total[i] + g
