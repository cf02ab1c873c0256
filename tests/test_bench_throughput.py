"""train-throughput on a small dataset: rates, FLOP counts and the growth fit."""

from __future__ import annotations

import pytest

from metarec.data.loaders.registry import load_dataset
from metarec.evaluation.report import read_metrics_json
from metarec.protocols.throughput import (
    ThroughputConfig,
    growth_exponent,
    more_items,
    more_users,
    run_throughput,
)
from metarec.workflows.pretrain import ModelSpec
from test_bench_warm_ml import load_small, small_dataset  # noqa: F401


def test_resampled_data_keeps_the_sequences(small_dataset):  # noqa: F811
    inter, _ = small_dataset
    ds = load_dataset(inter)
    users = more_users(ds, 3)
    assert users.n_users == 3 * ds.n_users and users.n_items == ds.n_items
    assert len(users.interactions) == 3 * len(ds.interactions)
    items = more_items(ds, 4)
    assert items.n_items == 4 * ds.n_items and items.n_users == ds.n_users
    assert len(items.interactions) == len(ds.interactions)
    assert len(set((items.interactions.item // ds.n_items).tolist())) == 4  # every copy used
    assert growth_exponent([1, 2, 4, 8], [3, 6, 12, 24]) == pytest.approx(1.0)
    assert growth_exponent([1, 2, 4], [1, 4, 16]) == pytest.approx(2.0)


def test_throughput_run_writes_rates_and_exponents(small_dataset, tmp_path, monkeypatch):  # noqa: F811
    inter, text = small_dataset
    load_small(monkeypatch, "metarec.protocols.throughput.load_dataset", text)
    spec = ModelSpec(dim=16, n_layers=1, n_heads=1, text_hidden=16, max_len=8)
    cfg = ThroughputConfig(
        data=str(inter),
        out=tmp_path / "out",
        spec=spec,
        steps=3,
        meta_steps=1,
        scales=(1, 2),
        progress=False,
    )
    res = run_throughput(cfg, log=lambda m: None)
    doc = read_metrics_json(res["metrics_json"])
    rows = {
        (r["setting"]["phase"], r["setting"].get("axis"), r["setting"].get("factor")): r
        for r in doc["results"]
    }
    pre = rows[("pretrain", None, None)]["cost"]
    assert pre["sequences_per_s"] > 0 and pre["flops_per_sequence"] > 0
    assert (
        0
        < pre["fraction_of_peak"]
        == pytest.approx(
            pre["flops_per_s"] / rows[("matmul-peak", None, None)]["cost"]["flops_per_s"]
        )
    )
    assert rows[("meta-train", None, None)]["cost"]["tasks_per_s"] > 0
    for axis in ("users", "items"):
        one, two = rows[("scale", axis, 1)]["cost"], rows[("scale", axis, 2)]["cost"]
        assert two[axis] == 2 * one[axis]
    assert set(doc["growth_exponent"]) == {"users", "items"}
    assert (tmp_path / "out" / "scaling.png").stat().st_size > 0
