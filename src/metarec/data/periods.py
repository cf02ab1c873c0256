"""Consecutive time periods of equal size, and training windows whose targets lie in a chosen
set of rows (a period, or a period plus replayed older rows).

A drift protocol (refresh-ml) cuts a dataset by global time into periods and updates a model
period by period; everything here is a pure function of the rows, so the same call always
yields the same periods.
"""

from __future__ import annotations

import numpy as np

from metarec.data.schema import Dataset, Interactions
from metarec.data.sequences import time_order
from metarec.data.validation import require_time
from metarec.data.windows import PAD, training_windows
from metarec.errors import ConfigError


def global_time_order(inter: Interactions) -> np.ndarray:
    """(N,) permutation ordering rows by (timestamp, user, item): one global clock."""
    if inter.timestamp is None:
        raise ConfigError("time periods need timestamps")
    return np.lexsort((inter.item, inter.user, inter.timestamp))


def time_periods(inter: Interactions, n_periods: int) -> list[Interactions]:
    """``inter`` cut by global time into ``n_periods`` consecutive parts of equal row count
    (sizes differ by at most one; rows sharing a timestamp at a cut are ordered by user, item).
    Every row of period i comes no later in time than every row of period i + 1."""
    if n_periods < 2:
        raise ConfigError(f"need at least 2 periods, got {n_periods}")
    if len(inter) < n_periods:
        raise ConfigError(f"{len(inter)} interactions cannot fill {n_periods} periods")
    order = global_time_order(inter)
    return [inter.take(np.sort(part)) for part in np.array_split(order, n_periods)]


def dataset_periods(ds: Dataset, n_periods: int) -> list[Interactions]:
    """``time_periods`` of a dataset's interactions (which must carry real timestamps)."""
    require_time(ds, "time periods")
    return time_periods(ds.interactions, n_periods)


def concat_all(parts: list[Interactions]) -> Interactions:
    """The rows of every part, in part order."""
    out = parts[0]
    for part in parts[1:]:
        out = out.concat(part)
    return out


def target_windows(
    history: Interactions, is_target: np.ndarray, n_users: int, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training windows over each user's whole ``history`` in which only the rows flagged by
    ``is_target`` (N,) are targets; windows without a target are dropped.

    Returns users (W,), inputs (W, max_len) and targets (W, max_len), as
    ``data.windows.training_windows``: every flagged row that has a predecessor is a target
    exactly once, its input the user's items before it (older rows included)."""
    order = time_order(history)
    items = np.asarray(history.item[order], dtype=np.int64)
    flags = np.asarray(is_target, dtype=bool)[order]
    counts = np.bincount(history.user, minlength=n_users)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    # windows over row positions, then mapped to items and flags
    users, in_pos, out_pos = training_windows(indptr, np.arange(len(items)), max_len)
    inputs = np.where(in_pos == PAD, PAD, items[np.maximum(in_pos, 0)])
    keep_target = (out_pos != PAD) & flags[np.maximum(out_pos, 0)]
    targets = np.where(keep_target, items[np.maximum(out_pos, 0)], PAD)
    used = keep_target.any(axis=1)
    return users[used], inputs[used], targets[used]
