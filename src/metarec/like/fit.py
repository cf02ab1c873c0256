"""Fitting the light like head: features from a frozen SeqRec, L2-SP fine-tuning, Reptile start.

``ItemSpace`` holds what the features need from outside the samples (SeqRec item vectors, text
embeddings, implicit popularity), ``like_features`` turns ``LikeSamples`` into a ``LikeFeatures``
batch, ``fit_head`` fine-tunes a head on a labelled budget with full-batch AdamW and a pull toward
its starting weights (L2-SP, so 16 labels cannot undo the prior), and ``reptile_start`` meta-learns
that start with ``meta.reptile.Reptile`` over tasks cut from the budget (the same functional inner
loop as every meta-learner).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metarec.adapt.policies import PolicyConfig, make_policy
from metarec.like.head import LikeFeatures, LikeHead, rating_features, similar_deviation
from metarec.like.samples import LikeSamples
from metarec.meta.reptile import Reptile, ReptileConfig
from metarec.models.batch import SeqBatch
from metarec.models.seqrec import SeqRec


@dataclass(frozen=True, eq=False)
class ItemSpace:
    """seq: (N, D) SeqRec item vectors; text: (N, T) text embeddings; log_pop: (N,) standardised
    log(1 + interactions among train users)."""

    seq: np.ndarray
    text: np.ndarray
    log_pop: np.ndarray

    @classmethod
    def build(cls, model: SeqRec, text: torch.Tensor, counts: np.ndarray) -> ItemSpace:
        with torch.no_grad():
            seq = model.eval().items.all_items().cpu().numpy()
        log_pop = np.log1p(counts.astype(np.float64))
        weights = counts / max(counts.sum(), 1)  # standardise over interactions, not items
        mu = float((weights * log_pop).sum())
        sd = float(np.sqrt((weights * (log_pop - mu) ** 2).sum())) or 1.0
        return cls(seq, text.cpu().numpy(), (log_pop - mu) / sd)


def user_vectors(model: SeqRec, history: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(S, D) SeqRec user vectors of (S, H) histories, in chunks, without gradients."""
    out = []
    model.eval()
    with torch.no_grad():
        vectors = model.items.all_items()
        for start in range(0, len(history), chunk):
            items = torch.from_numpy(history[start : start + chunk])
            users = torch.full((len(items),), -1)
            out.append(model.user_vectors(SeqBatch(users, items), vectors).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.dim), np.float32)


def like_features(samples: LikeSamples, space: ItemSpace, model: SeqRec) -> LikeFeatures:
    """The head's input for every sample: (S, 8) numeric features, (S, D + T) item vectors."""
    user = user_vectors(model, samples.history)  # (S, D)
    cand = space.seq[samples.item]  # (S, D)
    cos = (user * cand).sum(1) / np.maximum(
        np.linalg.norm(user, axis=1) * np.linalg.norm(cand, axis=1), 1e-12
    )
    hist, hr, item = samples.history, samples.history_rating, samples.item
    numeric = np.column_stack(
        [
            rating_features(hr),
            similar_deviation(space.text, hist, hr, item),
            similar_deviation(space.seq, hist, hr, item),
            space.log_pop[item],
            cos,
        ]
    )
    seq_unit = cand / np.maximum(np.linalg.norm(cand, axis=1, keepdims=True), 1e-12)
    item_vec = np.concatenate([seq_unit, space.text[item]], axis=1)
    return LikeFeatures(
        torch.from_numpy(numeric.astype(np.float32)),
        torch.from_numpy(item_vec.astype(np.float32)),
        torch.from_numpy(samples.label.astype(np.float32)),
    )


@dataclass(frozen=True)
class HeadFitConfig:
    steps: int = 200
    lr: float = 0.02
    pull: float = 1.0  # L2-SP: (pull / rows) * ||theta - theta_start||^2 beside the mean BCE
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"invalid learning rate: {self.lr}")
        if self.pull < 0:
            raise ValueError(f"pull must be >= 0, got {self.pull}")


def fit_head(head: LikeHead, batch: LikeFeatures, cfg: HeadFitConfig) -> list[float]:
    """Full-batch AdamW on mean BCE + (pull / rows) * ||theta - theta_0||^2 (theta_0: the head
    as given): a fixed-strength prior against a likelihood that grows with the rows, so few
    labels move the head little and many labels move it more.

    Returns the BCE at every step; the head is trained in place.
    """
    torch.manual_seed(cfg.seed)
    start = {k: v.detach().clone() for k, v in head.named_parameters()}
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=0.0)
    losses = []
    head.train()
    for _ in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        bce = head.loss(batch)
        pull = sum(((p - start[k]) ** 2).sum() for k, p in head.named_parameters())
        loss = bce + cfg.pull / len(batch) * pull
        loss.backward()
        opt.step()
        losses.append(float(bce.detach()))
    return losses


@dataclass(frozen=True)
class ReptileStartConfig:
    meta_steps: int = 100
    tasks_per_step: int = 4
    support: int = 16  # labelled rows per task support set (history targets count)
    inner_steps: int = 5
    inner_lr: float = 0.1
    step_size: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.meta_steps, self.tasks_per_step, self.support, self.inner_steps) < 1:
            raise ValueError("meta_steps, tasks_per_step, support and inner_steps must be >= 1")
        if not self.inner_lr > 0 or not self.step_size > 0:
            raise ValueError("inner_lr and step_size must be > 0")


def reptile_start(head: LikeHead, batch: LikeFeatures, cfg: ReptileStartConfig) -> LikeHead:
    """A copy of ``head`` whose weights Reptile meta-learned on tasks drawn from ``batch``:
    each task's support is ``cfg.support`` random rows, its query another as many."""
    model = copy.deepcopy(head)
    policy = make_policy(PolicyConfig("all"), model)
    rc = ReptileConfig(cfg.inner_lr, cfg.inner_steps, step_size=cfg.step_size)
    learner = Reptile(model, policy, rc)
    rng = np.random.default_rng(cfg.seed)
    n = len(batch)
    size = min(cfg.support, max(1, n // 2))
    for _ in range(cfg.meta_steps):
        tasks = []
        for _ in range(cfg.tasks_per_step):
            perm = rng.permutation(n)
            tasks.append((batch.take(perm[:size]), batch.take(perm[size : 2 * size])))
        learner.meta_step(tasks)
    return model


def predict(model: nn.Module, batch: LikeFeatures) -> np.ndarray:
    """(B,) logits of a like model, without gradients."""
    model.eval()
    with torch.no_grad():
        return model.score(batch).cpu().numpy().astype(np.float64)
