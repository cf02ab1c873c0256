"""Learned inner-optimizer settings: lr and weight decay per parameter group, by hypergradient.

The inner optimizer is SGD, Adagrad or AdamW (``meta.inner_optim``; state kept functionally, so
second-order gradients flow). Each group of fast tensors has its own learning rate and weight
decay, both ``softplus(raw)`` (kept positive) with ``raw`` trained by the meta-gradient of the
query loss (the hypergradient). Groups (``group_by``): ``"one"`` (a single group), ``"module"``
(tensors of one module, e.g. a Linear's weight and bias, or a LoRA pair) or ``"tensor"``.
``learn_weight_decay=False`` keeps the decay fixed at ``weight_decay``. Meta-learned besides the
settings: as MAML (``meta_learn``, see ``meta.core``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metarec.adapt.policies import FastPolicy
from metarec.meta.core import (
    INNER_LR,
    INNER_STEPS,
    OUTER_LR,
    MetaLearner,
    OuterFactory,
    check_loop,
    inverse_positive,
    positive,
)
from metarec.meta.inner_optim import InnerOptimizer, adagrad, adamw, sgd

OPTIMIZERS = ("sgd", "adagrad", "adamw")
GROUP_BY = ("one", "module", "tensor")


@dataclass(frozen=True)
class LearnedOptimConfig:
    optimizer: str = "sgd"  # "sgd" | "adagrad" | "adamw"
    lr: float = INNER_LR  # initial inner learning rate of every group
    weight_decay: float = 1e-4  # initial (or fixed) inner weight decay
    learn_weight_decay: bool = True
    group_by: str = "module"
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    eps: float | None = None  # None: torch's default of the optimizer
    inner_steps: int = INNER_STEPS
    eval_steps: int | None = None
    first_order: bool = False
    meta_learn: str = "all"
    outer_lr: float = OUTER_LR
    hyper_lr: float | None = None  # outer lr of the learned rates; None: outer_lr

    def __post_init__(self) -> None:
        check_loop(self)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.group_by not in GROUP_BY:
            raise ValueError(f"group_by must be one of {GROUP_BY}, got {self.group_by!r}")
        if not self.lr > 0:
            raise ValueError(f"invalid learning rate: {self.lr} (learned: must be > 0)")
        if not self.weight_decay >= 0 or (self.learn_weight_decay and self.weight_decay == 0):
            raise ValueError(
                f"invalid weight_decay value: {self.weight_decay} (>= 0, and > 0 when learned)"
            )
        if self.eps is not None and not self.eps >= 0:
            raise ValueError(f"invalid epsilon value: {self.eps}")


class LearnedOptimRule:
    """Per-group learned lr (and weight decay) for a functional SGD / Adagrad / AdamW."""

    def __init__(self, config: LearnedOptimConfig, start: dict[str, torch.Tensor]):
        self.config = config
        self.groups = {k: _group(k, config.group_by) for k in start}  # fast name -> group
        ref = next(iter(start.values()))

        def raw(value: float) -> dict[str, torch.Tensor]:
            init = torch.tensor(value, dtype=ref.dtype, device=ref.device)
            return {g: inverse_positive(init).requires_grad_() for g in set(self.groups.values())}

        self.raw_lr = raw(config.lr)
        self.raw_wd = raw(config.weight_decay) if config.learn_weight_decay else {}

    def learning_rates(self) -> dict[str, float]:
        return {g: float(positive(r.detach())) for g, r in self.raw_lr.items()}

    def weight_decays(self) -> dict[str, float]:
        if not self.raw_wd:
            return dict.fromkeys(self.raw_lr, self.config.weight_decay)
        return {g: float(positive(r.detach())) for g, r in self.raw_wd.items()}

    def optimizer(self, detach: bool) -> InnerOptimizer:
        lr = self._per_name(self.raw_lr, detach)
        wd = self._per_name(self.raw_wd, detach) if self.raw_wd else self.config.weight_decay
        c = self.config
        if c.optimizer == "sgd":
            return sgd(lr, weight_decay=wd)
        if c.optimizer == "adagrad":
            return adagrad(lr, weight_decay=wd, eps=1e-10 if c.eps is None else c.eps)
        return adamw(lr, betas=c.betas, eps=1e-8 if c.eps is None else c.eps, weight_decay=wd)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"lr.{g}": r for g, r in self.raw_lr.items()}
        out.update({f"weight_decay.{g}": r for g, r in self.raw_wd.items()})
        return out

    def regulariser(self) -> tuple[float, torch.Tensor] | None:
        return None

    def _per_name(self, raw: dict[str, torch.Tensor], detach: bool) -> dict[str, torch.Tensor]:
        values = {g: positive(r.detach() if detach else r) for g, r in raw.items()}
        return {name: values[g] for name, g in self.groups.items()}


def learned_optim(
    model: nn.Module,
    policy: FastPolicy,
    config: LearnedOptimConfig | None = None,
    outer_opt: OuterFactory | None = None,
) -> MetaLearner:
    """A learner with learned inner settings; ``learner.rule.learning_rates()`` reports them."""
    return MetaLearner.with_rule(
        model, policy, config or LearnedOptimConfig(), LearnedOptimRule, outer_opt
    )


def _group(name: str, group_by: str) -> str:
    if group_by == "one":
        return "all"
    if group_by == "tensor" or "." not in name:
        return name
    return name.rsplit(".", 1)[0]
