"""Baselines that every benchmark runs beside the main model: popularity and BPR-MF."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metarec.models.batch import PairBatch, SeqBatch
from metarec.models.surfaces import AdaptationSurfaces


@dataclass(frozen=True)
class PopularityConfig:
    n_items: int

    def to_dict(self) -> dict:
        return asdict(self)


class Popularity(nn.Module):
    """Scores every item by its interaction count in the training data."""

    def __init__(self, config: PopularityConfig, counts: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        if counts is None:
            counts = torch.zeros(config.n_items)
        self.register_buffer("counts", counts.float().clone())

    @classmethod
    def fit(cls, items: torch.Tensor, n_items: int) -> Popularity:
        """items: (M,) item index of every training interaction."""
        counts = torch.bincount(items.long(), minlength=n_items).float()
        return cls(PopularityConfig(n_items), counts)

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        b = batch.items.shape[0]
        scores = self.counts.expand(b, -1)  # (B, N)
        if items is None:
            return scores
        return self.counts[items].expand(b, -1) if items.dim() == 1 else self.counts[items]

    def loss(self, batch: SeqBatch) -> torch.Tensor:  # pragma: no cover - nothing to learn
        raise NotImplementedError("Popularity is fitted by counting, not by gradient descent")


@dataclass(frozen=True)
class BPRConfig:
    n_users: int
    n_items: int
    dim: int = 64
    l2: float = 1e-5  # on the embeddings a batch touches

    def __post_init__(self) -> None:
        if min(self.n_users, self.n_items, self.dim) < 1:
            raise ValueError("n_users, n_items and dim must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


class BPR(nn.Module):
    """Matrix factorisation trained with the Bayesian personalised ranking loss."""

    def __init__(self, config: BPRConfig):
        super().__init__()
        self.config = config
        self.user_embedding = nn.Embedding(config.n_users, config.dim)
        self.item_embedding = nn.Embedding(config.n_items, config.dim)
        nn.init.normal_(self.user_embedding.weight, std=0.1)
        nn.init.normal_(self.item_embedding.weight, std=0.1)

    def adaptation_surfaces(self) -> AdaptationSurfaces:
        """A task holds one user: the head is the item table, the user vector is added to
        every row of the user table."""
        return AdaptationSurfaces(
            head=("item_embedding",), user_vector=("user_embedding.weight",), id_table=None
        )

    def loss(self, batch: PairBatch) -> torch.Tensor:
        u = self.user_embedding(batch.users)  # (B, D)
        pos = self.item_embedding(batch.positives)  # (B, D)
        neg = self.item_embedding(batch.negatives)  # (B, D)
        margin = (u * (pos - neg)).sum(-1)  # (B,)
        reg = u.pow(2).sum(-1) + pos.pow(2).sum(-1) + neg.pow(2).sum(-1)
        return -F.logsigmoid(margin).mean() + self.config.l2 * reg.mean()

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        """Unknown users (index -1) get a zero vector, hence uniform scores."""
        known = batch.users >= 0
        u = self.user_embedding(batch.users.clamp(min=0)) * known.unsqueeze(-1)  # (B, D)
        if items is None:
            return u @ self.item_embedding.weight.T
        cand = self.item_embedding(items)
        return u @ cand.T if cand.dim() == 2 else torch.einsum("bd,bmd->bm", u, cand)
