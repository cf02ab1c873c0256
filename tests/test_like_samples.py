"""fewshot-like samples: construction on hand-made data, labels, user split, budget draws."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from metarec.data.schema import Interactions
from metarec.errors import ConfigError, DataError
from metarec.evaluation.metrics import auc
from metarec.like.samples import (
    build_like_samples,
    draw_budget,
    item_counts,
    split_users,
    with_history_targets,
)


def _inter() -> Interactions:
    """User 0: items 5, 6, 7, 8 rated 4, 2, 3, 3.5 (rows shuffled, two rows tied in time);
    user 1: items 1, 2 (too short for history 2 plus a target)."""
    user = np.array([0, 1, 0, 0, 0, 1])
    item = np.array([8, 1, 6, 5, 7, 2])
    time = np.array([40, 1, 20, 10, 20, 2])  # items 6 and 7 tie: item order breaks it
    rating = np.array([3.5, 5.0, 2.0, 4.0, 3.0, 1.0], dtype=np.float32)
    return Interactions(user, item, time, rating)


def test_samples_on_hand_made_data():
    s = build_like_samples(_inter(), history=2)
    assert len(s) == 2  # user 0's third and fourth ratings; user 1 has none eligible
    np.testing.assert_array_equal(s.user, [0, 0])
    np.testing.assert_array_equal(s.history, [[5, 6], [6, 7]])
    np.testing.assert_array_equal(s.history_rating, [[4.0, 2.0], [2.0, 3.0]])
    np.testing.assert_array_equal(s.item, [7, 8])
    np.testing.assert_array_equal(s.label, [0.0, 1.0])  # 3 is not a like, 3.5 is
    np.testing.assert_array_equal(s.time, [20, 40])
    np.testing.assert_allclose(s.history_mean(), [3.0, 2.5])


def test_samples_need_ratings_and_a_positive_history():
    no_rating = Interactions(np.zeros(3, np.int64), np.arange(3), np.arange(3))
    with pytest.raises(DataError, match="ratings"):
        build_like_samples(no_rating)
    with pytest.raises(ConfigError, match="history"):
        build_like_samples(_inter(), history=0)


def test_history_targets_make_each_rated_item_a_target():
    s = build_like_samples(_inter(), history=2).take(np.array([0]))  # history 5, 6; target 7
    x = with_history_targets(s)
    np.testing.assert_array_equal(x.item, [5, 6, 7])
    np.testing.assert_array_equal(x.history, [[6, 7], [5, 7], [5, 6]])
    np.testing.assert_array_equal(x.history_rating, [[2.0, 3.0], [4.0, 3.0], [4.0, 2.0]])
    np.testing.assert_array_equal(x.label, [1.0, 0.0, 0.0])


def test_user_split_is_disjoint_complete_and_seeded():
    users = np.repeat(np.arange(100), 3)
    a, b = split_users(users, seed=1), split_users(users, seed=1)
    parts = [a.train, a.valid, a.test]
    assert [len(p) for p in parts] == [80, 10, 10]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(100))
    for p, q in zip(parts, [b.train, b.valid, b.test], strict=True):
        np.testing.assert_array_equal(p, q)
    assert not np.array_equal(split_users(users, seed=2).test, a.test)
    with pytest.raises(ConfigError, match="fractions"):
        split_users(users, fractions=(0.5, 0.5, 0.5))


def test_budget_draw_is_seeded_and_holds_both_labels():
    rng = np.random.default_rng(0)
    n = 500
    inter = Interactions(
        np.repeat(np.arange(50), 10),
        rng.integers(0, 40, n),
        np.tile(np.arange(10), 50),
        rng.choice([1.0, 5.0], n, p=[0.95, 0.05]).astype(np.float32),
    )
    pool = build_like_samples(inter, history=3)
    for seed in range(5):
        draw = draw_budget(pool, 16, seed)
        assert len(draw) == 16 and set(draw.label) == {0.0, 1.0}
        np.testing.assert_array_equal(draw.item, draw_budget(pool, 16, seed).item)
    with pytest.raises(DataError, match="budget"):
        draw_budget(pool, len(pool) + 1, 0)


def test_item_counts_use_only_the_given_users():
    counts = item_counts(_inter(), np.array([1]), 10)
    assert counts[1] == 1 and counts[2] == 1 and counts.sum() == 2


def test_history_mean_auc_two_ways(shared_data):
    """The baseline's AUC on a slice of the real data: ours equals sklearn and a pair count."""
    from metarec.data.loaders.registry import load_dataset

    ds = load_dataset(shared_data / "ml-latest-small")
    keep = ds.interactions.user < 40
    s = build_like_samples(ds.interactions.take(keep))
    score, y = s.history_mean(), s.label
    ours = auc(y, score)
    assert ours == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    pos, neg = score[y == 1], score[y == 0]
    diff = pos[:, None] - neg[None, :]
    pairs = ((diff > 0) + 0.5 * (diff == 0)).mean()
    assert ours == pytest.approx(pairs, abs=1e-12)
    assert 0.6 < ours < 0.9  # the history's mean rating carries the user's scale
