"""refresh-ml: period cutting, what each update may see, the mixing rule, and a quick run."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from metarec.data.periods import target_windows, time_periods
from metarec.data.schema import Dataset, Interactions, ItemCatalog
from metarec.data.windows import PAD
from metarec.errors import ConfigError
from metarec.evaluation.report import read_metrics_json
from metarec.meta.mixing import MixingConfig, apply_mixing, fit_logits, initial_logits, mix
from metarec.protocols.refresh_ml import (
    METHODS,
    RefreshMLConfig,
    Updater,
    next_period_sets,
    quick_config,
    run_refresh_ml,
    split_period,
)


def random_log(n: int = 1003, n_users: int = 40, n_items: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    inter = Interactions(
        rng.integers(0, n_users, n),
        rng.integers(0, n_items, n),
        rng.integers(0, 200, n),  # many ties in time
    ).sort_by_user_time()
    ds = Dataset(
        "toy",
        inter,
        [f"u{u}" for u in range(n_users)],
        ItemCatalog([f"i{i}" for i in range(n_items)], [""] * n_items),
    )
    return ds


def keys(inter: Interactions) -> list[tuple[int, int, int]]:
    cols = (inter.user.tolist(), inter.item.tolist(), inter.timestamp.tolist())
    return sorted(zip(*cols, strict=True))


def test_periods_equal_ordered_complete():
    ds = random_log()
    parts = time_periods(ds.interactions, 6)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(ds.interactions)
    for a, b in itertools.pairwise(parts):
        assert a.timestamp.max() <= b.timestamp.min()  # consecutive in global time
    pooled = [k for p in parts for k in keys(p)]
    assert sorted(pooled) == keys(ds.interactions)  # disjoint and complete
    with pytest.raises(ConfigError):
        time_periods(ds.interactions, 1)


def test_valid_window_is_the_latest_rows():
    part = time_periods(random_log().interactions, 3)[1]
    p = split_period(part, 0.1)
    assert len(p.valid) == int(np.ceil(0.1 * len(part)))
    assert p.fit.timestamp.max() <= p.valid.timestamp.min()
    assert sorted(keys(p.fit) + keys(p.valid)) == keys(part)


def updater(n_updates: int = 3) -> tuple[Updater, list[Interactions]]:
    ds = random_log()
    parts = time_periods(ds.interactions, n_updates + 2)
    cfg = RefreshMLConfig(n_updates=n_updates, replay_ratio=0.5)
    return Updater(cfg, ds, [split_period(p, cfg.valid_frac) for p in parts]), parts


def within(rows: Interactions, parts: list[Interactions]) -> bool:
    """Every row of ``rows`` is a row of ``parts`` (as a multiset)."""
    return not Counter(keys(rows)) - Counter(k for p in parts for k in keys(p))


def test_no_update_sees_data_after_its_period():
    upd, parts = updater()
    for t in range(1, 4):
        end_fit = upd.periods[t].fit.timestamp.max()
        for new_only, replay in ((False, 0.0), (True, 0.0), (True, 0.5)):
            history, is_target = upd.update_rows(t, new_only, replay)
            assert within(history, [*parts[:t], upd.periods[t].fit])  # no validation row either
            assert history.timestamp.max() <= end_fit <= upd.periods[t].valid.timestamp.min()
            assert len(history) == sum(len(p) for p in parts[:t]) + len(upd.periods[t].fit)
            if new_only:  # targets: period t's fit rows, plus replay x as many older rows
                n_fit = len(upd.periods[t].fit)
                assert is_target[-n_fit:].all()
                assert is_target[:-n_fit].sum() == round(replay * n_fit)
        history, flags = upd.future_rows(t)
        assert within(history, parts[: t + 1])  # the mixing fit stops at period t
        future = upd.periods[1].valid if t == 1 else parts[t]
        assert flags.sum() == len(future)


def test_test_targets_come_from_the_next_period_of_known_users():
    upd, parts = updater()
    past = upd.past(2)
    sets = next_period_sets(past, parts[2], upd.ds.n_users, 50, n_test=3)
    known = set(past.user.tolist())
    assert sets and all(set(es.users.tolist()) <= known for es in sets)
    first = sets[0]  # the first target's history is exactly the user's past rows
    for row, u in enumerate(first.users):
        seen = first.seen_items[first.seen_indptr[row] : first.seen_indptr[row + 1]]
        assert sorted(seen.tolist()) == sorted(past.item[past.user == u].tolist())


def test_target_windows_use_each_flagged_row_once():
    ds = random_log(n=300, n_users=5)
    inter = ds.interactions
    flags = np.random.default_rng(1).random(len(inter)) < 0.3
    users, inputs, targets = target_windows(inter, flags, ds.n_users, max_len=7)
    firsts = np.r_[True, inter.user[1:] != inter.user[:-1]]  # no predecessor: never a target
    assert (targets != PAD).sum() == (flags & ~firsts).sum()
    assert (inputs[targets != PAD] != PAD).all()  # every target has its predecessor as input
    assert ((targets != PAD).sum(axis=1) > 0).all()  # windows without a target are dropped
    for u in range(ds.n_users):  # per user: exactly the flagged items, in order
        seq = inter.item[inter.user == u]
        want = seq[(flags & ~firsts)[inter.user == u]]
        rows = np.flatnonzero(users == u)[::-1]  # windows come from the end
        got = np.concatenate([targets[r][targets[r] != PAD] for r in rows]) if len(rows) else []
        assert list(got) == list(want)


class Toy(nn.Module):
    """loss(batch) = mean squared error of a linear map; ``batch`` = (x, y)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def loss(self, batch):
        x, y = batch
        return ((self.lin(x) - y) ** 2).mean()


def test_mixing_endpoints_and_midpoint():
    torch.manual_seed(0)
    old, new = Toy().state_dict(), Toy().state_dict()
    names = list(old)
    at = {v: mix(old, new, initial_logits(names, v)) for v in (-float("inf"), 0.0, float("inf"))}
    for k in names:
        assert torch.equal(at[-float("inf")][k], old[k])  # a = 0: the old model
        assert torch.equal(at[float("inf")][k], new[k])  # a = 1: the fine-tuned one
        assert torch.allclose(at[0.0][k], (old[k] + new[k]) / 2)
    model = apply_mixing(Toy(), old, new, initial_logits(names, float("inf")))
    assert all(torch.equal(model.state_dict()[k], new[k]) for k in names)


def test_fitted_mixing_moves_toward_the_better_end():
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    good, bad = Toy(), Toy()
    y = good.lin(x).detach()  # the old model is exact on the future; the new one is not
    old, new = good.state_dict(), bad.state_dict()
    logits, losses = fit_logits(
        Toy(), old, new, initial_logits(old), lambda step: (x, y), MixingConfig(steps=30, lr=0.2)
    )
    assert losses[-1] < losses[0]
    assert all(torch.sigmoid(v) < 0.5 for v in logits.values())  # toward a = 0
    with pytest.raises(ValueError):
        MixingConfig(lr=0)


def test_quick_run_writes_every_method_and_period(tmp_path):
    cfg = quick_config(RefreshMLConfig(out=tmp_path / "out", n_updates=2))
    cfg = replace(cfg, n_test=2, max_users=60)
    res = run_refresh_ml(cfg, log=lambda _: None)
    doc = read_metrics_json(res["metrics_json"])
    assert doc["protocol"] == "refresh-ml" and doc["quick"] is True
    got = {(r["method"], r["setting"]["period"]) for r in doc["results"]}
    assert got == {(m, p) for m in METHODS for p in (1, 2, "mean")}
    for r in doc["results"]:
        ndcg = r["metrics"]["NDCG@10"]
        assert 0.0 <= ndcg["mean"] <= 1.0 and ndcg["ci95"][0] <= ndcg["ci95"][1]
        assert r["cost"]["update_seconds"] >= 0
        if r["method"] == "no-update":
            assert r["cost"]["update_seconds"] < 0.01  # nothing to do
    assert {(c["method"], c["baseline"]) for c in doc["comparisons"]} == {
        ("meta-update", "full-retrain"),
        ("meta-update", "finetune-new"),
    }
    assert len(doc["mixing_coefficients"]) == 2  # one fitted rule per update
    assert (tmp_path / "out" / "ndcg_by_period.png").stat().st_size > 0
    assert "Paired comparisons" in res["report"].read_text()
