"""Reptile: move the start of the fast parameters toward the parameters adapted on each task.

For each task the inner loop adapts on the support set (no graph kept); the pseudo-gradient of
the start is ``start - mean_task(adapted)``, handed to an ordinary ``torch.optim`` optimizer. The
default outer optimizer is plain SGD with ``lr=step_size``, so one meta step is exactly
``start += step_size * (mean adapted - start)``; pass ``outer_opt`` for Adam-style steps.

Meta-learned: only the start of the fast parameters (the model's own parameters for the
``all``/``head``/``bias`` policies; LoRA A/B or the user vector otherwise). Parameters outside the
policy do not move in the inner loop, so Reptile has nothing to say about them. The query set is
not used for the update; ``meta_step`` reports the query loss after adaptation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from metarec.adapt.policies import FastPolicy
from metarec.meta.core import INNER_LR, INNER_STEPS, OuterFactory, Params, Task, eval_steps
from metarec.meta.functional import frozen_item_vectors, functional_loss, functional_score
from metarec.meta.inner import adapt_detached
from metarec.meta.inner_optim import InnerOptimizer, sgd


@dataclass(frozen=True)
class ReptileConfig:
    inner_lr: float = INNER_LR  # for the default inner optimizer, plain SGD
    inner_steps: int = INNER_STEPS
    eval_steps: int | None = None  # steps in adapt_task; None: inner_steps
    step_size: float = 0.1  # epsilon, the outer SGD learning rate

    def __post_init__(self) -> None:
        if not self.inner_lr >= 0:
            raise ValueError(f"invalid learning rate: {self.inner_lr}")
        if not isinstance(self.inner_steps, int) or self.inner_steps < 1:
            raise ValueError(f"inner_steps must be a positive integer, got {self.inner_steps!r}")
        if self.eval_steps is not None and self.eval_steps < 0:
            raise ValueError(f"eval_steps must be None or >= 0, got {self.eval_steps!r}")
        if not self.step_size >= 0:
            raise ValueError(f"invalid step size: {self.step_size}")


class Reptile:
    def __init__(
        self,
        model: nn.Module,
        policy: FastPolicy,
        config: ReptileConfig | None = None,
        inner_opt: InnerOptimizer | None = None,
        outer_opt: OuterFactory | None = None,
    ):
        self.model, self.policy = model, policy
        self.config = config = config or ReptileConfig()
        self.inner_opt = inner_opt or sgd(config.inner_lr)
        self.start = policy.init_fast(model)
        groups = [{"name": "start", "params": list(self.start.values())}]
        make = outer_opt or (lambda g: torch.optim.SGD(g, lr=config.step_size))
        self.outer = make(groups)

    def meta_step(self, tasks: Sequence[Task]) -> dict[str, float]:
        """One outer update; ``loss`` is the mean query loss after adaptation."""
        if not tasks:
            raise ValueError("a meta step needs at least one task")
        self.outer.zero_grad(set_to_none=True)
        pseudo = {k: torch.zeros_like(v) for k, v in self.start.items()}
        loss = 0.0
        vectors = frozen_item_vectors(self.model, self.policy.touched)  # once, not per task
        for support, query in tasks:
            fast = self.adapt_task(support, self.config.inner_steps)
            for k, v in fast.items():
                pseudo[k] += (self.start[k].detach() - v) / len(tasks)
            with torch.no_grad():
                params = self.policy.effective_params(self.model, fast)
                loss += float(functional_loss(self.model, params, query, vectors)) / len(tasks)
        for k, v in self.start.items():
            v.grad = pseudo[k]
        self.outer.step()
        return {"loss": loss, "query_loss": loss}

    def adapt_task(self, support: Any, steps: int | None = None) -> Params:
        """Adapted fast parameters (detached) for evaluation or serving."""
        steps = eval_steps(self.config, steps)
        return adapt_detached(self.model, self.policy, self.start, support, self.inner_opt, steps)

    def score(self, fast: Params, batch: Any, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B, N) or (B, M) of the model under adapted fast parameters."""
        params = self.policy.effective_params(self.model, fast)
        return functional_score(self.model, params, batch, items)

    def meta_tensors(self) -> Params:
        """Learner-owned meta-learned tensors (detached): the start of fast parameters that are
        not model parameters (LoRA A/B, the user vector), as ``MetaLearner.meta_tensors``."""
        own = {id(p) for p in self.model.parameters()}
        return {f"start.{k}": v.detach() for k, v in self.start.items() if id(v) not in own}
