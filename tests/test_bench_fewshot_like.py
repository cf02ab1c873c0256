"""fewshot-like: the summary and report on hand-made records, the CLI's errors, the whole run."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from metarec.cli import app
from metarec.errors import ConfigError
from metarec.evaluation.metrics import mean_ci95
from metarec.evaluation.report import read_metrics_json
from metarec.protocols.fewshot_like import (
    CROSS_ENCODERS,
    METHODS,
    FewshotLikeConfig,
    quick_config,
    run_fewshot_like,
)
from metarec.protocols.fewshot_like_methods import Fitted
from metarec.protocols.fewshot_like_report import beats_baselines, pivot, summarise
from test_bench_warm_ml import load_small


def test_summary_pools_seeds_and_checks_every_baseline():
    cfg = FewshotLikeConfig(
        seeds=(0, 1, 2),
        budgets=(16, 64),
        methods=("history-mean", "logreg-baseline", "seqrec-head"),
    )
    fits = []
    for seed, (lr, head) in enumerate([(0.70, 0.72), (0.72, 0.75), (0.71, 0.74)]):
        for b in (16, 64):
            fits.append(Fitted("history-mean", b, seed, True, 0.73, 0.7))
            fits.append(Fitted("logreg-baseline", b, seed, True, lr, 0.7))
            fits.append(Fitted("seqrec-head", b, seed, False, 0.70, 0.7))
            fits.append(Fitted("seqrec-head", b, seed, True, head if b == 64 else 0.72, 0.7))
    rows = summarise(cfg, fits)
    auc = {
        (r.method, r.setting["samples"], r.setting["adapted"], r.setting["test"]): r.metrics["AUC"]
        for r in rows
    }
    mean, ci = mean_ci95([0.72, 0.75, 0.74])
    assert auc[("seqrec-head", 64, True, "all")] == {"mean": mean, "ci95": list(ci)}
    assert auc[("seqrec-head", 16, False, "all")]["mean"] == pytest.approx(0.70)
    lines = beats_baselines(cfg, rows, "all")
    assert lines == [
        "seqrec-head vs best baseline (all test set) — "
        "n=16: -0.0100 (NOT above); n=64: +0.0067 (above)"
    ]
    table = pivot(rows, "all")
    assert "| seqrec-head | 0.7000 → 0.7200 ± 0.0000 |" in table


def test_report_of_cross_encoders_alone_has_no_empty_whole_set_table(tmp_path):
    from types import SimpleNamespace

    from metarec.protocols.fewshot_like_report import write_fewshot_like

    cfg = FewshotLikeConfig(seeds=(0, 1), budgets=(16,), methods=CROSS_ENCODERS)
    fits = [
        Fitted(m, 16, seed, adapted, None, 0.7 + 0.01 * adapted, 3.0)
        for m in CROSS_ENCODERS
        for seed in (0, 1)
        for adapted in (False, True)
    ]
    info = {
        "n_samples": 1000,
        "n_test": 900,
        "n_test_subset": 50,
        "users": {"train": 8, "valid": 1, "test": 1},
        "test_positive_rate": 0.6,
        "pretrain_seconds": 1.0,
        "wall_seconds": 2.0,
        "peak_rss_mb": 100.0,
        "ce_meta": {"seconds": 5.0, "score_start_seconds": 1.0, "query_losses": [0.7]},
    }
    data = SimpleNamespace(dataset=SimpleNamespace(name="toy"))
    report = write_fewshot_like(cfg, data, fits, info, tmp_path)["report"].read_text()
    assert "whole test set (900" not in report and "test subset (50 samples)" in report
    assert "| cross-encoder-reptile | 0.7000 → 0.7100 ± 0.0000 |" in report
    assert "start meta-learned once per run (5 s" in report


def test_config_and_cli_name_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="unknown method"):
        FewshotLikeConfig(methods=("nope",))
    with pytest.raises(ConfigError, match="budget"):
        FewshotLikeConfig(budgets=(1,))
    res = CliRunner().invoke(
        app, ["bench", "fewshot-like", "--out", str(tmp_path / "o"), "--method", "nope"]
    )
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)
    res = CliRunner().invoke(
        app, ["bench", "fewshot-like", "--out", str(tmp_path / "o"), "--template", "{history}"]
    )
    assert isinstance(res.exception, ConfigError) and "candidate" in str(res.exception)


@pytest.fixture
def rated_dataset(tmp_path):
    """40 users rating 30 items; a user likes even items, with a per-user rating offset."""
    rng = np.random.default_rng(0)
    rows = ["user_id,item_id,timestamp,rating"]
    for u in range(40):
        items = rng.permutation(30)[:24]
        for t, i in enumerate(items):
            r = np.clip((4.5 if i % 2 == 0 else 2.0) + (u % 3 - 1) * 0.5, 0.5, 5.0)
            rows.append(f"u{u},i{i},{t},{r}")
    inter = tmp_path / "ratings.csv"
    inter.write_text("\n".join(rows) + "\n")
    text = tmp_path / "items.csv"
    text.write_text("item_id,text\n" + "".join(f"i{i},Movie {i} ({1990 + i})\n" for i in range(30)))
    return inter, text


@pytest.mark.slow
def test_fewshot_like_runs_every_method(rated_dataset, tmp_path, monkeypatch):
    from metarec.workflows.pretrain import ModelSpec

    inter, text = rated_dataset
    load_small(monkeypatch, "metarec.protocols.fewshot_like.load_dataset", text, rating="rating")
    cfg = FewshotLikeConfig(
        data=str(inter),
        out=tmp_path / "out",
        budgets=(16, 32),
        spec=ModelSpec(dim=16, n_layers=1, n_heads=1, text_hidden=16, max_len=10),
        ce_test_samples=24,
        progress=False,
    )
    logs: list[str] = []
    res = run_fewshot_like(quick_config(cfg), log=logs.append)
    doc = read_metrics_json(res["metrics_json"])
    assert doc["protocol"] == "fewshot-like" and doc["seeds"] == [0, 1] and doc["quick"] is True
    rows = {
        (r["method"], r["setting"]["samples"], r["setting"]["adapted"], r["setting"]["test"]): r
        for r in doc["results"]
    }
    for m in METHODS:
        for b in (16, 32):
            assert (m, b, True, "subset") in rows
            assert ((m, b, True, "all") in rows) == (m not in CROSS_ENCODERS)
    # the like/dislike signal is the item: every learned head finds it with 32 labels
    for m in ("seqrec-head", "seqrec-head-reptile"):
        assert rows[(m, 32, True, "all")]["metrics"]["AUC"]["mean"] > 0.8
    assert rows[("history-mean", 16, True, "all")]["metrics"]["AUC"]["ci95"][0] > 0.0
    # the cross-encoder's meta-learned start: trained once, shared by every budget and seed
    meta_start = [
        rows[("cross-encoder-reptile", b, False, "subset")]["metrics"]["AUC"] for b in (16, 32)
    ]
    assert meta_start[0] == meta_start[1] and meta_start[0]["ci95"][0] == meta_start[0]["mean"]
    assert doc["run"]["ce_meta"]["seconds"] > 0 and len(doc["run"]["ce_meta"]["query_losses"]) == 2
    assert doc["settings"]["cross_encoder_meta"]["meta_steps"] == 2
    report = res["report"].read_text()
    assert (
        "auc_by_budget_all.png" in report and (tmp_path / "out" / "auc_by_budget_all.png").exists()
    )
    assert "vs best baseline" in report and "→" in report
