"""Splits: properties on random interaction logs (hypothesis) and figures on the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given as hypothesis_given
from hypothesis import settings
from hypothesis import strategies as st

from metarec.data import (
    SPLIT_TEST,
    SPLIT_VALID,
    Dataset,
    Interactions,
    ItemCatalog,
    load_dataset,
)
from metarec.data.sequences import time_order
from metarec.data.splits import (
    Split,
    cold_start_folds,
    given,
    leave_one_out,
    support_query,
    temporal,
    temporal_fraction,
    user_sequences,
)
from metarec.errors import ConfigError, DataError

N_ITEMS = 12


@st.composite
def datasets(draw, min_users: int = 1, max_users: int = 8, max_rows: int = 60) -> Dataset:
    """Random logs with ties in time; ``rating`` carries the row id so rows can be traced."""
    n_users = draw(st.integers(min_users, max_users))
    n = draw(st.integers(n_users, max_rows))
    ints = st.lists(st.integers(0, 10**6), min_size=n, max_size=n)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    user = np.r_[np.arange(n_users), rng.integers(0, n_users, n - n_users)]
    item = rng.integers(0, N_ITEMS, n)
    time = np.asarray(draw(ints)) % draw(st.sampled_from([3, 20, 10**6]))
    inter = Interactions(
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        timestamp=time.astype(np.int64),
        rating=np.arange(n, dtype=np.float32),
        split=rng.integers(0, 3, n).astype(np.int8),
    )
    ids = [f"i{i}" for i in range(N_ITEMS)]
    return Dataset(
        "random",
        inter,
        [f"u{u}" for u in range(n_users)],
        ItemCatalog(ids, ids),
    )


def row_ids(inter: Interactions) -> np.ndarray:
    return inter.rating.astype(np.int64)


def assert_partition(ds: Dataset, split: Split) -> None:
    parts = [row_ids(split.train), row_ids(split.valid), row_ids(split.test)]
    joined = np.concatenate(parts)
    assert len(joined) == len(ds.interactions)
    assert np.array_equal(np.sort(joined), np.arange(len(ds.interactions)))


def per_user_keys(inter: Interactions) -> dict[int, list[tuple[int, int]]]:
    """Each user's (time, item) keys in sorted order, computed the slow, obvious way."""
    out: dict[int, list[tuple[int, int]]] = {}
    for u, t, i in zip(inter.user, inter.timestamp, inter.item, strict=True):
        out.setdefault(int(u), []).append((int(t), int(i)))
    return {u: sorted(v) for u, v in out.items()}


# ---------------------------------------------------------------- properties


def keys_of(inter: Interactions, user: int) -> list[tuple[int, int]]:
    """(time, item) keys of one user's rows, in row order."""
    rows = np.flatnonzero(inter.user == user)
    return [(int(inter.timestamp[r]), int(inter.item[r])) for r in rows]


@settings(max_examples=60, deadline=None)
@hypothesis_given(datasets())
def test_leave_one_out_properties(ds: Dataset) -> None:
    split = leave_one_out(ds)
    assert_partition(ds, split)
    for u, seq in per_user_keys(ds.interactions).items():
        test, valid = keys_of(split.test, u), keys_of(split.valid, u)
        assert len(test) == (1 if len(seq) >= 2 else 0)
        assert len(valid) == (1 if len(seq) >= 3 else 0)
        assert test == seq[len(seq) - len(test) :]
        assert valid == seq[len(seq) - len(test) - len(valid) : len(seq) - len(test)]
        assert sorted(keys_of(split.train, u)) == seq[: len(seq) - len(test) - len(valid)]


@settings(max_examples=60, deadline=None)
@hypothesis_given(datasets(), st.integers(0, 10**6), st.integers(0, 10**6))
def test_temporal_properties(ds: Dataset, a: int, b: int) -> None:
    lo, hi = sorted((a % 25, b % 25))
    split = temporal(ds, lo, hi)
    assert_partition(ds, split)
    assert np.all(split.train.timestamp < lo)
    assert np.all((split.valid.timestamp >= lo) & (split.valid.timestamp < hi))
    assert np.all(split.test.timestamp >= hi)


@settings(max_examples=60, deadline=None)
@hypothesis_given(datasets(), st.floats(0.0, 0.45), st.floats(0.0, 0.45))
def test_temporal_fraction_properties(ds: Dataset, valid_frac: float, test_frac: float) -> None:
    split = temporal_fraction(ds, valid_frac, test_frac)
    assert_partition(ds, split)
    n = len(ds.interactions)
    assert len(split.test) >= np.floor(n * test_frac - 1e-6)
    assert len(split.test) + len(split.valid) >= np.floor(n * (valid_frac + test_frac) - 1e-6)
    train_t, valid_t, test_t = (s.timestamp for s in (split.train, split.valid, split.test))
    if len(train_t) and len(valid_t):
        assert train_t.max() < valid_t.min()
    if len(valid_t) and len(test_t):
        assert valid_t.max() < test_t.min()
    if len(train_t) and len(test_t):
        assert train_t.max() < test_t.min()


@settings(max_examples=40, deadline=None)
@hypothesis_given(datasets())
def test_given_properties(ds: Dataset) -> None:
    split = given(ds)
    assert_partition(ds, split)
    codes = ds.interactions.split[np.argsort(row_ids(ds.interactions))]
    assert np.all(codes[row_ids(split.valid)] == SPLIT_VALID)
    assert np.all(codes[row_ids(split.test)] == SPLIT_TEST)


@settings(max_examples=40, deadline=None)
@hypothesis_given(datasets(min_users=2), st.integers(2, 5), st.integers(0, 3))
def test_cold_start_folds_partition_users(ds: Dataset, n_folds: int, seed: int) -> None:
    n_folds = min(n_folds, ds.n_users)
    folds = cold_start_folds(ds, n_folds, seed)
    assert [f.index for f in folds] == list(range(n_folds))
    cold = np.concatenate([f.test_users for f in folds])
    assert np.array_equal(np.sort(cold), np.arange(ds.n_users))
    for fold in folds:
        assert len(np.intersect1d(fold.train_users, fold.test_users)) == 0
        assert np.array_equal(np.union1d(fold.train_users, fold.test_users), np.arange(ds.n_users))
        assert np.all(np.isin(fold.train.user, fold.train_users))
        assert np.all(np.isin(fold.test.user, fold.test_users))
        assert len(fold.train) + len(fold.test) == len(ds.interactions)
    again = cold_start_folds(ds, n_folds, seed)
    assert all(
        np.array_equal(f.test_users, g.test_users) for f, g in zip(folds, again, strict=True)
    )


@settings(max_examples=60, deadline=None)
@hypothesis_given(datasets(), st.integers(0, 6), st.integers(1, 5))
def test_support_precedes_query(ds: Dataset, k: int, n_query: int) -> None:
    support, query, users = support_query(ds.interactions, k, n_query)
    keys = per_user_keys(ds.interactions)
    assert users.tolist() == sorted(u for u, seq in keys.items() if len(seq) >= k + 1)
    assert set(support.user.tolist()) <= set(users.tolist())
    assert set(query.user.tolist()) == set(users.tolist())
    for u in users.tolist():
        s, q, seq = keys_of(support, u), keys_of(query, u), keys[u]
        assert s == seq[:k]
        assert q == seq[k : k + n_query]
        if s and q:
            assert max(s) <= min(q)  # equal only for duplicated rows
    assert len(np.intersect1d(row_ids(support), row_ids(query))) == 0


@settings(max_examples=60, deadline=None)
@hypothesis_given(datasets())
def test_user_sequences_match_sorted_lists(ds: Dataset) -> None:
    rng = np.random.default_rng(0)
    shuffled = ds.interactions.take(rng.permutation(len(ds.interactions)))
    indptr, items = user_sequences(shuffled, ds.n_users + 2)
    assert indptr.shape == (ds.n_users + 3,) and indptr[-1] == len(items)
    keys = per_user_keys(ds.interactions)
    for u in range(ds.n_users + 2):
        assert items[indptr[u] : indptr[u + 1]].tolist() == [i for _, i in keys.get(u, [])]


@settings(max_examples=80, deadline=None)
@hypothesis_given(datasets(), st.sampled_from([1, -(10**6), 10**15]))
def test_time_order_equals_lexsort(ds: Dataset, scale: int) -> None:
    inter = ds.interactions
    rng = np.random.default_rng(len(inter))
    shuffled = inter.take(rng.permutation(len(inter)))
    scaled = Interactions(shuffled.user, shuffled.item, shuffled.timestamp * scale)
    expected = np.lexsort((scaled.item, scaled.timestamp, scaled.user))  # same as schema's sort
    assert np.array_equal(time_order(scaled), expected)
    assert np.array_equal(time_order(scaled.take(expected)), np.arange(len(inter)))


# ---------------------------------------------------------------- real data and errors


@pytest.fixture(scope="module")
def ml_small() -> Dataset:
    return load_dataset()


def test_leave_one_out_ml_latest_small(ml_small: Dataset) -> None:
    split = leave_one_out(ml_small)
    assert (len(split.train), len(split.valid), len(split.test)) == (100836 - 1220, 610, 610)
    assert split.name == "leave-one-out"
    # user '1': the last rating in (time, movieId) order is the test target
    u = ml_small.user_index()["1"]
    inter = ml_small.interactions
    last = np.flatnonzero(inter.user == u)[-1]
    assert split.test.item[split.test.user == u].tolist() == [inter.item[last]]


def test_given_equals_leave_one_out_on_scientific(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "amazon-scientific")
    a, b = given(ds), leave_one_out(ds)
    for part in ("train", "valid", "test"):
        x, y = getattr(a, part), getattr(b, part)
        assert np.array_equal(x.user, y.user) and np.array_equal(x.item, y.item)
    assert len(a.test) == 8442 and len(a.valid) == 8442


def test_given_needs_split_column(ml_small: Dataset) -> None:
    with pytest.raises(DataError, match="no given split"):
        given(ml_small)


def test_temporal_fraction_ml_latest_small(ml_small: Dataset) -> None:
    split = temporal_fraction(ml_small, 0.1, 0.1)
    assert len(split.test) == pytest.approx(10084, abs=50)
    assert split.train.timestamp.max() < split.valid.timestamp.min()
    with pytest.raises(ConfigError):
        temporal_fraction(ml_small, 0.6, 0.5)
    with pytest.raises(ConfigError):
        temporal(ml_small, 10, 5)


def test_cold_start_folds_ml_latest_small(ml_small: Dataset) -> None:
    folds = cold_start_folds(ml_small, n_folds=5, seed=0)
    assert [len(f.test_users) for f in folds] == [122] * 5
    assert folds[0].train.user.size + folds[0].test.user.size == 100836
    other = cold_start_folds(ml_small, n_folds=5, seed=1)
    assert not np.array_equal(folds[0].test_users, other[0].test_users)
    support, query, users = support_query(folds[0].test, k=5, n_query=20)
    assert len(users) == 122  # every ml-latest-small user has >= 20 ratings
    counts = np.bincount(folds[0].test.user)[users]
    assert len(support) == 5 * 122 and len(query) == np.minimum(counts - 5, 20).sum()
    with pytest.raises(ConfigError):
        cold_start_folds(ml_small, n_folds=1)


def test_fold_train_dataset_drops_the_cold_users_and_says_so(ml_small: Dataset) -> None:
    from metarec.data.splits import fold_train_dataset, fold_validation_users

    fold = cold_start_folds(ml_small, n_folds=5, seed=3)[2]
    train = fold_train_dataset(ml_small, 2, 5, 3)
    valid, rest = fold_validation_users(fold, 3, 0.1)
    assert len(valid) == 49 and len(rest) == 439
    assert sorted([*valid, *rest]) == sorted(fold.train_users)
    seen = np.unique(train.interactions.user)
    assert not np.isin(seen, fold.test_users).any() and not np.isin(seen, valid).any()
    assert np.array_equal(seen, np.sort(rest))
    assert train.items is ml_small.items and train.users == ml_small.users  # id maps unchanged
    mark = {"fold": 2, "n_folds": 5, "seed": 3, "valid_fraction": 0.1}
    assert train.extra["cold_start_fold"] == mark
    everyone = fold_train_dataset(ml_small, 2, 5, 3, valid_fraction=0)
    assert len(everyone.interactions) == len(fold.train)
    assert "cold_start_fold" not in ml_small.extra
    with pytest.raises(ConfigError, match="fold"):
        fold_train_dataset(ml_small, 5, 5, 3)
