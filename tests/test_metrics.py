"""Metric functions: hand-computed values, independent implementations, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytrec_eval
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from metarec.evaluation.metrics import (
    auc,
    hit_rate_at_k,
    log_loss,
    mean_ci95,
    metrics_from_ranks,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    target_ranks,
    topk_hits,
)

LOG2_3 = math.log2(3)


def _hits(*rows: str) -> torch.Tensor:
    """'0100' -> tensor([[False, True, False, False]])."""
    return torch.tensor([[c == "1" for c in row] for row in rows])


# ---- hand-computed values --------------------------------------------------------------------


def test_single_target_ranks_by_hand():
    m = metrics_from_ranks(torch.tensor([0, 2, 9, 10]), ks=(10, 1))
    assert m["NDCG@10"].tolist() == pytest.approx([1.0, 0.5, 1 / math.log2(11), 0.0])
    assert m["HR@10"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert m["Recall@10"].tolist() == m["HR@10"].tolist()
    assert m["MRR@10"].tolist() == pytest.approx([1.0, 1 / 3, 0.1, 0.0])
    assert m["HR@1"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert m["NDCG@1"].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_ndcg_by_hand():
    hits = _hits("1000", "0010", "0100", "1100", "0000", "0101")
    got = ndcg_at_k(hits, [1, 1, 2, 2, 3, 4], k=4)
    idcg4 = 1 + 1 / LOG2_3 + 0.5 + 1 / math.log2(5)
    expected = [
        1.0,
        0.5,  # rank 2 -> 1 / log2(4)
        (1 / LOG2_3) / (1 + 1 / LOG2_3),  # 2 relevant, one at rank 1
        1.0,
        0.0,
        (1 / LOG2_3 + 1 / math.log2(5)) / idcg4,
    ]
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


def test_ndcg_ideal_capped_at_k():
    # 5 relevant items, k = 2, both top slots relevant: ideal DCG uses min(5, 2) hits -> 1.
    assert ndcg_at_k(_hits("1100"), [5], k=2).item() == pytest.approx(1.0)
    assert ndcg_at_k(_hits("1100"), [5], k=4).item() == pytest.approx(
        (1 + 1 / LOG2_3) / (1 + 1 / LOG2_3 + 0.5 + 1 / math.log2(5))
    )


def test_recall_hit_rate_mrr_by_hand():
    hits = _hits("0101", "0000", "0010", "1111")
    n_rel = torch.tensor([4, 2, 1, 5])
    assert recall_at_k(hits, n_rel, 4).tolist() == pytest.approx([0.5, 0.0, 1.0, 0.8])
    assert recall_at_k(hits, n_rel, 2).tolist() == pytest.approx([0.25, 0.0, 0.0, 0.4])
    assert hit_rate_at_k(hits, 4).tolist() == [1.0, 0.0, 1.0, 1.0]
    assert hit_rate_at_k(hits, 2).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert mrr_at_k(hits, 4).tolist() == pytest.approx([0.5, 0.0, 1 / 3, 1.0])
    assert mrr_at_k(hits, 2).tolist() == pytest.approx([0.5, 0.0, 0.0, 1.0])


def test_rows_without_relevant_items_score_zero():
    assert recall_at_k(_hits("00"), [0], 2).item() == 0.0
    assert ndcg_at_k(_hits("00"), [0], 2).item() == 0.0


def test_numpy_inputs_accepted():
    hits = np.array([[False, True, True]])
    assert ndcg_at_k(hits, np.array([2]), 3).item() == pytest.approx(
        (1 / LOG2_3 + 0.5) / (1 + 1 / LOG2_3)
    )
    assert target_ranks(np.array([[0.1, 0.9, 0.5]]), np.array([2])).tolist() == [1]


@pytest.mark.parametrize("fn", [hit_rate_at_k, mrr_at_k])
def test_k_larger_than_list_rejected(fn):
    with pytest.raises(ValueError, match=r"k=5.*K=3"):
        fn(_hits("010"), 5)


def test_k_larger_than_list_rejected_with_n_relevant():
    for fn in (recall_at_k, ndcg_at_k):
        with pytest.raises(ValueError, match=r"k=4.*K=3"):
            fn(_hits("010"), [1], 4)
        with pytest.raises(ValueError, match=r"k=0"):
            fn(_hits("010"), [1], 0)


def test_target_ranks_ties_and_exclusions_by_hand():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1, 0.5]])
    assert target_ranks(scores, torch.tensor([0])).item() == 3  # 0.9 and two ties above
    assert target_ranks(scores, torch.tensor([1])).item() == 0
    assert target_ranks(scores, torch.tensor([3])).item() == 4
    excl = torch.tensor([[True, True, False, False, False]])  # marks the target too
    assert target_ranks(scores, torch.tensor([0]), excl).item() == 2
    assert target_ranks(torch.zeros(3, 6), torch.tensor([0, 3, 5])).tolist() == [5, 5, 5]


def test_target_ranks_nan_is_ranked_last():
    scores = torch.tensor([[float("nan"), 0.2, 0.3], [0.5, float("nan"), 0.1]])
    assert target_ranks(scores, torch.tensor([0, 0])).tolist() == [2, 1]


def test_target_ranks_checks_inputs():
    with pytest.raises(ValueError, match="out-of-range"):
        target_ranks(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="exclude_mask"):
        target_ranks(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2, 4, dtype=torch.bool))


def test_topk_hits_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.8, 0.7, 0.2], [1.0, 1.0, 1.0, 1.0, 1.0]])
    relevant = _hits("10100", "10001")
    excluded = _hits("01000", "01000")
    hits, n_rel = topk_hits(scores, relevant, 3, excluded)
    # row 0: item 1 excluded -> 2, 3, 4; row 1: constant scores -> non-relevant 2, 3 first.
    assert hits.tolist() == [[True, False, False], [False, False, True]]
    assert n_rel.tolist() == [2, 2]
    with pytest.raises(ValueError, match="k=6"):
        topk_hits(scores, relevant, 6)


def test_topk_hits_never_excludes_relevant_items():
    hits, _ = topk_hits(torch.tensor([[0.9, 0.1, 0.5]]), _hits("100"), 1, _hits("110"))
    assert hits.tolist() == [[True]]


def test_metrics_from_ranks_agree_with_hit_matrix():
    ranks = torch.tensor([0, 3, 7, 12, 49, 50, 99])
    hits = torch.nn.functional.one_hot(ranks, 100).bool()
    ones = torch.ones(len(ranks), dtype=torch.long)
    m = metrics_from_ranks(ranks, ks=(10, 50))
    for k in (10, 50):
        torch.testing.assert_close(m[f"NDCG@{k}"], ndcg_at_k(hits, ones, k))
        torch.testing.assert_close(m[f"Recall@{k}"], recall_at_k(hits, ones, k))
        torch.testing.assert_close(m[f"HR@{k}"], hit_rate_at_k(hits, k))
        torch.testing.assert_close(m[f"MRR@{k}"], mrr_at_k(hits, k))


# ---- independent implementations ------------------------------------------------------------


def test_ndcg_and_recall_match_pytrec_eval():
    gen = torch.Generator().manual_seed(0)
    n_queries, n_items, k = 64, 300, 10
    scores = torch.rand(n_queries, n_items, generator=gen, dtype=torch.float64)
    assert all(len(set(row.tolist())) == n_items for row in scores)  # no ties
    relevant = torch.zeros(n_queries, n_items, dtype=torch.bool)
    for q in range(n_queries):
        n_rel = int(torch.randint(1, 31, (1,), generator=gen))
        relevant[q, torch.randperm(n_items, generator=gen)[:n_rel]] = True
    # Plant some relevant items high up so that NDCG is far from zero.
    top = (torch.arange(n_queries), scores.argmax(1))
    relevant[top] |= torch.rand(n_queries, generator=gen) > 0.5

    hits, n_rel = topk_hits(scores, relevant, k)
    ours_ndcg, ours_recall = ndcg_at_k(hits, n_rel, k), recall_at_k(hits, n_rel, k)

    qrel = {
        f"q{q}": {f"d{i}": 1 for i in relevant[q].nonzero().flatten().tolist()}
        for q in range(n_queries)
    }
    run = {
        f"q{q}": {f"d{i}": float(s) for i, s in enumerate(scores[q].tolist())}
        for q in range(n_queries)
    }
    ref = pytrec_eval.RelevanceEvaluator(qrel, {"ndcg_cut_10", "recall_10"}).evaluate(run)
    ref_ndcg = torch.tensor([ref[f"q{q}"]["ndcg_cut_10"] for q in range(n_queries)])
    ref_recall = torch.tensor([ref[f"q{q}"]["recall_10"] for q in range(n_queries)])
    assert ref_ndcg.max() > 0.5 and ref_ndcg.min() < 0.1  # the check covers a real spread
    torch.testing.assert_close(ours_ndcg, ref_ndcg.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours_recall, ref_recall.double(), atol=1e-6, rtol=0)


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    for n in (2, 7, 100, 1000):
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = np.round(rng.normal(labels * 0.5, 1.0), 1)  # coarse: many ties
        assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert auc(torch.from_numpy(labels), torch.from_numpy(scores)) == pytest.approx(
            roc_auc_score(labels, scores), abs=1e-12
        )


def test_auc_by_hand_and_errors():
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="binary"):
        auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="3 values"):
        auc([0, 1, 1], [0.1, 0.2])


def test_log_loss_matches_sklearn():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 500)
    probs = rng.uniform(0.01, 0.99, 500)
    assert log_loss(labels, probs) == pytest.approx(sk_log_loss(labels, probs), abs=1e-10)
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log(1 - 1e-7))  # clipped, finite
    assert log_loss([1], [0.5]) == pytest.approx(math.log(2))


def test_mean_ci95_matches_scipy():
    values = [0.31, 0.29, 0.35, 0.30, 0.33]
    mean, (lo, hi) = mean_ci95(values)
    ref_lo, ref_hi = stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
    )
    assert mean == pytest.approx(0.316)
    assert (lo, hi) == pytest.approx((ref_lo, ref_hi), abs=1e-12)
    assert mean_ci95(torch.tensor([0.4])) == (pytest.approx(0.4), (pytest.approx(0.4),) * 2)
    assert mean_ci95([2.0, 2.0]) == (2.0, (2.0, 2.0))
    with pytest.raises(ValueError, match="at least one"):
        mean_ci95([])


# ---- properties -------------------------------------------------------------------------------


@st.composite
def hit_matrices(draw):
    """(hits (B, K), n_relevant (B,)) with n_relevant >= hits in each row."""
    n_rows, n_cols = draw(st.integers(1, 6)), draw(st.integers(1, 12))
    rows = draw(
        st.lists(
            st.lists(st.booleans(), min_size=n_cols, max_size=n_cols),
            min_size=n_rows,
            max_size=n_rows,
        )
    )
    hits = torch.tensor(rows, dtype=torch.bool).reshape(n_rows, n_cols)
    extra = torch.tensor(draw(st.lists(st.integers(0, 5), min_size=n_rows, max_size=n_rows)))
    return hits, hits.sum(1) + extra, draw(st.integers(1, n_cols))


@settings(max_examples=150, deadline=None)
@given(hit_matrices())
def test_every_metric_in_unit_interval(case):
    hits, n_rel, k = case
    for values in (
        recall_at_k(hits, n_rel, k),
        ndcg_at_k(hits, n_rel, k),
        hit_rate_at_k(hits, k),
        mrr_at_k(hits, k),
    ):
        assert values.shape == (hits.shape[0],)
        assert bool(((values >= 0) & (values <= 1 + 1e-12)).all())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 200), min_size=1, max_size=20), st.integers(1, 60))
def test_rank_metrics_in_unit_interval(ranks, k):
    for values in metrics_from_ranks(torch.tensor(ranks), ks=(k,)).values():
        assert bool(((values >= 0) & (values <= 1)).all())


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20), st.integers(1, 20))
def test_perfect_ranking_scores_one(n_rel, n_cols, k):
    k = min(k, n_cols)
    hits = torch.zeros(1, n_cols, dtype=torch.bool)
    hits[0, : min(n_rel, n_cols)] = True
    assert ndcg_at_k(hits, [n_rel], k).item() == pytest.approx(1.0)
    assert hit_rate_at_k(hits, k).item() == 1.0
    assert mrr_at_k(hits, k).item() == 1.0
    if n_rel <= k:
        assert recall_at_k(hits, [n_rel], k).item() == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(1, 30), st.data())
def test_perfect_scores_rank_relevant_first(n_rows, n_items, data):
    rel_rows = data.draw(
        st.lists(
            st.lists(st.booleans(), min_size=n_items, max_size=n_items),
            min_size=n_rows,
            max_size=n_rows,
        )
    )
    relevant = torch.tensor(rel_rows, dtype=torch.bool).reshape(n_rows, n_items)
    relevant[:, 0] = True
    k = data.draw(st.integers(1, n_items))
    hits, n_rel = topk_hits(relevant.double(), relevant, k)
    assert ndcg_at_k(hits, n_rel, k).tolist() == pytest.approx([1.0] * n_rows)
    targets = torch.zeros(n_rows, dtype=torch.long)
    scores = torch.zeros(n_rows, n_items).scatter(1, targets[:, None], 1.0)
    assert target_ranks(scores, targets).tolist() == [0] * n_rows


def _brute_rank(scores: list[float], target: int, excluded: list[bool]) -> int:
    return sum(
        1 for i, s in enumerate(scores) if i != target and not excluded[i] and s >= scores[target]
    )


@st.composite
def ranking_cases(draw):
    """Scores drawn from a few values (many ties), targets, and masks that may hit the target."""
    n_rows, n_items = draw(st.integers(1, 6)), draw(st.integers(1, 25))
    vals = st.sampled_from([0.0, 0.25, 0.5, 1.0, -2.0])
    scores = draw(
        st.lists(
            st.lists(vals, min_size=n_items, max_size=n_items), min_size=n_rows, max_size=n_rows
        )
    )
    excl = draw(
        st.lists(
            st.lists(st.booleans(), min_size=n_items, max_size=n_items),
            min_size=n_rows,
            max_size=n_rows,
        )
    )
    targets = draw(st.lists(st.integers(0, n_items - 1), min_size=n_rows, max_size=n_rows))
    return scores, targets, excl


@settings(max_examples=200, deadline=None)
@given(ranking_cases())
def test_target_ranks_equal_brute_force(case):
    scores, targets, excl = case
    got = target_ranks(torch.tensor(scores), torch.tensor(targets), torch.tensor(excl))
    assert got.dtype == torch.int64
    assert got.tolist() == [_brute_rank(*row) for row in zip(scores, targets, excl, strict=True)]
    unmasked = target_ranks(torch.tensor(scores), torch.tensor(targets))
    no_excl = [[False] * len(scores[0])] * len(scores)
    assert unmasked.tolist() == [
        _brute_rank(*row) for row in zip(scores, targets, no_excl, strict=True)
    ]


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 40), st.data())
def test_excluding_an_item_above_the_target_lowers_rank_by_one(n_items, data):
    scores = torch.tensor(
        data.draw(
            st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=n_items, max_size=n_items)
        )
    )[None]
    target = data.draw(st.integers(0, n_items - 1))
    above = [i for i in range(n_items) if i != target and scores[0, i] >= scores[0, target]]
    if not above:
        return
    item = data.draw(st.sampled_from(above))
    mask = torch.zeros(1, n_items, dtype=torch.bool)
    before = target_ranks(scores, torch.tensor([target]), mask).item()
    mask[0, item] = True
    after = target_ranks(scores, torch.tensor([target]), mask).item()
    assert after == before - 1


def _brute_topk(scores, relevant, excluded, k):
    """Pessimistic order: score desc, non-relevant before relevant, excluded items last."""
    items = sorted(
        range(len(scores)),
        key=lambda i: (excluded[i] and not relevant[i], -scores[i], relevant[i]),
    )
    return [relevant[i] for i in items[:k]]


@settings(max_examples=150, deadline=None)
@given(ranking_cases(), st.data())
def test_topk_hits_equal_brute_force(case, data):
    scores, _, excl = case
    n_items = len(scores[0])
    relevant = data.draw(
        st.lists(
            st.lists(st.booleans(), min_size=n_items, max_size=n_items),
            min_size=len(scores),
            max_size=len(scores),
        )
    )
    k = data.draw(st.integers(1, n_items))
    hits, n_rel = topk_hits(torch.tensor(scores), torch.tensor(relevant), k, torch.tensor(excl))
    expected = [_brute_topk(*row, k) for row in zip(scores, relevant, excl, strict=True)]
    assert hits.tolist() == expected
    assert n_rel.tolist() == [sum(r) for r in relevant]
