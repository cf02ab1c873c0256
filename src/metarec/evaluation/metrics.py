"""Pure ranking and pointwise metrics over torch tensors (numpy arrays accepted).

Ranking metrics come in two shapes. The general one starts from a hit matrix ``hits: (B, K)
bool`` (``hits[b, j]``: the item at 0-based rank ``j`` of row ``b`` is relevant, the list ranked
over the full catalogue) and ``n_relevant: (B,)``. The fast single-target one starts from the
0-based rank of the one target item per row (``target_ranks``). Every ranking metric returns one
float64 value per row; average them (or pass them to ``mean_ci95``) at the caller.

Ties are counted pessimistically everywhere: an item scoring the same as a relevant one is ranked
above it, so a constant scorer cannot look good.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray | Sequence[float]


def _as_tensor(x: ArrayLike) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def _check_hits(hits: ArrayLike, k: int) -> Tensor:
    """The first k columns of a (B, K) hit matrix as float64, after checking 1 <= k <= K."""
    hits = _as_tensor(hits)
    if hits.dim() != 2:
        raise ValueError(f"hits must be a (B, K) matrix, got shape {tuple(hits.shape)}")
    n_cols = hits.shape[1]
    if not 1 <= k <= n_cols:
        raise ValueError(f"k={k} must be between 1 and K={n_cols}, the length of the ranked lists")
    return hits[:, :k].to(torch.float64)


def _discounts(k: int, device: torch.device) -> Tensor:
    """(k,) DCG discounts 1 / log2(rank + 2) for 0-based ranks."""
    return 1.0 / torch.log2(torch.arange(k, device=device, dtype=torch.float64) + 2.0)


def recall_at_k(hits: ArrayLike, n_relevant: ArrayLike, k: int) -> Tensor:
    """(B,) relevant items in the top k over all relevant items; 0 for rows with none."""
    top = _check_hits(hits, k)
    n_rel = _as_tensor(n_relevant).to(device=top.device, dtype=torch.float64)
    return top.sum(1) / n_rel.clamp(min=1.0)


def hit_rate_at_k(hits: ArrayLike, k: int) -> Tensor:
    """(B,) 1 where any relevant item is in the top k, else 0."""
    return (_check_hits(hits, k).sum(1) > 0).to(torch.float64)


def ndcg_at_k(hits: ArrayLike, n_relevant: ArrayLike, k: int) -> Tensor:
    """(B,) binary-gain DCG@k over the DCG of min(n_relevant, k) hits at the top; 0 if none."""
    top = _check_hits(hits, k)
    disc = _discounts(k, top.device)  # (k,)
    dcg = top @ disc  # (B,)
    ideal_cum = torch.cat([disc.new_zeros(1), disc.cumsum(0)])  # (k + 1,) IDCG by hit count
    n_ideal = _as_tensor(n_relevant).to(device=top.device, dtype=torch.long).clamp(0, k)
    idcg = ideal_cum[n_ideal]  # (B,)
    return torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.zeros_like(dcg))


def mrr_at_k(hits: ArrayLike, k: int) -> Tensor:
    """(B,) 1 / (rank + 1) of the first relevant item within the top k, else 0."""
    top = _check_hits(hits, k)
    first = top.argmax(1)  # first maximum: the first hit, or 0 when there is none
    return top.amax(1) / (first.to(torch.float64) + 1.0)


def metrics_from_ranks(ranks: ArrayLike, ks: Iterable[int] = (10,)) -> dict[str, Tensor]:
    """Per-row HR@k, NDCG@k, MRR@k and Recall@k (= HR@k) from (B,) 0-based target ranks."""
    ranks = _as_tensor(ranks).to(torch.float64)
    out: dict[str, Tensor] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k={k} must be a positive cut-off")
        hit = (ranks < k).to(torch.float64)
        out[f"HR@{k}"] = hit
        out[f"NDCG@{k}"] = hit / torch.log2(ranks + 2.0)
        out[f"MRR@{k}"] = hit / (ranks + 1.0)
        out[f"Recall@{k}"] = hit.clone()
    return out


def _check_scores(scores: Tensor, other: Tensor | None, name: str) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be a (B, N) matrix, got shape {tuple(scores.shape)}")
    if other is not None and other.shape != scores.shape:
        raise ValueError(f"{name} has shape {tuple(other.shape)}, scores {tuple(scores.shape)}")


def target_ranks(
    scores: ArrayLike, targets: ArrayLike, exclude_mask: ArrayLike | None = None
) -> Tensor:
    """(B,) int64 0-based rank of each target among the non-excluded items of its row.

    scores: (B, N); targets: (B,) item indices; exclude_mask: (B, N) bool, True = not ranked
    (e.g. the user's history). The target is never excluded, even where the mask marks it.
    Ties are pessimistic: every other item scoring >= the target counts as ranked above it, so
    a constant (or collapsed) scorer gets the worst rank, not the best. NaN scores count the same
    way (a NaN target is ranked last). Pure tensor ops: call it per chunk of rows.
    """
    scores = _as_tensor(scores)
    targets = _as_tensor(targets).to(device=scores.device, dtype=torch.long)
    mask = None if exclude_mask is None else _as_tensor(exclude_mask).to(scores.device, torch.bool)
    _check_scores(scores, mask, "exclude_mask")
    n_rows, n_items = scores.shape
    if targets.shape != (n_rows,):
        raise ValueError(f"targets has shape {tuple(targets.shape)}, expected ({n_rows},)")
    if n_rows and (targets.min() < 0 or targets.max() >= n_items):
        raise ValueError(f"targets must be item indices in [0, {n_items}), got out-of-range values")
    target_score = scores.gather(1, targets[:, None])  # (B, 1)
    above = (scores >= target_score) | scores.isnan() | target_score.isnan()  # (B, N)
    if mask is not None:
        above &= ~mask
    above.scatter_(1, targets[:, None], False)  # the target is never above itself
    return above.sum(1)


def topk_hits(
    scores: ArrayLike, relevant_mask: ArrayLike, k: int, exclude_mask: ArrayLike | None = None
) -> tuple[Tensor, Tensor]:
    """Hit matrix (B, k) bool of the top-k non-excluded items, and n_relevant (B,) int64.

    scores: (B, N); relevant_mask, exclude_mask: (B, N) bool. Relevant items are never excluded.
    Ties are pessimistic (non-relevant before relevant) and NaN scores rank a relevant item
    last and a non-relevant one first. Excluded items only fill the list where k exceeds the
    non-excluded items, and never count as hits.
    """
    scores = _as_tensor(scores)
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)
    relevant = _as_tensor(relevant_mask).to(scores.device, torch.bool)
    _check_scores(scores, relevant, "relevant_mask")
    excluded = torch.zeros_like(relevant)
    if exclude_mask is not None:
        excluded = _as_tensor(exclude_mask).to(scores.device, torch.bool)
        _check_scores(scores, excluded, "exclude_mask")
        excluded = excluded & ~relevant
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the number of items N={scores.shape[1]}")
    inf = torch.tensor(math.inf, dtype=scores.dtype, device=scores.device)
    key = torch.where(scores.isnan(), torch.where(relevant, -inf, inf), scores)
    key = key.masked_fill(excluded, -math.inf)
    # Stable sorts keep column order among ties: put non-relevant, relevant, excluded in that order.
    group = relevant.to(torch.uint8) + 2 * excluded.to(torch.uint8)  # (B, N)
    order = torch.argsort(group, dim=1, stable=True)  # (B, N)
    ranked = torch.sort(key.gather(1, order), dim=1, descending=True, stable=True).indices
    top_items = order.gather(1, ranked[:, :k])  # (B, k)
    return relevant.gather(1, top_items), relevant.sum(1)


def _binary_labels(labels: ArrayLike, n_scores: int) -> Tensor:
    y = _as_tensor(labels).flatten()
    if y.numel() != n_scores:
        raise ValueError(f"labels has {y.numel()} values, scores/probabilities {n_scores}")
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("labels must be binary (0/1 or bool)")
    return y.to(torch.bool)


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC via the Mann–Whitney U statistic with average ranks for ties.

    labels: (n,) 0/1; scores: (n,). Equals sklearn.metrics.roc_auc_score. Raises ValueError when
    only one class is present, since AUC is undefined there.
    """
    s = _as_tensor(scores).flatten().to(torch.float64)
    y = _binary_labels(labels, s.numel()).to(s.device)
    if bool(s.isnan().any()):
        raise ValueError("scores contain NaN; AUC is undefined")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"AUC needs both classes, got {n_pos} positive and {n_neg} negative labels"
        )
    _, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    avg_rank = counts.cumsum(0).to(torch.float64) - (counts.to(torch.float64) - 1.0) / 2.0
    rank_sum = avg_rank[inverse][y].sum().item()  # 1-based average ranks of the positives
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def log_loss(labels: ArrayLike, probs: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (n,) against 0/1 labels (n,), clipped to eps."""
    p = _as_tensor(probs).flatten().to(torch.float64).clamp(eps, 1.0 - eps)
    y = _binary_labels(labels, p.numel()).to(device=p.device, dtype=torch.float64)
    if p.numel() == 0:
        raise ValueError("log_loss needs at least one label")
    return -(y * p.log() + (1.0 - y) * (1.0 - p).log()).mean().item()


def mean_ci95(values: ArrayLike) -> tuple[float, tuple[float, float]]:
    """Mean and two-sided 95% confidence interval from the t-distribution with n - 1 dof.

    values: (n,) per-seed or per-fold figures; n = 1 gives the degenerate interval (v, v).
    """
    v = _as_tensor(values).flatten().to(torch.float64).cpu().numpy()
    if v.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = float(v.mean())
    if v.size == 1:
        return mean, (mean, mean)
    from scipy.stats import t  # lazy: scipy is slow to import

    half = float(t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, (mean - half, mean + half)
