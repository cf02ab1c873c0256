"""Seeds: one integer makes a run repeatable, and each epoch reseeds from (seed, epoch) so a
resumed run continues exactly as an uninterrupted one would."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator for one epoch's shuffling and negative sampling; also seeds torch (dropout)."""
    torch.manual_seed(seed * 100_003 + epoch)
    return np.random.default_rng([seed, epoch])
