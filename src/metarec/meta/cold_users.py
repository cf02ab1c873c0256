"""Cold-start users, and how one adaptation method scores on them: the library's one scorer.

A ``ColdUser`` holds, for one K, what PROTOCOLS.md coldstart-ml ranks: support = the user's first
K interactions in time, query = up to the next ``n_query``, and as many sampled items the user
never interacted with (for AUC and log-loss of the like/click logit). ``score_users`` adapts the
model to each user's support set (``meta.inference.adapt_user``), ranks the full catalogue minus
the support items from the support set as history, and times every adaptation. Both
``metarec meta-train``'s no-adapt / adapted table (``workflows.meta_train``) and the coldstart-ml
protocol score cold users here; the ranking itself is ``meta.train.rank_scores``, the one
meta-validation uses too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from metarec.data.schema import Interactions
from metarec.data.sequences import user_sequences
from metarec.evaluation.metrics import auc, log_loss
from metarec.evaluation.next_item import model_device
from metarec.meta.functional import frozen_item_vectors, functional_score
from metarec.meta.inference import PolicyBundle, adapt_user, model_max_len
from metarec.meta.learners import Learner
from metarec.meta.tasks import history_batch, like_labels, user_parts
from metarec.meta.train import eval_mode, rank_scores

Adapter = Learner | PolicyBundle


@dataclass(frozen=True, eq=False)
class ColdUser:
    user: int
    support: np.ndarray  # (K,) item indices in time order
    query: np.ndarray  # (Q,) the next items: the positives
    negatives: np.ndarray  # (Q,) items the user never interacted with
    support_labels: np.ndarray | None = None  # (K,) 0/1 disliked / liked, where rated


@dataclass
class MethodScores:
    """Per-user NDCG@10 / Recall@10, pooled like/click labels and logits, adaptation times."""

    ndcg: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)
    adapt_ms: list[float] = field(default_factory=list)

    def ranking(self) -> dict[str, float]:
        """Mean NDCG@10 and Recall@10 over users."""
        return {"NDCG@10": float(np.mean(self.ndcg)), "Recall@10": float(np.mean(self.recall))}

    def metrics(self, with_logloss: bool = True) -> dict[str, float]:
        out = self.ranking()
        y = np.concatenate(self.labels)
        z = torch.from_numpy(np.concatenate(self.logits)).double()
        out["AUC"] = auc(y, z)
        if with_logloss:
            out["LogLoss"] = log_loss(y, torch.sigmoid(z))
        return out


def cold_users(
    inter: Interactions,
    k: int,
    n_query: int,
    n_items: int,
    seed: tuple[int, ...],
    threshold: float = 3.0,
) -> list[ColdUser]:
    """Every user of ``inter`` with at least k + 1 interactions, for this K; the negatives are
    drawn (seeded by ``seed``, the user and K) from the items outside the user's whole history.
    Where ``inter`` has ratings, each support item's like label (rating > ``threshold``)."""
    indptr, items = user_sequences(inter, int(inter.user.max(initial=-1)) + 1)
    if inter.rating is not None:  # what a feedback-aware support loss reads (like_weight)
        inter = replace(inter, rating=like_labels(inter.rating, threshold))
    out = []
    for u, s, q, ys, _ in user_parts(inter, k, n_query):
        seen = np.unique(items[indptr[u] : indptr[u + 1]])
        rng = np.random.default_rng([*seed, u, k])
        out.append(ColdUser(u, s, q, _sample_unseen(rng, seen, len(q), n_items), ys))
    return out


def score_users(
    model: nn.Module,
    adapter: Adapter | None,
    users: list[ColdUser],
    k: int = 10,
    like_weight: float = 0.0,
) -> MethodScores:
    """Adapt to each user's support set (``adapter`` None: no adaptation), then rank; with
    ``like_weight`` > 0 the support loss adds the like/dislike cross-entropy of the user's
    support labels (``adapt_user``), which every user then needs."""
    if like_weight > 0 and any(cu.support_labels is None for cu in users):
        raise ValueError("a like weight needs the support labels of every user (ratings)")
    out = MethodScores()
    device = model_device(model)
    with eval_mode(model):
        for cu in users:
            fast: dict[str, torch.Tensor] = {}
            if adapter is not None:
                start = time.perf_counter()
                fast = adapt_user(
                    model, adapter, cu.support.tolist(), None, cu.support_labels, like_weight
                )
                out.adapt_ms.append(1000.0 * (time.perf_counter() - start))
            with torch.no_grad():
                vectors = frozen_item_vectors(model, tuple(fast))
                history = history_batch(cu.support, model_max_len(model)).to(device)
                scores = functional_score(model, fast, history, None, vectors)[0].float().cpu()
            _add_user(out, scores, cu, k)
    return out


def score_popularity(counts: np.ndarray, users: list[ColdUser], k: int = 10) -> MethodScores:
    """Train-user interaction counts as the score of every cold user (logits: log(1 + count))."""
    scores = torch.from_numpy(np.log1p(counts.astype(np.float64)))
    out = MethodScores()
    for cu in users:
        _add_user(out, scores, cu, k)
    return out


def _add_user(out: MethodScores, scores: torch.Tensor, cu: ColdUser, k: int) -> None:
    ranked = rank_scores(scores[None], (cu.query,), (cu.support,), k)
    out.ndcg.append(float(ranked[f"NDCG@{k}"][0]))
    out.recall.append(float(ranked[f"Recall@{k}"][0]))
    both = np.concatenate([cu.query, cu.negatives])
    out.logits.append(scores[torch.from_numpy(both)].double().numpy())
    out.labels.append(np.r_[np.ones(len(cu.query)), np.zeros(len(cu.negatives))])


def _sample_unseen(rng: np.random.Generator, seen: np.ndarray, n: int, n_items: int) -> np.ndarray:
    pool = np.setdiff1d(np.arange(n_items), seen, assume_unique=True)
    return rng.choice(pool, size=min(n, len(pool)), replace=False).astype(np.int64)
