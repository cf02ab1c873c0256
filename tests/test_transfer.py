"""Transfer to a new domain end to end on small slices of real data: the finetune command and
the transfer-scientific runner in quick mode."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from metarec.adapt.adapter_io import load_adapter
from metarec.data.combine import load_combined
from metarec.data.loaders.registry import load_dataset
from metarec.data.splits import leave_one_out
from metarec.evaluation.report import read_metrics_json
from metarec.models import SeqBatch
from metarec.protocols.transfer_init import MetaInitConfig
from metarec.protocols.transfer_scientific import TransferConfig, run_transfer
from metarec.protocols.transfer_scientific import quick_config as transfer_quick_config
from metarec.training.checkpoint import load_checkpoint
from metarec.training.loop import TrainConfig
from metarec.training.pretrain import prepare_next_item
from metarec.workflows.finetune import target_data
from metarec.workflows.pretrain import ModelSpec, pretrain_seqrec
from test_cli import run_cli
from test_meta_helpers import one_thread  # noqa: F401  (autouse)

SPEC = ModelSpec(dim=16, n_layers=1, n_heads=1, max_len=10, text_hidden=0, text_init="pca")


def _slice(shared, tmp_path, name: str, movies: range, n_users: int) -> str:
    """A movielens-csv folder: the ratings of the first ``n_users`` users on ``movies``."""
    src = shared / "ml-latest-small"
    ratings = np.genfromtxt(src / "ratings.csv", delimiter=",", skip_header=1)
    lines = (src / "movies.csv").read_text(encoding="utf-8").splitlines()
    keep = {int(line.split(",", 1)[0]) for line in lines[1:]} & set(movies)
    rows = ratings[np.isin(ratings[:, 1], list(keep)) & (ratings[:, 0] <= n_users)]
    folder = tmp_path / name
    folder.mkdir()
    body = "".join(f"{int(u)},{int(i)},{r},{int(t)}\n" for u, i, r, t in rows)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + body)
    movie_lines = [line for line in lines[1:] if int(line.split(",", 1)[0]) in keep]
    (folder / "movies.csv").write_text("\n".join([lines[0], *movie_lines]) + "\n")
    return str(folder)


@pytest.fixture(scope="module")
def domains(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("domains")
    return (
        _slice(shared_data, tmp, "films-a", range(1, 400), 60),
        _slice(shared_data, tmp, "films-b", range(400, 1200), 60),
        _slice(shared_data, tmp, "films-c", range(1200, 3000), 80),
    )


def _pretrain(sources, out):
    source = load_combined(list(sources))
    data = prepare_next_item(leave_one_out(source), source.n_users, source.n_items, SPEC.max_len)
    cfg = TrainConfig(max_epochs=2, batch_size=32, progress=False)
    return pretrain_seqrec(source, data, SPEC, cfg, out=out).checkpoint


@pytest.mark.slow
def test_finetune_command_writes_an_adapter_and_a_merged_model(
    domains, tmp_path, monkeypatch, capsys
):
    base = _pretrain(domains[:2], tmp_path / "base")
    out = tmp_path / "lora"
    args = ["finetune", "--base", str(base), "--data", domains[2], "--strategy", "lora"]
    code, stdout, err = run_cli(
        monkeypatch, capsys, *args, "--out", str(out), "--max-epochs", "2", "--merge",
        "--text-fusion",
    )  # fmt: skip
    assert code == 0, err
    assert "before" in stdout and "after" in stdout and "report:" in stdout
    assert "KiB on disk" in stdout
    adapter = load_adapter(out)
    weight = adapter.model.text_fusion_weight.item()
    assert f"text fusion: weight {weight:g} (picked on validation)" in stdout
    assert adapter.meta["text_fusion"]["weight"] == weight
    merged = load_checkpoint(out / "merged")
    target = load_dataset(domains[2])
    assert merged.items == target.items.ids == adapter.items
    batch = SeqBatch(torch.zeros(3, dtype=torch.long), torch.randint(0, target.n_items, (3, 5)))
    assert torch.allclose(merged.model.score(batch), adapter.model.score(batch), atol=1e-4)
    doc = read_metrics_json(out)
    before, after = doc["results"]
    assert before["method"] == "before" and after["method"] == "finetune-lora"
    cost = after["cost"]
    assert 0 < cost["trainable_params"] < cost["total_params"]
    assert cost["trainable_fraction"] == pytest.approx(
        cost["trainable_params"] / cost["total_params"]
    )
    assert cost["adapter_bytes"] >= 4 * cost["trainable_params"]
    # the adapter file holds only the LoRA tensors and the last-item gate (on by default)
    names = json.loads((out / "adapter.json").read_text())["trainable"]
    assert names and all("lora_" in n or n == "last_item_gate" for n in names)
    assert "last_item_gate" in names


def test_finetune_command_refuses_bad_input(domains, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(
        monkeypatch, capsys, "finetune", "--base", str(tmp_path / "none"), "--data", domains[2]
    )
    assert code == 1 and "checkpoint folder not found" in err and "Traceback" not in err
    code, _, err = run_cli(
        monkeypatch, capsys, "finetune", "--base", "x", "--data", domains[2], "--strategy", "prefix"
    )
    assert code == 1 and "strategy must be one of" in err
    code, _, err = run_cli(
        monkeypatch, capsys, "finetune", "--base", "x", "--data", domains[2], "--fraction", "0"
    )
    assert code == 1 and "--fraction" in err
    code, _, err = run_cli(
        monkeypatch, capsys, "finetune", "--base", "x", "--data", domains[2],
        "--id-init", "cooccurrence", "--no-item-ids",
    )  # fmt: skip
    assert code == 1 and "id_init='cooccurrence' needs item ids" in err


def test_target_fraction_trains_on_few_users_and_tests_everyone_with_history(domains):
    target = load_dataset(domains[2])
    full, part = target_data(target, 1.0), target_data(target, 0.25)
    for name in ("users", "histories", "targets", "seen_indptr", "seen_items"):
        assert np.array_equal(getattr(part.test, name), getattr(full.test, name)), name
    kept = np.unique(part.window_users)
    assert len(kept) < len(np.unique(full.window_users))
    assert set(part.valid.users) <= set(kept)


@pytest.mark.slow
def test_transfer_runner_quick_writes_every_row(domains, tmp_path):
    cfg = TransferConfig(
        sources=domains[:2],
        target=domains[2],
        out=tmp_path / "run",
        spec=SPEC,
        strategies=("full", "lora", "adaptor"),
        init=MetaInitConfig(users_per_task=8, tasks_per_domain=4, valid_tasks_per_domain=2),
        progress=False,
    )
    cfg = replace(transfer_quick_config(cfg), fractions=(0.5, 1.0))
    logs: list[str] = []
    res = run_transfer(cfg, log=logs.append)
    doc = read_metrics_json(res["metrics_json"])
    assert doc["protocol"] == "transfer-scientific" and doc["quick"] is True
    rows = {(r["method"], r["setting"]["fraction"]) for r in doc["results"]}
    expected = {("zero-shot", 0.0), ("text-similarity", 0.0)} | {
        (m, f)
        for f in (0.5, 1.0)
        for m in ("finetune-all", "lora", "adaptor", "meta-init", "sasrec-id", "text-only")
    }
    assert rows == expected
    for r in doc["results"]:
        assert set(r["metrics"]) == {"Recall@10", "NDCG@10", "Recall@50", "NDCG@50"}
        assert 0 <= r["metrics"]["NDCG@10"] <= r["metrics"]["NDCG@50"] <= 1
    lora = next(r for r in doc["results"] if r["method"] == "lora")
    full = next(r for r in doc["results"] if r["method"] == "finetune-all")
    assert lora["cost"]["trainable_params"] < full["cost"]["trainable_params"]
    assert lora["cost"]["adapter_bytes"] < 4 * full["cost"]["trainable_params"]
    # every fine-tuned row and the target-only text model carry their validated fusion weight;
    # the id-only SASRec has no text to fuse
    for r in doc["results"]:
        fused = r["method"] not in ("zero-shot", "text-similarity", "sasrec-id")
        assert ("text_fusion_weight" in r["setting"]) == fused, r["method"]
        assert r["setting"].get("text_fusion_weight", 0.0) >= 0.0
    similar = next(r for r in doc["results"] if r["method"] == "text-similarity")
    assert similar["metrics"]["Recall@50"] > 0  # the text of this data carries signal
    report = res["report"].read_text()
    assert "No training: text-similarity" in report
    assert "Text-fusion weights picked on validation" in report
    assert "before (zero-shot)" in report and "ndcg_by_fraction.png" in report
    assert (cfg.out / "ndcg_by_fraction.png").stat().st_size > 0
    assert any("meta-learned initialisation" in line for line in logs)
    load_adapter(cfg.out / "adapters" / "lora-1")  # every adapter loads on its base


def test_pretrain_command_takes_several_datasets(domains, tmp_path, monkeypatch, capsys):
    out = tmp_path / "multi"
    code, _, err = run_cli(
        monkeypatch, capsys, "pretrain", "--data", domains[0], "--data", domains[1],
        "--domain-tag", "--domain-embedding", "--max-epochs", "1", "--item-repr", "text",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    ckpt = load_checkpoint(out)
    a, b = load_dataset(domains[0]), load_dataset(domains[1])
    assert len(ckpt.items) == a.n_items + b.n_items
    assert ckpt.model.config.n_domains == 2  # one learned row per domain, trained off zero
    assert ckpt.model.items.item_domain.tolist() == [0] * a.n_items + [1] * b.n_items
    assert ckpt.model.items.domain_embedding.weight.abs().sum() > 0
    assert ckpt.items[0] == f"films-a:{a.items.ids[0]}" and ckpt.items[-1].startswith("films-b:")
    text = json.loads((out / "item_text.json").read_text())["text"]
    assert text[0].startswith("films-a: ") and text[-1].startswith("films-b: ")


def test_verdicts_compare_the_best_transferred_model_with_the_target_only_text_model():
    from metarec.evaluation.report import ResultRow
    from metarec.protocols.transfer_report import verdicts

    def row(method, fraction, ndcg, **setting):
        metrics = {"NDCG@10": ndcg, "Recall@10": 2 * ndcg}
        return ResultRow(method, {"fraction": fraction, **setting}, metrics, {})

    rows = [
        row("finetune-all", 0.1, 0.070, text_fusion_weight=8.0),
        row("lora", 0.1, 0.050, text_fusion_weight=2.0),
        row("sasrec-id", 0.1, 0.090),  # target only: not a transferred model
        row("text-only", 0.1, 0.065, text_fusion_weight=0.0),
    ]
    lines = verdicts(rows)
    tenth = next(line for line in lines if line.startswith("10% of target users"))
    assert "finetune-all NDCG@10 0.0700" in tenth and "0.0650" in tenth
    assert tenth.endswith(": above")
    assert "finetune-all 0.1: 8, lora 0.1: 2, text-only 0.1: 0" in lines[-1]
    rows[-1] = row("text-only", 0.1, 0.075)
    assert any(line.endswith("not above") for line in verdicts(rows))


@pytest.mark.parametrize("flag, fused", [([], True), (["--no-text-fusion"], False)])
def test_the_bench_command_fuses_by_default_and_can_turn_fusion_off(
    flag, fused, tmp_path, monkeypatch, capsys
):
    import metarec.protocols.transfer_scientific as ts

    seen = []

    def fake_run(cfg, log):
        seen.append(cfg)
        return {"results": [], "metrics": ["NDCG@10"], "report": "r.md", "metrics_json": "m"}

    monkeypatch.setattr(ts, "run_transfer", fake_run)
    args = ["bench", "transfer-scientific", "--out", str(tmp_path / "run"), *flag]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    (cfg,) = seen
    assert cfg.text_fusion is fused
    assert cfg.finetune_config("lora").text_fusion is fused
