"""LikeNet: a small MLP that maps (user, candidate) feature rows to a like/click logit.

The shape follows MeLU (Lee et al., KDD 2019): an input ("embedding") layer, decision layers and
an output layer, with the decision and output layers declared as the model's ``head`` so a
meta-learner adapts exactly what MeLU's local update adapts. Its input is a ``FeatureBatch``:
rows built outside (``like.cold_start``) from a frozen recommender's user and item vectors, so
the net never sees how a user rated anything; only adaptation on the user's labelled support
rows can tell it. The input is layer-normalised, so vectors of any scale train with one rate.

A plain ``nn.Module``: ``loss(batch)`` (binary cross-entropy) and ``score(batch)`` (logits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metarec.models.batch import FeatureBatch
from metarec.models.surfaces import AdaptationSurfaces


@dataclass(frozen=True)
class LikeNetConfig:
    in_dim: int
    hidden: int = 64  # width of the input layer
    decide: int = 32  # width of the decision layer
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if min(self.in_dim, self.hidden, self.decide) < 1:
            raise ValueError(
                f"in_dim, hidden and decide must be positive, got {self.in_dim}, "
                f"{self.hidden}, {self.decide}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class LikeNet(nn.Module):
    def __init__(self, config: LikeNetConfig):
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.in_dim)
        self.embed = nn.Linear(config.in_dim, config.hidden)
        self.decide = nn.Linear(config.hidden, config.decide)
        self.out = nn.Linear(config.decide, 1)
        self.drop = nn.Dropout(config.dropout)

    def adaptation_surfaces(self) -> AdaptationSurfaces:
        # head: MeLU's local update (decision + output layers); the user vector shifts the
        # first hidden layer, one per-user offset of every unit
        return AdaptationSurfaces(head=("decide", "out"), user_vector=("embed.bias",))

    def score(self, batch: FeatureBatch) -> torch.Tensor:
        """(B,) like/click logits."""
        h = self.drop(F.relu(self.embed(self.norm(batch.x))))
        h = self.drop(F.relu(self.decide(h)))
        return self.out(h)[:, 0]

    def loss(self, batch: FeatureBatch) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.score(batch), batch.labels.float())
