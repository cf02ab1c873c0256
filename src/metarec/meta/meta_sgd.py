"""Meta-SGD: MAML whose inner step ``p - alpha * g`` uses learned learning rates alpha.

alpha is one rate per element of every fast tensor (``per="element"``, as in Li et al. 2017) or
one per tensor (``per="tensor"``), initialised to a constant or uniformly in a range, and kept
positive as ``softplus(raw)``. It is trained through the query loss, with a regulariser added to
the meta-loss: ``loss = mean query loss + reg_weight * R(alpha)``, where R is

- ``"toward-init"``: mean over all rates of (alpha - alpha_0)^2 (stay near the initial rates);
- ``"magnitude"``: mean over all rates of alpha^2 (penalise large rates);
- ``"none"``: R = 0.

Meta-learned besides alpha: as MAML (``meta_learn``, see ``meta.core``).
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
from metarec.meta.inner_optim import InnerOptimizer, sgd

REGULARISERS = ("toward-init", "magnitude", "none")
GRANULARITIES = ("element", "tensor")


@dataclass(frozen=True)
class MetaSGDConfig:
    alpha_init: float = INNER_LR  # constant initial rate (when alpha_range is None)
    alpha_range: tuple[float, float] | None = None  # uniform initial rates in [low, high]
    per: str = "tensor"  # "element" | "tensor"
    regulariser: str = "toward-init"
    reg_weight: float = 0.0
    seed: int = 0  # for alpha_range
    inner_steps: int = INNER_STEPS
    eval_steps: int | None = None
    first_order: bool = False
    meta_learn: str = "all"
    outer_lr: float = OUTER_LR
    # outer lr of the learned rates (None: outer_lr); they live in softplus space and need to
    # move faster than the weights (coldstart-ml's 1e-2)
    hyper_lr: float | None = 1e-2

    def __post_init__(self) -> None:
        check_loop(self)
        if not self.alpha_init > 0:
            raise ValueError(f"alpha_init must be > 0, got {self.alpha_init}")
        if self.alpha_range is not None and not 0 < self.alpha_range[0] <= self.alpha_range[1]:
            raise ValueError(f"alpha_range must satisfy 0 < low <= high, got {self.alpha_range}")
        if self.per not in GRANULARITIES:
            raise ValueError(f"per must be one of {GRANULARITIES}, got {self.per!r}")
        if self.regulariser not in REGULARISERS:
            raise ValueError(f"regulariser must be one of {REGULARISERS}, got {self.regulariser!r}")
        if not self.reg_weight >= 0:
            raise ValueError(f"reg_weight must be >= 0, got {self.reg_weight}")


class MetaSGDRule:
    """Learned rates alpha for every fast tensor; the inner optimizer is SGD(alpha)."""

    def __init__(self, config: MetaSGDConfig, start: dict[str, torch.Tensor]):
        self.config = config
        gen = torch.Generator().manual_seed(config.seed)
        rates = {k: _initial_rates(config, p, gen) for k, p in start.items()}
        self.raw = {k: inverse_positive(a).requires_grad_() for k, a in rates.items()}
        # alpha_0 as the parametrisation gives it back, so R("toward-init") is exactly 0 at first
        self.initial = {k: positive(r).detach() for k, r in self.raw.items()}

    def rates(self) -> dict[str, torch.Tensor]:
        """alpha per fast tensor: its shape, or () for ``per="tensor"``."""
        return {k: positive(r) for k, r in self.raw.items()}

    def optimizer(self, detach: bool) -> InnerOptimizer:
        rates = self.rates()
        return sgd({k: a.detach() for k, a in rates.items()} if detach else rates)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"alpha.{k}": r for k, r in self.raw.items()}

    def regulariser(self) -> tuple[float, torch.Tensor] | None:
        if self.config.regulariser == "none":
            return None
        rates = self.rates()
        if self.config.regulariser == "toward-init":
            diffs = [(rates[k] - self.initial[k]).flatten() for k in rates]
        else:
            diffs = [a.flatten() for a in rates.values()]
        return self.config.reg_weight, torch.cat(diffs).pow(2).mean()


def meta_sgd(
    model: nn.Module,
    policy: FastPolicy,
    config: MetaSGDConfig | None = None,
    outer_opt: OuterFactory | None = None,
) -> MetaLearner:
    """A Meta-SGD learner; its rule (``learner.rule``) exposes ``rates()``."""
    return MetaLearner.with_rule(model, policy, config or MetaSGDConfig(), MetaSGDRule, outer_opt)


def _initial_rates(config: MetaSGDConfig, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    shape = p.shape if config.per == "element" else ()
    if config.alpha_range is None:
        return torch.full(shape, config.alpha_init, dtype=p.dtype, device=p.device)
    low, high = config.alpha_range
    u = torch.rand(shape, generator=gen, dtype=p.dtype)
    return (low + (high - low) * u).to(p.device)
