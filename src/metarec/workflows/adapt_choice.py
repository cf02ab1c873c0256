"""How ``metarec meta-train`` judges no adaptation, plain fine-tuning and the meta-learners.

The fold's meta-validation users are split in two halves once (``split_validation``; they are
already a seeded permutation). The selection half early-stops meta-training and picks plain
fine-tuning's AdamW rate (``pick_finetune``); the judging half, which took part in neither, is
scored by every candidate (``judge``: no adaptation, fine-tuning, each meta-learner trained),
and ``meta.choice.choose`` keeps a method only where its paired NDCG@10 gain over no adaptation
has an interval above 0 (simultaneous 95% intervals over the candidates). Choosing the rate and
judging the gain on the same users would flatter fine-tuning (and early stopping would flatter
the meta-learner); the halves keep the judgement honest, at the price of a wider interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from torch import nn

from metarec.adapt.policies import PolicyConfig
from metarec.meta.choice import FINETUNE, NO_ADAPT, Choice, choose
from metarec.meta.cold_users import ColdUser, score_users
from metarec.meta.inference import FINETUNE_LRS, FINETUNE_STEPS, PolicyBundle, finetune_bundle
from metarec.meta.learners import Learner


@dataclass(frozen=True)
class ChoiceConfig:
    """``choose``: judge no adaptation and plain fine-tuning beside the meta-learner and record
    the choice (off: the meta-learner, unjudged, as before). Plain fine-tuning: the learner's
    policy, AdamW at the best of ``finetune_lrs`` on the selection half, ``finetune_steps``."""

    choose: bool = True
    finetune_lrs: tuple[float, ...] = FINETUNE_LRS
    finetune_steps: int = FINETUNE_STEPS

    def __post_init__(self) -> None:
        if not isinstance(self.choose, bool):
            raise ValueError(f"choose must be true or false, got {self.choose!r}")
        if not self.finetune_lrs or not all(
            isinstance(lr, int | float) and not isinstance(lr, bool) and lr > 0
            for lr in self.finetune_lrs
        ):
            raise ValueError(f"finetune_lrs must be positive rates, got {self.finetune_lrs!r}")
        steps = self.finetune_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"finetune_steps must be a positive integer, got {steps!r}")


@dataclass(frozen=True)
class Judged:
    """The choice on the judging users, and the fine-tuning bundle that was judged."""

    choice: Choice
    finetune: PolicyBundle
    finetune_lr: float


def split_validation(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(selection, judging) halves of the meta-validation users: judging the first n // 2,
    selection the rest (never empty when there is a user: meta-training needs it)."""
    half = len(users) // 2
    return users[half:], users[:half]


def pick_finetune(
    model: nn.Module, policy: PolicyConfig, users: list[ColdUser], config: ChoiceConfig
) -> tuple[PolicyBundle, float]:
    """The plain fine-tuning bundle whose rate scores the best mean NDCG@10 on ``users`` (the
    first of equals; with no users, the middle rate of the grid)."""
    lrs = tuple(float(lr) for lr in config.finetune_lrs)
    if not users:
        lr = lrs[len(lrs) // 2]
        return finetune_bundle(model, policy, lr, config.finetune_steps), lr
    best: tuple[float, float] | None = None
    for lr in lrs:
        bundle = finetune_bundle(model, policy, lr, config.finetune_steps)
        ndcg = float(np.mean(score_users(model, bundle, users).ndcg))
        if best is None or ndcg > best[0]:
            best = (ndcg, lr)
    assert best is not None
    return finetune_bundle(model, policy, best[1], config.finetune_steps), best[1]


def judge(
    base: nn.Module,
    learners: Mapping[str, Learner],
    policy: PolicyConfig,
    select: list[ColdUser],
    users: list[ColdUser],
    config: ChoiceConfig,
) -> Judged:
    """Choose among no adaptation and plain fine-tuning of ``base`` (the pretrained weights)
    and the meta-trained ``learners`` (algorithm -> learner, in the order to list them), on
    the judging ``users``; fine-tuning's rate from ``select``. Candidates in order of
    simplicity, so equal gains keep the simpler."""
    if not learners:
        raise ValueError("judge needs at least one meta-learner")
    for algorithm in learners:
        if algorithm in (NO_ADAPT, FINETUNE):
            raise ValueError(f"a meta-learner cannot be named {algorithm!r}")
    bundle, lr = pick_finetune(base, policy, select, config)
    scores = {
        NO_ADAPT: score_users(base, None, users).ndcg,
        FINETUNE: score_users(base, bundle, users).ndcg,
    }
    for algorithm, learner in learners.items():
        scores[algorithm] = score_users(learner.model, learner, users).ndcg
    settings = {FINETUNE: {"lr": lr, "steps": config.finetune_steps, "policy": policy.name}}
    return Judged(choose(scores, settings), bundle, lr)
