"""MAML (second order) and first-order MAML over any fast-parameter policy.

Meta-learned: the start of the fast parameters and, with ``meta_learn="all"`` (default), every
other model parameter too (see ``meta.core``). Second order differentiates through the inner
steps (``create_graph=True``); ``first_order=True`` treats the inner gradients as constants, so
the meta-gradient is the query gradient at the adapted parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from metarec.adapt.policies import FastPolicy
from metarec.meta.core import (
    INNER_LR,
    INNER_STEPS,
    OUTER_LR,
    FixedRule,
    MetaLearner,
    OuterFactory,
    check_loop,
)
from metarec.meta.inner_optim import InnerOptimizer, sgd


@dataclass(frozen=True)
class MAMLConfig:
    inner_lr: float = INNER_LR  # for the default inner optimizer, plain SGD
    inner_steps: int = INNER_STEPS
    eval_steps: int | None = None  # steps in adapt_task; None: inner_steps
    first_order: bool = False
    meta_learn: str = "all"  # "all" | "fast"
    outer_lr: float = OUTER_LR

    def __post_init__(self) -> None:
        check_loop(self)
        if not self.inner_lr >= 0:
            raise ValueError(f"invalid learning rate: {self.inner_lr}")
        if self.meta_learn == "hyper":
            raise ValueError("MAML learns no hyperparameters; meta_learn='hyper' trains nothing")


def maml(
    model: nn.Module,
    policy: FastPolicy,
    config: MAMLConfig | None = None,
    inner_opt: InnerOptimizer | None = None,
    outer_opt: OuterFactory | None = None,
) -> MetaLearner:
    """A MAML learner; ``inner_opt`` (any of ``meta.inner_optim``) overrides SGD(inner_lr)."""
    config = config or MAMLConfig()
    rule = FixedRule(inner_opt or sgd(config.inner_lr))
    return MetaLearner(model, policy, config, rule, outer_opt=outer_opt)
