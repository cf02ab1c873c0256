"""Train / valid / test splits and cold-start user folds (see PROTOCOLS.md).

Every split is a pure function of the dataset (and a seed where it draws users at random), so the
same call always yields the same rows. Orders are (user, time, item) throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from metarec.data.schema import SPLIT_TEST, SPLIT_VALID, Dataset, Interactions
from metarec.data.sequences import group_positions, group_sizes, in_time_order, user_sequences
from metarec.data.validation import require_time
from metarec.errors import ConfigError, DataError

__all__ = [
    "ColdStartFold",
    "Split",
    "cold_start_folds",
    "given",
    "leave_one_out",
    "support_query",
    "temporal",
    "temporal_fraction",
    "user_fraction",
    "user_sequences",
]


@dataclass(frozen=True, eq=False)
class Split:
    """Rows of one dataset divided into train / valid / test (any may be empty)."""

    name: str
    train: Interactions
    valid: Interactions
    test: Interactions


@dataclass(frozen=True, eq=False)
class ColdStartFold:
    """One of the user folds: ``test_users`` are cold, ``train`` holds only the other users' rows.

    ``test`` holds every interaction of the cold users; ``support_query`` cuts it per K.
    """

    index: int
    train_users: np.ndarray
    test_users: np.ndarray
    train: Interactions
    test: Interactions


def leave_one_out(ds: Dataset) -> Split:
    """Per user in (time, item) order: last -> test, second-to-last -> valid, rest -> train.

    A user with one interaction has it in train only; with two: train + test, no valid.
    """
    inter = in_time_order(ds.interactions)
    size = group_sizes(inter.user)
    from_end = size - group_positions(inter.user)  # 1 for each user's last row
    test = (from_end == 1) & (size >= 2)
    valid = (from_end == 2) & (size >= 3)
    return _split("leave-one-out", inter, test, valid)


def temporal(ds: Dataset, valid_start: int, test_start: int) -> Split:
    """Global cut-offs: time < valid_start -> train, < test_start -> valid, the rest -> test."""
    require_time(ds, "a temporal split")
    if valid_start > test_start:
        raise ConfigError(
            f"valid_start ({valid_start}) must not be after test_start ({test_start})"
        )
    inter = in_time_order(ds.interactions)
    ts = inter.timestamp
    test = ts >= test_start
    valid = (ts >= valid_start) & ~test
    return _split(f"temporal({valid_start},{test_start})", inter, test, valid)


def temporal_fraction(ds: Dataset, valid_frac: float = 0.1, test_frac: float = 0.1) -> Split:
    """``temporal`` with cut-offs at timestamp quantiles: test gets the last
    ``floor(test_frac * N)`` rows in time, valid + test the last ``floor((valid_frac + test_frac)
    * N)``, or a few more where rows at a cut-off share its timestamp (ties stay together)."""
    if valid_frac < 0 or test_frac < 0 or valid_frac + test_frac >= 1:
        raise ConfigError(
            f"valid_frac ({valid_frac}) and test_frac ({test_frac}) must be >= 0 and sum below 1"
        )
    require_time(ds, "a temporal split")
    ts = np.sort(ds.interactions.timestamp)
    if len(ts) == 0:
        raise DataError(f"dataset '{ds.name}' has no interactions to split")
    test_start = _cutoff(ts, 1.0 - test_frac)
    valid_start = _cutoff(ts, 1.0 - test_frac - valid_frac)
    split = temporal(ds, valid_start, test_start)
    return Split(
        f"temporal-fraction({valid_frac},{test_frac})", split.train, split.valid, split.test
    )


def given(ds: Dataset) -> Split:
    """The split stored with the data (its ``split`` column)."""
    if ds.interactions.split is None:
        raise DataError(
            f"dataset '{ds.name}' has no given split (no split column or split files); "
            "use leave_one_out or a temporal split"
        )
    inter = in_time_order(ds.interactions)
    return _split("given", inter, inter.split == SPLIT_TEST, inter.split == SPLIT_VALID)


def cold_start_folds(ds: Dataset, n_folds: int = 5, seed: int = 0) -> list[ColdStartFold]:
    """Users with interactions split into ``n_folds`` by a seeded permutation; fold i is cold."""
    users = np.unique(ds.interactions.user)
    if n_folds < 2 or n_folds > len(users):
        raise ConfigError(f"n_folds must be between 2 and the {len(users)} users, got {n_folds}")
    perm = np.random.default_rng(seed).permutation(users)
    inter = in_time_order(ds.interactions)
    folds = []
    for index, part in enumerate(np.array_split(perm, n_folds)):
        test_users = np.sort(part)
        is_test = np.isin(inter.user, test_users)
        train_users = np.setdiff1d(users, test_users)
        fold = ColdStartFold(
            index, train_users, test_users, inter.take(~is_test), inter.take(is_test)
        )
        folds.append(fold)
    return folds


def support_query(
    inter: Interactions, k: int, n_query: int = 20
) -> tuple[Interactions, Interactions, np.ndarray]:
    """Per user in time order: support = first ``k`` rows, query = up to the next ``n_query``.

    Users with fewer than k + 1 rows are dropped. Returns (support, query, users) with ``users``
    the sorted indices of the users kept.
    """
    if k < 0 or n_query < 1:
        raise ConfigError(f"need k >= 0 and n_query >= 1, got k={k}, n_query={n_query}")
    inter = in_time_order(inter)
    pos = group_positions(inter.user)
    kept = group_sizes(inter.user) >= k + 1
    support = kept & (pos < k)
    query = kept & (pos >= k) & (pos < k + n_query)
    return inter.take(support), inter.take(query), np.unique(inter.user[kept])


def _split(name: str, inter: Interactions, test: np.ndarray, valid: np.ndarray) -> Split:
    train = ~(test | valid)
    return Split(name, inter.take(train), inter.take(valid), inter.take(test))


def _cutoff(sorted_ts: np.ndarray, quantile: float) -> int:
    """The time of the row at ``ceil(quantile * N)`` in time order (one past the last if none)."""
    n = len(sorted_ts)
    index = math.ceil(n * quantile - 1e-9)
    return int(sorted_ts[index]) if index < n else int(sorted_ts[-1]) + 1


def fold_validation_users(
    fold: ColdStartFold, seed: int = 0, valid_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(validation users, training users) of a fold's train users: a seeded ``valid_fraction``
    (at least one) held out for meta-validation and selection. The one place this split is
    made, so pretraining, ``meta-train`` and coldstart-ml agree on it."""
    if not 0 < valid_fraction < 1:
        raise ConfigError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    users = np.random.default_rng([seed, fold.index]).permutation(fold.train_users)
    n_valid = max(1, round(valid_fraction * len(users)))
    return users[:n_valid], users[n_valid:]


def fold_train_dataset(
    ds: Dataset, fold: int, n_folds: int = 5, seed: int = 0, valid_fraction: float = 0.1
) -> Dataset:
    """``ds`` restricted to the training users of cold-start fold ``fold``: its cold users and
    its validation users (``fold_validation_users``; none when ``valid_fraction`` is 0) are
    removed, catalogue and id maps unchanged. Recorded in ``extra["cold_start_fold"]`` so a
    checkpoint trained on it says which users it never saw."""
    if not 0 <= fold < n_folds:
        raise ConfigError(f"cold-start fold must be in [0, {n_folds}), got {fold}")
    part = cold_start_folds(ds, n_folds, seed)[fold]
    inter = part.train
    if valid_fraction:
        valid, _ = fold_validation_users(part, seed, valid_fraction)
        inter = inter.take(~np.isin(inter.user, valid))
    mark = {"fold": fold, "n_folds": n_folds, "seed": seed, "valid_fraction": valid_fraction}
    return replace(ds, interactions=inter, extra={**ds.extra, "cold_start_fold": mark})


def user_fraction(split: Split, fraction: float, seed: int = 0) -> Split:
    """``split`` with train and valid rows of a seeded ``fraction`` of the training users only
    (at least one); the test rows are all kept. The few-shot settings of a new domain: the
    model learns from, and is selected on, those users alone and is tested on everyone, whose
    test histories must then come from the full split (``workflows.finetune.target_data``)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return split
    users = np.unique(split.train.user)
    n = max(1, round(fraction * len(users)))
    kept = np.sort(np.random.default_rng(seed).choice(users, size=n, replace=False))
    return Split(
        f"{split.name}, {n} of {len(users)} training users",
        split.train.take(np.isin(split.train.user, kept)),
        split.valid.take(np.isin(split.valid.user, kept)),
        split.test,
    )
