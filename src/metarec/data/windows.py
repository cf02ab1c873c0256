"""Fixed-width, left-padded item windows cut from per-user sequences (CSR form).

Sequences come as ``indptr`` (n_users + 1,) and ``items`` (M,) with each user's items in time
order, as produced by ``metarec.data.splits.user_sequences``. Everything here is vectorised.
"""

from __future__ import annotations

import numpy as np

PAD = -1


def trim_padding(
    inputs: np.ndarray, targets: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Drop the leading columns that are PAD in every row of left-padded (B, L) windows (at
    least one column stays). A model gives the same output on the rest (positions count from
    the right, padding is masked), so short histories stop paying for empty positions."""
    used = (inputs != PAD).any(axis=0)  # (L,)
    first = int(np.argmax(used)) if used.any() else inputs.shape[1] - 1
    return inputs[:, first:], (None if targets is None else targets[:, first:])


def _gather(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """(R, width) rows items[start:end], right-aligned and left-padded with PAD."""
    idx = ends[:, None] - width + np.arange(width)[None, :]  # (R, width)
    valid = idx >= starts[:, None]
    out = np.full(idx.shape, PAD, dtype=np.int64)
    out[valid] = items[idx[valid]]
    return out


def training_windows(
    indptr: np.ndarray, items: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut every sequence into windows of ``max_len + 1`` items, overlapping by one, from the end.

    Returns users (W,), inputs (W, max_len) and targets (W, max_len): ``targets[:, t]`` is the
    item after ``inputs[:, t]``. A user with n items yields ceil((n - 1) / max_len) windows, so
    every transition of the sequence is a training target exactly once.
    """
    lengths = np.diff(indptr)
    n_windows = np.where(lengths >= 2, -(-(lengths - 1) // max_len), 0)
    users = np.repeat(np.arange(len(lengths)), n_windows)
    # k-th window from the end of a user's sequence covers transitions ending at end - k * max_len
    k = np.arange(n_windows.sum()) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    ends = indptr[users + 1] - k * max_len  # exclusive end (in global item positions)
    starts = np.maximum(indptr[users], ends - max_len - 1)
    window = _gather(items, starts, ends, max_len + 1)  # (W, L + 1)
    inputs, targets = window[:, :-1].copy(), window[:, 1:].copy()
    targets[inputs == PAD] = PAD  # the first item of a sequence has no predecessor to predict from
    return users, inputs, targets


def history_windows(
    indptr: np.ndarray, items: np.ndarray, users: np.ndarray, max_len: int
) -> np.ndarray:
    """(R, max_len) most recent items of each listed user, left-padded with PAD."""
    users = np.asarray(users, dtype=np.int64)
    ends = indptr[users + 1]
    starts = np.maximum(indptr[users], ends - max_len)
    return _gather(items, starts, ends, max_len)
