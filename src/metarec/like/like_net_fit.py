"""Fitting a ``LikeNet`` across users: the start every cold-user adaptation begins from.

Plain supervised training (AdamW, shuffled mini-batches, seeded) on every labelled row of the
training users' tasks (their support and query rows alike), selected by the pooled AUC of the
validation users' query rows without adaptation, with early stopping. This is the "no
adaptation" like model of coldstart-like, and the model every fine-tuning baseline and
meta-learner starts from.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from metarec.evaluation.metrics import auc
from metarec.meta.tasks import Task
from metarec.meta.train import eval_mode
from metarec.models.batch import FeatureBatch


@dataclass(frozen=True)
class LikeNetFitConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 40
    patience: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self}")
        if min(self.batch_size, self.max_epochs, self.patience) < 1:
            raise ValueError("batch_size, max_epochs and patience must be >= 1")


@dataclass
class LikeNetFit:
    best_epoch: int = 0
    best_auc: float = -1.0
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, validation AUC)
    seconds: float = 0.0


def pooled_rows(tasks: Sequence[Task]) -> FeatureBatch:
    """Every support and query row of ``tasks`` in one batch."""
    parts = [b for t in tasks for b in (t.support, t.query)]
    return FeatureBatch(torch.cat([b.x for b in parts]), torch.cat([b.labels for b in parts]))


def validation_auc(net: nn.Module, tasks: Sequence[Task]) -> float:
    """Pooled AUC of the tasks' query rows under ``net`` as it is (no adaptation)."""
    with eval_mode(net), torch.no_grad():
        logits = torch.cat([net.score(t.query) for t in tasks]).double()
    labels = torch.cat([t.query.labels for t in tasks])
    return auc(labels, logits)


def fit_like_net(
    net: nn.Module,
    train_tasks: Sequence[Task],
    valid_tasks: Sequence[Task],
    config: LikeNetFitConfig = LikeNetFitConfig(),
) -> LikeNetFit:
    """Train ``net`` in place on the pooled rows; the best validated weights are kept."""
    rows = pooled_rows(train_tasks)
    if len(rows) == 0:
        raise ValueError("no labelled rows to fit the like model on")
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    res, start = LikeNetFit(), time.perf_counter()
    best = copy.deepcopy(net.state_dict())
    for epoch in range(1, config.max_epochs + 1):
        net.train()
        order = torch.randperm(len(rows), generator=gen)
        for lo in range(0, len(rows), config.batch_size):
            idx = order[lo : lo + config.batch_size]
            opt.zero_grad(set_to_none=True)
            net.loss(FeatureBatch(rows.x[idx], rows.labels[idx])).backward()
            opt.step()
        metric = validation_auc(net, valid_tasks)
        res.curve.append((epoch, metric))
        if metric > res.best_auc:
            res.best_auc, res.best_epoch = metric, epoch
            best = copy.deepcopy(net.state_dict())
        elif epoch - res.best_epoch >= config.patience:
            break
    net.load_state_dict(best)
    net.eval()
    res.seconds = time.perf_counter() - start
    return res
