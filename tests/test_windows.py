"""Training and history windows cut from CSR sequences."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from metarec.data.windows import PAD, history_windows, training_windows


def test_hand_made_windows():
    indptr = np.array([0, 5, 6, 9])
    items = np.arange(100, 109)
    users, inputs, targets = training_windows(indptr, items, max_len=3)
    assert users.tolist() == [0, 0, 2]
    assert inputs.tolist() == [[101, 102, 103], [PAD, PAD, 100], [PAD, 106, 107]]
    assert targets.tolist() == [[102, 103, 104], [PAD, PAD, 101], [PAD, 107, 108]]
    hist = history_windows(indptr, items, np.array([0, 1, 2]), 4)
    assert hist.tolist() == [[101, 102, 103, 104], [PAD, PAD, PAD, 105], [PAD, 106, 107, 108]]


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 30), min_size=1, max_size=8),
    max_len=st.integers(1, 7),
)
def test_every_transition_is_a_target_exactly_once(lengths, max_len):
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.arange(indptr[-1], dtype=np.int64)  # item id = global position
    users, inputs, targets = training_windows(indptr, items, max_len)
    got = sorted(
        (int(u), int(i), int(t))
        for u, row_i, row_t in zip(users, inputs, targets, strict=True)
        for i, t in zip(row_i, row_t, strict=True)
        if t != PAD
    )
    want = sorted(
        (u, int(items[p]), int(items[p + 1]))
        for u in range(len(lengths))
        for p in range(indptr[u], indptr[u + 1] - 1)
    )
    assert got == want
