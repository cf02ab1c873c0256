"""Cold users with explicit feedback: their K rated items as feature rows for a like model.

A frozen next-item model (SeqRec) gives every item a vector v and every history a user vector h;
``FeatureSpace`` turns (h, item) into the feature row ``[h, v, h * v, popularity, quality]`` (or,
for the item-only view MeLU works with, ``[v, popularity, quality]``), where popularity is the
standardised log count and quality the standardised shrunk mean rating among the training users
(``item_quality``): what the crowd thinks of the item, never the user's own rating.
``like_users`` cuts each user with at least K + 1 rated interactions (time order, as
``meta.tasks``) into

- support: the first K items, each a row whose h reads the *other* K - 1 support items (leave one
  out: the item itself is not in its own history, exactly as for a query item), with its label
  rating > 3 (``meta.tasks.like_labels``);
- query: the next ``n_query`` items, each a row whose h reads the K support items;
- for ranking (``with_ranking``): the frozen model's next-item log-probabilities over the whole
  catalogue from the support history.

The rows never say how the user rated anything: h and v come from which items were consumed,
in what order. Only adaptation on the labelled support rows can use the ratings, which is what
the coldstart-like protocol measures. ``score_like_users`` adapts a ``LikeNet`` (or not) to each
user's support rows and scores the query rows (AUC, log-loss, within-user AUC) and the full
catalogue (NDCG@10 of the liked query items, ranked by log P(next item) + log P(like)).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metarec.data.schema import Interactions
from metarec.errors import DataError
from metarec.evaluation.metrics import auc, log_loss
from metarec.meta.functional import frozen_item_vectors, functional_score, like_logits
from metarec.meta.inference import PolicyBundle, model_max_len
from metarec.meta.inner import adapt_detached
from metarec.meta.learners import Learner
from metarec.meta.tasks import Task, history_batch, like_labels, user_parts
from metarec.meta.train import eval_mode, rank_scores
from metarec.models.batch import FeatureBatch, SeqBatch

VIEWS = ("user-item", "item")  # item: MeLU's input, no history vector


@dataclass(frozen=True, eq=False)
class FeatureSpace:
    """Item vectors (N, D), standardised log popularity and mean rating (N,) of a catalogue."""

    vectors: torch.Tensor
    popularity: torch.Tensor
    quality: torch.Tensor
    view: str = "user-item"

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {self.view!r}")

    @property
    def dim(self) -> int:
        d = self.vectors.shape[1]
        return 3 * d + 2 if self.view == "user-item" else d + 2

    def rows(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(R, F) features of user vectors h (R, D) against items (R,)."""
        v = self.vectors[items]
        crowd = torch.stack([self.popularity[items], self.quality[items]], dim=1)
        if self.view == "item":
            return torch.cat([v, crowd], dim=1)
        return torch.cat([h, v, h * v, crowd], dim=1)

    def catalogue(self, h: torch.Tensor) -> torch.Tensor:
        """(N, F) features of one user vector h (D,) against every item."""
        n = len(self.vectors)
        return self.rows(h.expand(n, -1), torch.arange(n))

    def item_view(self) -> FeatureSpace:
        return FeatureSpace(self.vectors, self.popularity, self.quality, "item")


def feature_space(model: nn.Module, train: Interactions, n_items: int) -> FeatureSpace:
    """The frozen model's item vectors and the training users' popularity and mean ratings."""
    with eval_mode(model), torch.no_grad():
        vectors = frozen_item_vectors(model, ())
    if vectors is None:
        raise ValueError(f"{type(model).__name__} has no item tower to read item vectors from")
    counts = np.bincount(train.item, minlength=n_items)
    pop = _standardised(np.log1p(counts))
    return FeatureSpace(vectors.float().cpu(), pop, _standardised(item_quality(train, n_items)))


def item_quality(train: Interactions, n_items: int, prior: float = 5.0) -> np.ndarray:
    """(N,) each item's mean rating among ``train``'s users, shrunk toward the global mean by
    ``prior`` pseudo-ratings (an item nobody rated: the global mean)."""
    if train.rating is None:
        raise DataError("item quality needs ratings; this data has none")
    rating = np.asarray(train.rating, dtype=np.float64)
    total = np.bincount(train.item, weights=rating, minlength=n_items)
    n = np.bincount(train.item, minlength=n_items)
    return (total + prior * float(rating.mean())) / (n + prior)


def _standardised(x: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32)
    return (t - t.mean()) / t.std().clamp_min(1e-6)


@dataclass(frozen=True, eq=False)
class LikeUser:
    """One user at one K: items and labels in time order, their feature rows (both views)."""

    user: int
    support_items: np.ndarray  # (K,)
    support_labels: np.ndarray  # (K,) 0/1
    support_ratings: np.ndarray  # (K,)
    query_items: np.ndarray  # (Q,)
    query_labels: np.ndarray  # (Q,) 0/1
    h_support: torch.Tensor  # (K, D) user vector of each support row (the other K - 1 items)
    h_query: torch.Tensor  # (D,) user vector of the K support items
    next_item: torch.Tensor | None = None  # (N,) log P(next item | support), for ranking

    def batches(self, space: FeatureSpace) -> tuple[FeatureBatch, FeatureBatch]:
        """(support, query) feature batches in ``space``'s view."""
        s_items = torch.from_numpy(self.support_items)
        q_items = torch.from_numpy(self.query_items)
        h_q = self.h_query.expand(len(q_items), -1)
        support = FeatureBatch(space.rows(self.h_support, s_items), _f32(self.support_labels))
        query = FeatureBatch(space.rows(h_q, q_items), _f32(self.query_labels))
        return support, query

    def task(self, space: FeatureSpace) -> Task:
        support, query = self.batches(space)
        return Task("like", self.user, support, query, None, self.support_items, self.query_items)


def like_users(
    model: nn.Module,
    inter: Interactions,
    k: int,
    n_query: int = 20,
    threshold: float = 3.0,
    with_ranking: bool = False,
) -> list[LikeUser]:
    """Every user of ``inter`` with at least k + 1 rated interactions (module docstring)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or n_query < 1:
        raise ValueError(f"k and n_query must be positive integers, got {k!r}, {n_query!r}")
    if inter.rating is None:
        raise DataError(
            "coldstart-like needs explicit feedback (a rating or 0/1 label column); "
            "this data has none"
        )
    max_len = model_max_len(model)
    out = []
    with eval_mode(model), torch.no_grad():
        vectors = frozen_item_vectors(model, ())
        for user, s, q, rs, rq in user_parts(inter, k, n_query):
            h_support = _leave_one_out_vectors(model, s, max_len, vectors)
            history = history_batch(s, max_len, user)
            h_query = model.user_vectors(history, vectors)[0]
            ranking = None
            if with_ranking:
                scores = functional_score(model, {}, history, None, vectors)[0]
                ranking = torch.log_softmax(scores.float(), dim=0).cpu()
            out.append(
                LikeUser(
                    user,
                    s,
                    like_labels(rs, threshold),
                    np.asarray(rs, dtype=np.float32),
                    q,
                    like_labels(rq, threshold),
                    h_support.float().cpu(),
                    h_query.float().cpu(),
                    ranking,
                )
            )
    return out


def _leave_one_out_vectors(
    model: nn.Module, support: np.ndarray, max_len: int, vectors: torch.Tensor
) -> torch.Tensor:
    """(K, D): row j the user vector of the support items other than j (time order); a zero
    vector where nothing is left (K = 1)."""
    k = len(support)
    if k == 1:
        return vectors.new_zeros(1, vectors.shape[1])
    rows = np.stack([np.delete(support, j) for j in range(k)])[:, -max_len:]
    batch = SeqBatch(torch.full((k,), -1), torch.from_numpy(rows.astype(np.int64)))
    return model.user_vectors(batch, vectors)


Adapter = Learner | PolicyBundle


@dataclass
class LikeScores:
    """Pooled query labels and logits, per-user within-user AUC, per-user NDCG@10 of the liked
    query items, adaptation times."""

    labels: list[np.ndarray] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)
    ndcg: list[float] = field(default_factory=list)
    adapt_ms: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        y = np.concatenate(self.labels)
        z = torch.from_numpy(np.concatenate(self.logits)).double()
        out = {"AUC": auc(y, z), "LogLoss": log_loss(y, torch.sigmoid(z))}
        within = [
            auc(yu, torch.from_numpy(zu).double())
            for yu, zu in zip(self.labels, self.logits, strict=True)
            if 0 < yu.sum() < len(yu)
        ]
        if within:
            out["UserAUC"] = float(np.mean(within))
        if self.ndcg:
            out["NDCG@10"] = float(np.mean(self.ndcg))
        return out


def adapt_like(net: nn.Module, adapter: Adapter | None, support: FeatureBatch):
    """(policy or None, fast parameters) after adapting ``net`` to one user's support rows."""
    if adapter is None:
        return None, {}
    if isinstance(adapter, PolicyBundle):
        policy = adapter.policy
        start = adapter.start if adapter.start is not None else policy.init_fast(net)
        return policy, adapt_detached(net, policy, start, support, adapter.inner_opt, adapter.steps)
    return adapter.policy, adapter.adapt_task(support)


def score_like_users(
    net: nn.Module,
    adapter: Adapter | None,
    users: list[LikeUser],
    space: FeatureSpace,
    rank: bool = True,
    k: int = 10,
) -> LikeScores:
    """Adapt to each user's support rows (``adapter`` None: no adaptation) and score the query
    rows; with ``rank`` (users built ``with_ranking``) also rank the catalogue."""
    out = LikeScores()
    with eval_mode(net):
        for lu in users:
            support, query = lu.batches(space)
            start = time.perf_counter()
            policy, fast = adapt_like(net, adapter, support)
            if adapter is not None:
                out.adapt_ms.append(1000.0 * (time.perf_counter() - start))
            with torch.no_grad():
                params = (
                    dict(net.named_parameters())
                    if policy is None
                    else policy.effective_params(net, fast)
                )
                logits = like_logits(net, params, query)
                out.labels.append(lu.query_labels.astype(np.float64))
                out.logits.append(logits.double().numpy())
                if rank and lu.next_item is not None and lu.query_labels.any():
                    catalogue = FeatureBatch(space.catalogue(lu.h_query), torch.zeros(0))
                    like = F.logsigmoid(like_logits(net, params, catalogue).float())
                    out.ndcg.append(_ndcg_liked(lu.next_item + like, lu, k))
    return out


def score_next_item(users: list[LikeUser], k: int = 10) -> LikeScores:
    """The frozen next-item model alone: its log P(next item) as the like logit and ranking."""
    out = LikeScores()
    for lu in users:
        if lu.next_item is None:
            raise ValueError("score_next_item needs users built with_ranking=True")
        out.labels.append(lu.query_labels.astype(np.float64))
        out.logits.append(lu.next_item[torch.from_numpy(lu.query_items)].double().numpy())
        if lu.query_labels.any():
            out.ndcg.append(_ndcg_liked(lu.next_item, lu, k))
    return out


def score_constant(users: list[LikeUser], value) -> LikeScores:
    """A baseline logit per query row, ``value(user) -> (Q,)`` (no ranking)."""
    out = LikeScores()
    for lu in users:
        out.labels.append(lu.query_labels.astype(np.float64))
        out.logits.append(np.asarray(value(lu), dtype=np.float64))
    return out


def _ndcg_liked(scores: torch.Tensor, lu: LikeUser, k: int) -> float:
    liked = np.unique(lu.query_items[lu.query_labels > 0])
    ranked = rank_scores(scores[None], (liked,), (lu.support_items,), k)
    return float(ranked[f"NDCG@{k}"][0])


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


__all__ = [
    "FeatureSpace",
    "LikeScores",
    "LikeUser",
    "adapt_like",
    "feature_space",
    "item_quality",
    "like_users",
    "score_constant",
    "score_like_users",
    "score_next_item",
]
