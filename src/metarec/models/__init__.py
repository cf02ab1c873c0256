"""Plain recommender models: ``loss(batch)`` and ``score(batch, items=None)``."""

from __future__ import annotations

from metarec.models.baselines import BPR, BPRConfig, Popularity, PopularityConfig
from metarec.models.batch import PAD, FeatureBatch, FeedbackBatch, LikeBatch, PairBatch, SeqBatch
from metarec.models.item_tower import ItemTower, ItemTowerConfig
from metarec.models.like_net import LikeNet, LikeNetConfig
from metarec.models.seqrec import SeqRec, SeqRecConfig, SeqRecOptions

MODEL_TYPES = {
    "seqrec": (SeqRec, SeqRecConfig),
    "bpr": (BPR, BPRConfig),
    "popularity": (Popularity, PopularityConfig),
    "like-net": (LikeNet, LikeNetConfig),
}

__all__ = [
    "BPR",
    "MODEL_TYPES",
    "PAD",
    "BPRConfig",
    "FeatureBatch",
    "FeedbackBatch",
    "ItemTower",
    "ItemTowerConfig",
    "LikeBatch",
    "LikeNet",
    "LikeNetConfig",
    "PairBatch",
    "Popularity",
    "PopularityConfig",
    "SeqBatch",
    "SeqRec",
    "SeqRecConfig",
    "SeqRecOptions",
]
