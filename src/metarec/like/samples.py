"""fewshot-like samples (PROTOCOLS.md): a user's recent rated items with ratings + one target.

A sample at row t of a user's time-ordered ratings (ties broken by item, as ``data.splits``) is
(the ``history`` rated items just before it with their ratings, the item at t); its label is 1
when the target's rating is above ``threshold`` (3 by default), else 0. Every row with at least
``history`` rated items before it is an eligible target. Built with numpy, no loop over rows.

Users are split 8:1:1 (seeded) into train / validation / test users; a labelled budget is a
seeded draw of samples of the train users (``draw_budget``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from metarec.data.schema import Interactions
from metarec.data.sequences import group_positions, in_time_order
from metarec.errors import ConfigError, DataError


@dataclass(frozen=True, eq=False)
class LikeSamples:
    """S pointwise samples, column by column.

    user: (S,) int64; history: (S, H) int64 item indices, oldest first (most recent last);
    history_rating: (S, H) float32; item: (S,) int64 target; rating: (S,) float32 its rating;
    label: (S,) float32 0/1; time: (S,) int64 the target's timestamp.
    """

    user: np.ndarray
    history: np.ndarray
    history_rating: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    label: np.ndarray
    time: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray) -> LikeSamples:
        """Rows selected by a boolean mask or an integer index array."""
        return LikeSamples(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def of_users(self, users: np.ndarray) -> LikeSamples:
        """The samples whose user is in ``users``."""
        return self.take(np.isin(self.user, users))

    def history_mean(self) -> np.ndarray:
        """(S,) float64 mean rating of each sample's history: the history-mean baseline."""
        return self.history_rating.astype(np.float64).mean(axis=1)


def build_like_samples(
    inter: Interactions, history: int = 10, threshold: float = 3.0
) -> LikeSamples:
    """Every eligible target of every user (rows with >= ``history`` rated items before them)."""
    if inter.rating is None:
        raise DataError("fewshot-like needs ratings; this dataset has no rating column")
    if isinstance(history, bool) or not isinstance(history, int) or history < 1:
        raise ConfigError(f"history must be a positive integer, got {history!r}")
    inter = in_time_order(inter)
    targets = np.flatnonzero(group_positions(inter.user) >= history)  # (S,)
    rows = targets[:, None] - history + np.arange(history)  # (S, H), same user by construction
    rating = np.asarray(inter.rating, dtype=np.float32)
    times = (np.zeros(len(inter), np.int64) if inter.timestamp is None else inter.timestamp).astype(
        np.int64
    )
    return LikeSamples(
        user=inter.user[targets].astype(np.int64),
        history=inter.item[rows].astype(np.int64),
        history_rating=rating[rows],
        item=inter.item[targets].astype(np.int64),
        rating=rating[targets],
        label=(rating[targets] > threshold).astype(np.float32),
        time=times[targets],
    )


@dataclass(frozen=True)
class UserSplit:
    """Disjoint sorted user index arrays whose union is every user given."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def split_users(
    users: np.ndarray, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> UserSplit:
    """Seeded split of the unique ``users`` into train / validation / test by ``fractions``."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1):
        raise ConfigError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    unique = np.unique(users)
    if len(unique) < 3:
        raise DataError(f"need at least 3 users to split 8:1:1, got {len(unique)}")
    perm = np.random.default_rng(seed).permutation(unique)
    n_valid = max(1, round(fractions[1] * len(unique)))
    n_test = max(1, round(fractions[2] * len(unique)))
    n_train = len(unique) - n_valid - n_test
    parts = np.split(perm, [n_train, n_train + n_valid])
    return UserSplit(*(np.sort(p) for p in parts))


def draw_budget(samples: LikeSamples, n: int, seed: int) -> LikeSamples:
    """``n`` samples drawn uniformly without replacement (seeded by (seed, n)), both labels in.

    Redraws (same generator) while a draw holds one class only, since no classifier can be
    fitted on it; raises DataError if the pool itself has one class or fewer than n rows.
    """
    if n < 2 or n > len(samples):
        raise DataError(f"budget {n} must be between 2 and the {len(samples)} samples available")
    if len(np.unique(samples.label)) < 2:
        raise DataError("the labelled pool holds one class only")
    rng = np.random.default_rng([seed, n])
    for _ in range(1000):
        pick = np.sort(rng.choice(len(samples), size=n, replace=False))
        if len(np.unique(samples.label[pick])) == 2:
            return samples.take(pick)
    raise DataError(f"no draw of {n} samples held both labels in 1000 tries")


def item_counts(inter: Interactions, users: np.ndarray, n_items: int) -> np.ndarray:
    """(N,) int64 interactions per item among ``users``: implicit behaviour, no ratings."""
    keep = np.isin(inter.user, users)
    return np.bincount(inter.item[keep], minlength=n_items).astype(np.int64)


def with_history_targets(samples: LikeSamples, threshold: float = 3.0) -> LikeSamples:
    """Each sample's H + 1 rated items (history and target), each in turn the target with the
    other H as its history (order kept): H + 1 times the rows, labelled rating > ``threshold``.

    The history ratings are part of a labelled sample, so this reads no rating beyond the
    budget; it lets a model learn a user's rating scale from H + 1 labels per sample.
    """
    items = np.concatenate([samples.history, samples.item[:, None]], axis=1)  # (S, H + 1)
    ratings = np.concatenate([samples.history_rating, samples.rating[:, None]], axis=1)
    width = items.shape[1]
    others = np.array([[j for j in range(width) if j != k] for k in range(width)])  # (H+1, H)
    rows = np.repeat(np.arange(len(samples)), width)  # (S * (H + 1),)
    target = np.tile(np.arange(width), len(samples))
    hist_cols = others[target]  # (S * (H + 1), H)
    rating = ratings[rows, target]
    return LikeSamples(
        user=samples.user[rows],
        history=items[rows[:, None], hist_cols],
        history_rating=ratings[rows[:, None], hist_cols],
        item=items[rows, target],
        rating=rating,
        label=(rating > threshold).astype(np.float32),
        time=samples.time[rows],
    )
