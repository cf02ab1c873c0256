"""coldstart-like: feature rows of rated cold users, the like net, scoring, and the runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarec.adapt.policies import PolicyConfig, make_policy
from metarec.data.schema import Interactions
from metarec.errors import DataError
from metarec.evaluation.report import read_metrics_json
from metarec.like.cold_start import (
    feature_space,
    item_quality,
    like_users,
    score_like_users,
    score_next_item,
)
from metarec.like.like_net_fit import LikeNetFitConfig, fit_like_net
from metarec.meta.inference import PolicyBundle
from metarec.meta.inner_optim import adamw
from metarec.meta.tasks import history_batch
from metarec.models import FeatureBatch, LikeNet, LikeNetConfig
from metarec.protocols.coldstart_like import (
    METHODS,
    ColdstartLikeConfig,
    quick_config,
    run_coldstart_like,
)
from metarec.workflows.pretrain import ModelSpec
from test_bench_coldstart import _model
from test_bench_warm_ml import COLOURS, load_small


def _rated(n_users=6, length=12, n_items=40):
    """Users walk the items; even users like even items (5 stars) and rate odd ones 1."""
    u, it, ts, r = [], [], [], []
    for user in range(n_users):
        for t in range(length):
            item = (3 * user + t) % n_items
            u.append(user)
            it.append(item)
            ts.append(t)
            r.append(5.0 if (item % 2 == 0) == (user % 2 == 0) else 1.0)
    return Interactions(np.array(u), np.array(it), np.array(ts), rating=np.array(r))


def test_support_rows_read_the_other_support_items_and_query_rows_all_of_them():
    model, inter = _model(), _rated()
    users = like_users(model, inter, 4, n_query=3, with_ranking=True)
    assert [lu.user for lu in users] == list(range(6))
    lu = users[1]
    assert lu.support_items.tolist() == [3, 4, 5, 6] and lu.query_items.tolist() == [7, 8, 9]
    assert lu.support_labels.tolist() == [1.0, 0.0, 1.0, 0.0]  # odd user likes odd items
    assert lu.query_labels.tolist() == [1.0, 0.0, 1.0]
    vectors = model.items.all_items().detach()
    with torch.no_grad():
        for j in range(4):  # row j: the user vector without item j
            others = np.delete(lu.support_items, j)
            h = model.user_vectors(history_batch(others, 5), vectors)[0]
            assert torch.allclose(lu.h_support[j], h, atol=1e-6)
        h_all = model.user_vectors(history_batch(lu.support_items, 5), vectors)[0]
        assert torch.allclose(lu.h_query, h_all, atol=1e-6)
        logp = torch.log_softmax(model.score(history_batch(lu.support_items, 5))[0], 0)
        assert torch.allclose(lu.next_item, logp, atol=1e-5)
    # K = 1: nothing is left to read; the row's user vector is zero
    assert torch.count_nonzero(like_users(model, inter, 1, 3)[0].h_support) == 0


def test_feature_rows_and_item_quality():
    model, inter = _model(), _rated()
    space = feature_space(model, inter, 40)
    d = model.config.dim
    assert space.dim == 3 * d + 2 and space.item_view().dim == d + 2
    h, items = torch.randn(2, d), torch.tensor([3, 7])
    rows = space.rows(h, items)
    v = space.vectors[items]
    assert torch.equal(rows[:, :d], h) and torch.equal(rows[:, d : 2 * d], v)
    assert torch.allclose(rows[:, 2 * d : 3 * d], h * v)
    assert torch.equal(rows[:, -1], space.quality[items])
    assert torch.equal(space.item_view().rows(h, items)[:, :d], v)
    # shrunk mean: item 3 is rated by users 0 (1 star) and 1 (5 stars, odd/odd) only
    q = item_quality(inter, 40, prior=5.0)
    mu = inter.rating.mean()
    mask = inter.item == 3
    expected = (inter.rating[mask].sum() + 5 * mu) / (mask.sum() + 5)
    assert q[3] == pytest.approx(expected)
    assert q[39] == pytest.approx(mu)  # nobody rated it: the global mean
    with pytest.raises(DataError, match="rating"):
        like_users(model, Interactions(inter.user, inter.item, inter.timestamp), 3)


def test_like_net_learns_and_adaptation_uses_the_support_labels():
    model, inter = _model(), _rated(n_users=12)
    space = feature_space(model, inter, 40)
    users = like_users(model, inter, 6, n_query=4)
    tasks = [u.task(space) for u in users]
    torch.manual_seed(0)
    net = LikeNet(LikeNetConfig(in_dim=space.dim, dropout=0.0))
    with torch.no_grad():
        first = float(net.loss(tasks[0].query))
    fit = fit_like_net(net, tasks, tasks, LikeNetFitConfig(max_epochs=30, patience=30, lr=1e-2))
    assert fit.best_auc > 0.9 and fit.curve[0][1] <= fit.best_auc
    with torch.no_grad():
        assert float(net.loss(tasks[0].query)) < first
    # no adaptation: the logits are the net's own
    plain = score_like_users(net, None, users, space, rank=False)
    with torch.no_grad():
        assert np.allclose(plain.logits[0], net.score(tasks[0].query).double().numpy(), atol=1e-6)
    assert plain.adapt_ms == []
    # a support set whose labels are all 1 pulls the user's query logits up
    lu = users[0]
    support, _ = lu.batches(space)
    liked = FeatureBatch(support.x, torch.ones(len(support)))
    bundle = PolicyBundle(make_policy(PolicyConfig("head"), net), adamw(0.05), 5)
    from metarec.like.cold_start import adapt_like
    from metarec.meta.functional import like_logits

    policy, fast = adapt_like(net, bundle, liked)
    _, query = lu.batches(space)
    with torch.no_grad():
        after = like_logits(net, policy.effective_params(net, fast), query)
        before = net.score(query)
    assert (after > before).all()


def test_next_item_scores_are_the_frozen_models_log_probabilities():
    model, inter = _model(), _rated()
    users = like_users(model, inter, 4, n_query=3, with_ranking=True)
    s = score_next_item(users)
    assert np.allclose(s.logits[2], users[2].next_item[users[2].query_items].numpy())
    assert len(s.ndcg) == sum(u.query_labels.any() for u in users)
    assert all(0.0 <= v <= 1.0 for v in s.ndcg)


@pytest.fixture
def rated_dataset(tmp_path):
    """40 users walking 12 items with text; each user likes two items in three."""
    inter = tmp_path / "inter.csv"
    rows = ["user_id,item_id,timestamp,rating"]
    for u in range(40):
        for t in range(10):
            item = (u + 2 * t) % 12
            rows.append(f"u{u},i{item},{t},{5 if (item + u) % 3 else 2}")
    inter.write_text("\n".join(rows) + "\n")
    text = tmp_path / "items.csv"
    text.write_text(
        "item_id,text\n" + "".join(f"i{i},a {COLOURS[i % 6]} shirt number {i}\n" for i in range(12))
    )
    return inter, text


def test_runner_writes_every_method_and_k(rated_dataset, tmp_path, monkeypatch):

    inter, text = rated_dataset
    load_small(monkeypatch, "metarec.protocols.coldstart_like.load_dataset", text, rating="rating")
    cfg = ColdstartLikeConfig(
        data=str(inter),
        out=tmp_path / "out",
        n_folds=3,
        folds=(0, 1),
        ks=(1, 3),
        select_k=3,
        n_query=4,
        spec=ModelSpec(dim=16, n_layers=1, n_heads=1, text_hidden=16, max_len=8),
        progress=False,
    )
    res = run_coldstart_like(quick_config(cfg), log=lambda m: None)
    doc = read_metrics_json(res["metrics_json"])
    assert doc["protocol"] == "coldstart-like" and doc["quick"] is True and doc["folds"] == [0, 1]
    rows = {(r["method"], r["setting"]["K"]): r for r in doc["results"]}
    assert set(rows) == {(m, k) for m in METHODS for k in (1, 3)}
    for (method, _), row in rows.items():
        a = row["metrics"]["AUC"]
        assert a["ci95"][0] <= a["mean"] <= a["ci95"][1] and 0.0 <= a["mean"] <= 1.0, method
        assert ("NDCG@10" in row["metrics"]) == (method not in ("history-mean", "item-mean"))
    # the paired AUC difference of fold means is the difference of the rows' means
    for c in res["comparisons"]:
        if c.metric != "AUC":
            continue
        mine = rows[(c.method, c.k)]["metrics"]["AUC"]["mean"]
        theirs = rows[(c.baseline, c.k)]["metrics"]["AUC"]["mean"]
        assert c.diff == pytest.approx(mine - theirs, abs=1e-9)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Adapted methods against the baselines, AUC" in report


def test_data_without_ratings_is_refused(tmp_path, monkeypatch):
    inter = tmp_path / "inter.csv"
    inter.write_text("user_id,item_id,timestamp\n" + "".join(f"u{i},i{i},{i}\n" for i in range(5)))
    from metarec.data.loaders import registry

    real = registry.load_dataset
    monkeypatch.setattr(
        "metarec.protocols.coldstart_like.load_dataset",
        lambda name: real(name, user="user_id", item="item_id", timestamp="timestamp"),
    )
    cfg = ColdstartLikeConfig(data=str(inter), out=tmp_path / "o", progress=False)
    with pytest.raises(DataError, match="explicit feedback"):
        run_coldstart_like(cfg, log=lambda m: None)


def test_options_reach_the_config_and_bad_ones_are_refused(tmp_path):
    from metarec.errors import ConfigError
    from metarec.protocols.coldstart_like import config_from_options

    options = {"n_folds": 5, "fold_seed": 0, "folds": [1], "ks": [5], "methods": ["meta-sgd"]}
    cfg = config_from_options(
        tmp_path, None, {**options, "policy": "user-embedding"}, 60, 30, False
    )
    assert cfg.policy.name == "user-embedding" and cfg.folds == (1,) and cfg.ks == (5,)
    assert cfg.meta.time_budget_s == 30 and cfg.pretrain.time_budget_s == 60
    # Meta-SGD meta-learns its rates only; MAML its start too
    assert cfg.learner_spec("meta-sgd").config.meta_learn == "hyper"
    assert cfg.learner_spec("maml").config.meta_learn == "all"
    assert cfg.learner_spec("melu").algorithm == "maml"
    assert cfg.learner_spec("meta-sgd").policy.name == "user-embedding"
    assert cfg.learner_spec("anil").policy.name == "head"  # anil adapts the head only
    with pytest.raises(ConfigError, match="policy"):
        config_from_options(tmp_path, None, {**options, "policy": "nope"}, 60, 30, False)
    with pytest.raises(ConfigError, match="unknown method"):
        config_from_options(tmp_path, None, {**options, "methods": ["nope"]}, 60, 30, False)
