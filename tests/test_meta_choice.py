"""meta.choice: the paired 95% interval and the rule that keeps a method only outside the noise."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from metarec.meta.choice import FINETUNE, NO_ADAPT, Choice, choose, paired_ci


def test_paired_ci_matches_the_hand_computation_and_scipy():
    # d = (0.1, 0.2, 0.3): mean 0.2, sd 0.1, t_{0.975, 2} = 4.302652729749464
    low, high = paired_ci([0.1, 0.2, 0.3])
    half = 4.302652729749464 * 0.1 / math.sqrt(3)
    assert low == pytest.approx(0.2 - half, abs=1e-12)
    assert high == pytest.approx(0.2 + half, abs=1e-12)
    rng = np.random.default_rng(0)
    base, method = rng.uniform(size=30), rng.uniform(size=30)
    ref = stats.ttest_rel(method, base).confidence_interval(0.95)
    assert paired_ci(method - base) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert paired_ci([0.5]) is None and paired_ci([]) is None


def test_choice_intervals_are_those_of_the_paired_differences():
    base = [0.1, 0.4, 0.0, 0.3, 0.2]
    ft = [0.2, 0.4, 0.1, 0.5, 0.2]
    c = choose({NO_ADAPT: base, FINETUNE: ft})
    row = c.candidate(FINETUNE)
    diff = np.subtract(ft, base)
    assert row.gain == pytest.approx(diff.mean()) and row.mean == pytest.approx(np.mean(ft))
    ref = stats.ttest_rel(ft, base).confidence_interval(0.95)
    assert row.ci95 == pytest.approx((ref.low, ref.high))
    assert c.candidate(NO_ADAPT).ci95 == (0.0, 0.0) and c.n_users == 5


def test_a_noisy_small_gain_is_not_chosen_and_a_clear_one_is():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.5, size=20)
    noisy = base + 0.01 + rng.normal(0, 0.2, size=20)  # mean gain ~0.01, sd 0.2
    clear = base + 0.05 + rng.normal(0, 0.02, size=20)  # mean gain ~0.05, sd 0.02
    only_noisy = choose({NO_ADAPT: base, "maml": noisy})
    assert only_noisy.method == NO_ADAPT and only_noisy.gain == 0.0
    assert only_noisy.candidate("maml").ci95[0] < 0 < only_noisy.candidate("maml").ci95[1]
    both = choose({NO_ADAPT: base, "maml": noisy, "reptile": clear})
    assert both.method == "reptile" and both.ci95[0] > 0
    assert both.gain == pytest.approx(np.mean(clear - base))
    # a larger mean gain inside the noise loses to a smaller clear one
    big_noisy = base + 0.2 + 0.8 * np.resize([1.0, -1.0], 20)  # mean gain 0.2, sd ~0.82
    assert np.mean(big_noisy - base) > np.mean(clear - base)
    assert choose({NO_ADAPT: base, "maml": big_noisy, "reptile": clear}).method == "reptile"


def test_the_best_clear_gain_wins_equal_gains_keep_the_first_and_losses_never_win():
    base = np.array([0.2, 0.3, 0.1, 0.4])
    step = np.array([0.01, 0.02, 0.01, 0.02])
    small, large = base + step, base + 0.09 + step
    assert choose({NO_ADAPT: base, FINETUNE: small, "maml": large}).method == "maml"
    assert choose({NO_ADAPT: base, FINETUNE: large, "maml": large}).method == FINETUNE
    worse = base - 0.09 - step
    assert choose({NO_ADAPT: base, "maml": worse}).method == NO_ADAPT
    assert choose({NO_ADAPT: base, "maml": base}).method == NO_ADAPT  # a tie: no-adapt
    # every user gaining the same amount: zero spread, a clear gain
    same = choose({NO_ADAPT: base, "maml": base + 0.05})
    assert same.method == "maml" and same.ci95 == pytest.approx((0.05, 0.05))


def test_fewer_than_two_users_give_no_interval_and_no_adaptation():
    c = choose({NO_ADAPT: [0.1], "maml": [0.9]})
    assert c.method == NO_ADAPT and c.candidate("maml").ci95 is None and c.n_users == 1
    empty = choose({NO_ADAPT: [], "maml": []})
    assert empty.method == NO_ADAPT and empty.n_users == 0


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="no-adapt"):
        choose({"maml": [0.1, 0.2]})
    with pytest.raises(ValueError, match="2 user scores"):
        choose({NO_ADAPT: [0.1, 0.2, 0.3], "maml": [0.1, 0.2]})
    with pytest.raises(ValueError, match="finite"):
        choose({NO_ADAPT: [0.1, 0.2], "maml": [0.1, float("nan")]})


def test_a_choice_round_trips_through_json_and_bad_documents_name_the_field():
    base = [0.2, 0.3, 0.1, 0.4]
    c = choose(
        {NO_ADAPT: base, FINETUNE: [0.3, 0.4, 0.2, 0.5], "maml": [0.25, 0.3, 0.1, 0.4]},
        {FINETUNE: {"lr": 1e-3, "steps": 5, "policy": "head"}},
    )
    doc = json.loads(json.dumps(c.to_dict()))
    assert doc["method"] == FINETUNE and doc["n_users"] == 4
    assert doc["gain_ndcg10"] == pytest.approx(0.1) and len(doc["ci95"]) == 2
    assert [r["method"] for r in doc["candidates"]] == [NO_ADAPT, FINETUNE, "maml"]
    assert Choice.from_dict(doc) == c
    assert "finetune (NDCG@10 gain +0.1000" in c.summary()
    few = choose({NO_ADAPT: [0.1], "maml": [0.2]})
    assert Choice.from_dict(json.loads(json.dumps(few.to_dict()))) == few
    for change, named in [
        ({"method": "sgd"}, "choice.method"),
        ({"n_users": -1}, "n_users"),
        ({"gain_ndcg10": "big"}, "gain_ndcg10"),
        ({"ci95": [0.2, 0.1]}, "choice.ci95"),
        ({"candidates": []}, "candidates"),
        ({"method": "maml"}, "not those of its method 'maml'"),
    ]:
        with pytest.raises(ValueError, match=named):
            Choice.from_dict({**doc, **change})


def test_several_candidates_get_simultaneous_intervals_that_are_stored_and_read_back():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.1, 0.5, size=12)
    methods = {name: base + rng.normal(0.02, 0.03, size=12) for name in ("a", "b", "c")}
    c = choose({NO_ADAPT: base, **methods})
    assert c.level == pytest.approx(1 - 0.05 / 3)
    for name, values in methods.items():
        ref = stats.ttest_rel(values, base).confidence_interval(1 - 0.05 / 3)
        assert c.candidate(name).ci95 == pytest.approx((ref.low, ref.high))
    # a gain that clears the noise judged alone, but not as one of three
    z = np.linspace(-1, 1, 12)
    d = 0.0072 + 0.01 * (z - z.mean()) / z.std(ddof=1)  # mean 0.0072, sd 0.01
    clear_alone = base + d
    low_alone = paired_ci(d)[0]
    low_of_three = paired_ci(d, 1 - 0.05 / 3)[0]
    assert low_alone > 0 > low_of_three
    assert choose({NO_ADAPT: base, "a": clear_alone}).method == "a"
    worse = {"b": base - 0.1, "c": base - 0.1}
    assert choose({NO_ADAPT: base, "a": clear_alone, **worse}).method == NO_ADAPT
    doc = json.loads(json.dumps(c.to_dict()))
    assert doc["level"] == pytest.approx(1 - 0.05 / 3)
    assert (
        doc["interval"]
        == "paired t-interval over users, 98.33% each (Bonferroni over 3: 95% together)"
    )
    assert Choice.from_dict(doc) == c
    old = {k: v for k, v in doc.items() if k != "level"}  # written before the adjustment
    assert Choice.from_dict(old).level == 0.95
    with pytest.raises(ValueError, match=r"choice\.level"):
        Choice.from_dict({**doc, "level": 1.5})
