"""coldstart-ml: cold users, per-method scoring, and the whole runner on a small dataset."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from metarec.data.schema import Interactions
from metarec.errors import ConfigError
from metarec.evaluation.report import read_metrics_json
from metarec.meta.cold_users import cold_users, score_popularity, score_users
from metarec.models import SeqRec, SeqRecConfig
from metarec.protocols.coldstart_ml import METHODS, ColdstartConfig, run_coldstart_ml
from metarec.protocols.coldstart_ml import quick_config as coldstart_quick_config
from metarec.workflows.pretrain import ModelSpec
from test_bench_warm_ml import load_small, small_dataset  # noqa: F401


def _model(n_items=40):
    torch.manual_seed(0)
    cfg = SeqRecConfig(
        n_items=n_items, dim=8, n_layers=1, n_heads=2, max_len=5, dropout=0.0, text_dim=4
    )
    return SeqRec(cfg, torch.randn(n_items, 4)).eval()


def _walks(n_users=6, length=12, n_items=40):
    u, it, ts = [], [], []
    for user in range(n_users):
        for t in range(length):
            u.append(user)
            it.append((3 * user + t) % n_items)
            ts.append(100 - t if user == 0 else t)  # user 0's rows come in reverse time
    return Interactions(np.array(u), np.array(it), np.array(ts))


def test_cold_users_split_in_time_and_sample_unseen_negatives():
    inter = _walks()
    users = cold_users(inter, 3, 5, 40, (0, 1))
    assert [c.user for c in users] == list(range(6))
    first = users[0]  # time order, not row order
    assert first.support.tolist() == [11, 10, 9] and first.query.tolist() == [8, 7, 6, 5, 4]
    for c in users:
        seen = set(inter.item[inter.user == c.user].tolist())
        assert len(c.negatives) == len(c.query) == 5
        assert not seen & set(c.negatives.tolist())
    again = cold_users(inter, 3, 5, 40, (0, 1))
    assert all((a.negatives == b.negatives).all() for a, b in zip(users, again, strict=True))
    assert len(cold_users(inter, 12, 5, 40, (0, 1))) == 0  # nobody has K + 1 interactions


def test_no_adaptation_ranks_like_the_model_itself():
    model = _model()
    n_items = model.config.n_items
    inter = _walks(n_items=n_items)
    users = cold_users(inter, 4, 3, n_items, (0,))
    scores = score_users(model, None, users)
    with torch.no_grad():
        from metarec.meta.tasks import history_batch

        for i, cu in enumerate(users):
            s = model.score(history_batch(cu.support, model.config.max_len))[0]
            s[torch.from_numpy(cu.support)] = -torch.inf
            top = torch.topk(s, 10).indices.tolist()
            hits = [1.0 if item in set(cu.query.tolist()) else 0.0 for item in top]
            dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hits))
            ideal = sum(1 / np.log2(r + 2) for r in range(min(10, len(set(cu.query.tolist())))))
            assert scores.ndcg[i] == pytest.approx(dcg / ideal, abs=1e-6)
            assert scores.recall[i] == pytest.approx(sum(hits) / len(set(cu.query.tolist())))
    assert scores.adapt_ms == []
    metrics = scores.metrics()
    assert 0.0 <= metrics["AUC"] <= 1.0 and metrics["LogLoss"] > 0


def test_popularity_puts_the_most_frequent_unseen_item_first():
    inter = _walks(n_items=40)
    users = cold_users(inter, 3, 5, 40, (0,))
    counts = np.zeros(40)
    counts[users[1].query[0]] = 100.0  # the first query item of user 1 is the most popular
    scores = score_popularity(counts, users)
    assert scores.recall[1] >= 1 / 5 and scores.ndcg[1] > 0
    assert "LogLoss" not in scores.metrics(with_logloss=False)


def test_config_names_bad_settings():
    with pytest.raises(ConfigError, match="unknown method"):
        ColdstartConfig(methods=("maml", "magic"))
    with pytest.raises(ConfigError, match="select_k"):
        ColdstartConfig(ks=(1, 3), select_k=5)
    with pytest.raises(ConfigError, match="folds"):
        ColdstartConfig(n_folds=5, folds=(5,))
    with pytest.raises(ConfigError, match="outer_lr"):
        ColdstartConfig(outer_lr=0.0)


def test_outer_rate_reaches_every_adamw_meta_learner():
    cfg = ColdstartConfig(outer_lr=2e-4)
    for method in ("maml", "fomaml", "meta-sgd"):
        assert cfg.learner_spec(method).config.outer_lr == 2e-4, method
    assert cfg.learner_spec("fomaml").config.first_order is True
    assert cfg.learner_spec("maml").config.first_order is False


def test_coldstart_runner_writes_every_method_and_k(small_dataset, tmp_path, monkeypatch):  # noqa: F811
    inter, text = small_dataset
    load_small(monkeypatch, "metarec.protocols.coldstart_ml.load_dataset", text)
    cfg = ColdstartConfig(
        data=str(inter),
        out=tmp_path / "out",
        n_folds=3,
        folds=(0, 1),
        ks=(1, 3, 5),
        select_k=3,
        n_query=4,
        spec=ModelSpec(dim=16, n_layers=1, n_heads=1, text_hidden=16, max_len=8),
        progress=False,
    )
    res = run_coldstart_ml(coldstart_quick_config(cfg), log=lambda m: None)
    doc = read_metrics_json(res["metrics_json"])
    assert doc["protocol"] == "coldstart-ml" and doc["quick"] is True and doc["folds"] == [0, 1]
    rows = {(r["method"], r["setting"]["K"]): r for r in doc["results"]}
    assert set(rows) == {(m, k) for m in METHODS for k in (1, 3, 5)}
    for (method, k), row in rows.items():
        ndcg = row["metrics"]["NDCG@10"]
        assert ndcg["ci95"][0] <= ndcg["mean"] <= ndcg["ci95"][1], (method, k)
        assert ("LogLoss" in row["metrics"]) == (method != "popularity")
        if method not in ("popularity", "no-adapt"):
            assert row["cost"]["adapt_ms_median"] >= 0 and row["cost"]["peak_rss_mb"] > 10
    # fine-tuning starts from the model itself: with nothing to step on (K=1) it is no-adapt
    base = rows[("no-adapt", 1)]["metrics"]["NDCG@10"]["mean"]
    for method in ("finetune-all", "finetune-head", "lora"):
        assert rows[(method, 1)]["metrics"]["NDCG@10"]["mean"] == pytest.approx(base)
    # the paired difference of fold means is the difference of the rows' means
    for c in res["comparisons"]:
        mine = rows[(c.method, c.k)]["metrics"]["NDCG@10"]["mean"]
        theirs = rows[(c.baseline, c.k)]["metrics"]["NDCG@10"]["mean"]
        assert c.diff == pytest.approx(mine - theirs, abs=1e-9)
        assert c.n_folds == 2 and c.verdict in ("better", "worse", "not distinguishable")
        assert len(c.per_fold) == 2 and c.diff == pytest.approx(sum(c.per_fold) / 2, abs=1e-9)
    assert {c.baseline for c in res["comparisons"]} == {"no-adapt", "finetune-all"}
    stored = {(c["method"], c["baseline"], c["K"]): c["per_fold"] for c in doc["comparisons"]}
    assert stored == {(c.method, c.baseline, c.k): list(c.per_fold) for c in res["comparisons"]}
    report = res["report"].read_text()
    assert "ndcg_by_k.png" in report and (tmp_path / "out" / "ndcg_by_k.png").stat().st_size > 0
    assert "maml vs no-adapt at K=3" in report
    assert "## NDCG@10 by K" in report and "| maml | no-adapt | 3 |" in report
    pivot = report.split("## NDCG@10 by K")[1].split("##")[0]
    assert pivot.count("**") == 2 * 3  # one best cell per K


def test_pivot_marks_the_best_method_of_each_k():
    from metarec.evaluation.report import ResultRow
    from metarec.protocols.coldstart_report import pivot

    rows = [
        ResultRow("a", {"K": 1}, {"NDCG@10": {"mean": 0.2, "ci95": [0.1, 0.3]}}),
        ResultRow("b", {"K": 1}, {"NDCG@10": {"mean": 0.3, "ci95": [0.25, 0.35]}}),
        ResultRow("a", {"K": 5}, {"NDCG@10": 0.4}),
    ]
    text = pivot(rows, "NDCG@10").splitlines()
    assert text[0] == "| method | K=1 | K=5 |"
    assert text[2] == "| a | 0.2000 ± 0.1000 | **0.4000** |"
    assert text[3] == "| b | **0.3000 ± 0.0500** | - |"


def test_coldstart_runner_adapts_with_the_users_feedback(small_dataset, tmp_path, monkeypatch):  # noqa: F811
    from metarec.errors import DataError

    inter, text = small_dataset
    rows = inter.read_text().splitlines()
    rated = tmp_path / "rated.csv"  # every third interaction disliked
    rated.write_text(
        rows[0]
        + ",rating\n"
        + "".join(f"{r},{2 if i % 3 == 0 else 5}\n" for i, r in enumerate(rows[1:]))
    )
    load_small(monkeypatch, "metarec.protocols.coldstart_ml.load_dataset", text, rating="rating")
    base = ColdstartConfig(
        data=str(rated),
        out=tmp_path / "plain",
        n_folds=3,
        folds=(0,),
        ks=(3,),
        select_k=3,
        n_query=4,
        methods=("no-adapt", "finetune-all", "maml"),
        spec=ModelSpec(dim=16, n_layers=1, n_heads=1, text_hidden=16, max_len=8),
        progress=False,
    )
    results = {}
    for weight in (0.0, 2.0):
        cfg = coldstart_quick_config(replace(base, like_weight=weight, out=tmp_path / f"w{weight}"))
        res = run_coldstart_ml(cfg, log=lambda m: None)
        doc = read_metrics_json(res["metrics_json"])
        results[weight] = {r["method"]: r["metrics"]["NDCG@10"] for r in doc["results"]}  # 1 fold
        assert ("Support loss with feedback" in res["report"].read_text()) == (weight > 0)
    # no adaptation reads the items only; the adapting methods moved with the feedback loss
    assert results[2.0]["no-adapt"] == pytest.approx(results[0.0]["no-adapt"])
    assert results[2.0]["maml"] != pytest.approx(results[0.0]["maml"], abs=1e-9)
    with pytest.raises(ConfigError, match="like_weight"):
        ColdstartConfig(like_weight=-1.0)
    unrated = replace(base, like_weight=1.0, data=str(inter))
    load_small(monkeypatch, "metarec.protocols.coldstart_ml.load_dataset", text)
    with pytest.raises(DataError, match="needs ratings"):
        run_coldstart_ml(coldstart_quick_config(unrated), log=lambda m: None)
