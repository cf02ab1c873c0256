"""The warm-ml runner on a small dataset with item text: every method, one schema."""

from __future__ import annotations

from dataclasses import replace

import pytest

from metarec.errors import ConfigError
from metarec.evaluation.report import read_metrics_json
from metarec.protocols.warm_ml import WarmMLConfig, quick_config, run_warm_ml

COLOURS = ["red", "green", "blue", "yellow", "black", "white"]


@pytest.fixture
def small_dataset(tmp_path):
    """30 users, 12 items with text; each user walks the items in order from a start point."""
    inter = tmp_path / "inter.csv"
    rows = ["user_id,item_id,timestamp"]
    for u in range(30):
        rows += [f"u{u},i{(u + t) % 12},{t}" for t in range(9)]
    inter.write_text("\n".join(rows) + "\n")
    text = tmp_path / "items.csv"
    text.write_text(
        "item_id,text\n" + "".join(f"i{i},a {COLOURS[i % 6]} shirt number {i}\n" for i in range(12))
    )
    return inter, text


def load_small(monkeypatch, target: str, text, rating: str | None = None) -> None:
    """Make ``target`` (a module's ``load_dataset``) read the small CSV with its item text (and
    its ``rating`` column, when named)."""
    from metarec.data.loaders import registry

    real = registry.load_dataset
    columns = {"user": "user_id", "item": "item_id", "timestamp": "timestamp"}
    if rating is not None:
        columns["rating"] = rating
    monkeypatch.setattr(target, lambda name: real(name, **columns, item_text=text))


def test_warm_ml_writes_every_method(small_dataset, tmp_path, monkeypatch):
    inter, text = small_dataset
    load_small(monkeypatch, "metarec.protocols.warm_ml.load_dataset", text)
    cfg = quick_config(
        WarmMLConfig(data=str(inter), out=tmp_path / "out", seeds=(0, 1), progress=False)
    )
    cfg = replace(cfg, sasrec=replace(cfg.sasrec, max_epochs=1))  # each model its own settings
    import metarec.workflows.pretrain as workflow

    started, real_init = [], workflow.init_ids_from_cooccurrence

    def counting_init(model, data, seed=0):
        started.append(model.config.dim)
        return real_init(model, data, seed)

    monkeypatch.setattr(workflow, "init_ids_from_cooccurrence", counting_init)
    cfg = replace(cfg, spec=replace(cfg.spec, dim=4, n_heads=1))
    logs = []
    res = run_warm_ml(cfg, log=logs.append)
    doc = read_metrics_json(res["metrics_json"])
    assert doc["protocol"] == "warm-ml" and doc["seeds"] == [0, 1]
    rows = {r["method"]: r for r in doc["results"]}
    assert set(rows) == {"popularity", "bpr", "sasrec-id", "metarec-id", "metarec"}
    for row in rows.values():
        ndcg = row["metrics"]["NDCG@10"]
        assert set(ndcg) == {"mean", "ci95"} and 0.0 <= ndcg["mean"] <= 1.0
        assert ndcg["ci95"][0] <= ndcg["mean"] <= ndcg["ci95"][1]
        assert row["cost"]["peak_rss_mb"] > 10
    # the published SASRec trains with cfg.sasrec, both of metarec's models with cfg.seqrec
    assert rows["metarec"]["cost"]["epochs"] == 2 == rows["metarec-id"]["cost"]["epochs"]
    assert rows["sasrec-id"]["cost"]["epochs"] == 1
    assert set(doc["curves"]) == {"bpr", "sasrec-id", "metarec-id", "metarec"}
    # metarec's id vectors start from co-occurrence (both of its models, both seeds), SASRec's not
    assert started == [4, 4, 4, 4]
    report = res["report"].read_text()
    assert "sasrec-id" in report and "learning_curves.png" in report
    assert (tmp_path / "out" / "learning_curves.png").stat().st_size > 1000
    assert res["checkpoint"] is not None and any("item text" in line for line in logs)


def test_unknown_method_is_rejected():
    with pytest.raises(ConfigError, match="gpt"):
        replace(WarmMLConfig(), methods=("popularity", "gpt"))
