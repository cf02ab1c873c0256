"""A light like/click head over SeqRec's user and item vectors and the history's ratings.

The head reads a ``LikeFeatures`` batch: numeric features of the sample's rated history (the
user's own rating scale: the share of liked items, mean, spread, recent drift, similarity-weighted
deviations, item popularity, user-item cosine), the candidate's item vector (SeqRec item vector
and text embedding). Its logit is

    w · numeric + b + q(item vector)

where ``w`` starts at ``LikeHeadConfig.prior`` (by default the history's like share and mean
rating, which alone beat the history-mean baseline) and the item-quality map ``q`` starts at
zero, so an untrained head is already a sensible scorer and few labels only have to correct it.
A plain ``nn.Module``: ``loss(batch)`` and ``score(batch)``; fitting lives in ``like.fit``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NUMERIC = (
    "like_share",  # fraction of history ratings > threshold, minus 0.5
    "mean",  # history mean rating minus 3.5
    "std",  # history rating standard deviation
    "recent",  # mean of the 3 most recent ratings minus the history mean
    "text_dev",  # rating deviation of the history items most similar in text
    "seq_dev",  # the same with SeqRec item vectors
    "popularity",  # standardised log(1 + interactions among train users)
    "user_item",  # cosine of SeqRec's user vector (history) and the candidate's vector
)


@dataclass(frozen=True)
class LikeHeadConfig:
    item_dim: int  # width of the candidate's item vector (SeqRec dim + text dim)
    prior: tuple[float, ...] = (4.0, 1.0, 0, 0, 0, 0, 0, 0)  # start of w, one per NUMERIC
    bias: float = 0.4  # start of b (positives are ~60% in MovieLens)

    def __post_init__(self) -> None:
        if self.item_dim < 1:
            raise ValueError(f"item_dim must be positive, got {self.item_dim}")
        if len(self.prior) != len(NUMERIC):
            raise ValueError(
                f"prior has {len(self.prior)} weights, expected {len(NUMERIC)} ({NUMERIC})"
            )


@dataclass
class LikeFeatures:
    """numeric: (B, F) float32; item: (B, E) float32 candidate vectors; labels: (B,) 0/1."""

    numeric: torch.Tensor
    item: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor | np.ndarray) -> LikeFeatures:
        index = torch.as_tensor(index)
        return LikeFeatures(*(getattr(self, f.name)[index] for f in fields(self)))


class LikeHead(nn.Module):
    """Pointwise P(like) logit from numeric history features and the candidate's vector."""

    def __init__(self, config: LikeHeadConfig):
        super().__init__()
        self.config = config
        self.numeric = nn.Linear(len(NUMERIC), 1)
        self.quality = nn.Linear(config.item_dim, 1, bias=False)
        with torch.no_grad():
            self.numeric.weight.copy_(torch.tensor([config.prior], dtype=torch.float32))
            self.numeric.bias.fill_(config.bias)
            self.quality.weight.zero_()

    def score(self, batch: LikeFeatures, items: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) logits (``items`` is not used: each row has its one candidate)."""
        return self.numeric(batch.numeric)[:, 0] + self.quality(batch.item)[:, 0]

    def loss(self, batch: LikeFeatures) -> torch.Tensor:
        """Mean binary cross-entropy of the logits against ``batch.labels``."""
        logits = self.score(batch)
        return F.binary_cross_entropy_with_logits(logits, batch.labels.to(logits.dtype))


def rating_features(history_rating: np.ndarray, threshold: float = 3.0) -> np.ndarray:
    """(S, 4) like_share, mean, std, recent from (S, H) history ratings (most recent last)."""
    r = history_rating.astype(np.float64)
    mean = r.mean(axis=1)
    return np.stack(
        [
            (r > threshold).mean(axis=1) - 0.5,
            mean - 3.5,
            r.std(axis=1),
            r[:, -3:].mean(axis=1) - mean,
        ],
        axis=1,
    )


def similar_deviation(
    vectors: np.ndarray,
    history: np.ndarray,
    history_rating: np.ndarray,
    item: np.ndarray,
    tau: float = 0.1,
) -> np.ndarray:
    """(S,) softmax(cosine / tau)-weighted deviation of the history ratings from their mean:
    how this user rated the history items most like the candidate. vectors: (N, D)."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sim = np.einsum("sd,shd->sh", unit[item], unit[history])  # (S, H)
    w = np.exp((sim - sim.max(axis=1, keepdims=True)) / tau)
    w /= w.sum(axis=1, keepdims=True)
    dev = history_rating - history_rating.mean(axis=1, keepdims=True)
    return (w * dev).sum(axis=1)
