"""Per-user sequences as CSR arrays, built without Python loops over rows."""

from __future__ import annotations

import numpy as np

from metarec.data.schema import Interactions


def time_order(inter: Interactions) -> np.ndarray:
    """(N,) stable permutation that orders rows by (user, timestamp, item).

    Same order as ``Interactions.sort_by_user_time``; O(N) when the rows are already in order,
    and one stable sort of a combined integer key when the value ranges allow it.
    """
    if is_time_ordered(inter):
        return np.arange(len(inter))
    return _sort_order(inter)


def is_time_ordered(inter: Interactions) -> bool:
    """Whether the rows are already ordered by (user, timestamp, item); O(N)."""
    du, dt, di = np.diff(inter.user), np.diff(_times(inter)), np.diff(inter.item)
    return bool(np.all((du > 0) | ((du == 0) & ((dt > 0) | ((dt == 0) & (di >= 0))))))


def in_time_order(inter: Interactions) -> Interactions:
    """``inter`` itself when already ordered by (user, timestamp, item), else a sorted copy."""
    return inter if is_time_ordered(inter) else inter.take(_sort_order(inter))


def _sort_order(inter: Interactions) -> np.ndarray:
    ts = _times(inter)
    key = _combined_key(inter.user, ts, inter.item)
    if key is not None:
        return np.argsort(key, kind="stable")
    return np.lexsort((inter.item, ts, inter.user))


def _times(inter: Interactions) -> np.ndarray:
    if inter.timestamp is None:
        return np.zeros(len(inter), dtype=np.int64)
    return inter.timestamp


def _combined_key(user: np.ndarray, ts: np.ndarray, item: np.ndarray) -> np.ndarray | None:
    """user, time and item packed into one int64 in the same order, if they fit."""
    integral = all(np.issubdtype(a.dtype, np.integer) for a in (user, ts, item))
    if not integral or user.min() < 0 or item.min() < 0:
        return None
    t0 = int(ts.min())
    span_t, span_i = int(ts.max()) - t0 + 1, int(item.max()) + 1
    if (int(user.max()) + 1) * span_t * span_i >= 2**63:
        return None
    user, ts, item = (np.asarray(a, dtype=np.int64) for a in (user, ts, item))
    return (user * span_t + (ts - t0)) * span_i + item


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of equal keys (keys already grouped)."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return starts, np.diff(np.r_[starts, n])


def group_positions(sorted_keys: np.ndarray) -> np.ndarray:
    """(N,) 0-based position of each row within its run of equal keys (keys already grouped)."""
    starts, lengths = _runs(sorted_keys)
    return np.arange(len(sorted_keys), dtype=np.int64) - np.repeat(starts, lengths)


def group_sizes(sorted_keys: np.ndarray) -> np.ndarray:
    """(N,) size of the run of equal keys each row belongs to (keys already grouped)."""
    _, lengths = _runs(sorted_keys)
    return np.repeat(lengths, lengths)


def user_sequences(inter: Interactions, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of each user's items in (time, item) order; input rows may be in any order.

    Returns ``indptr`` (n_users + 1,) int64 and ``items`` (N,) int64: user ``u``'s sequence is
    ``items[indptr[u]:indptr[u + 1]]``.
    """
    order = time_order(inter)
    counts = np.bincount(inter.user, minlength=n_users)
    if len(counts) > n_users:
        raise ValueError(f"user index {len(counts) - 1} out of range for n_users={n_users}")
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, np.asarray(inter.item[order], dtype=np.int64)
