"""`metarec meta-train` and `metarec adapt` end to end on a tiny CSV, and their settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metarec.data.loaders.registry import load_dataset
from metarec.errors import ConfigError
from metarec.meta import load_meta_checkpoint
from metarec.models import SeqRec, SeqRecConfig
from metarec.training.checkpoint import Checkpoint, save_checkpoint
from test_cli import run_cli
from test_meta_helpers import one_thread  # noqa: F401


def write_genre_csv(path, n_users: int = 40):
    """``n_users`` users, each consuming the 10 items of 2 of 8 genres in random order."""
    rng = np.random.default_rng(0)
    lines = ["user,item,ts"]
    for u in range(n_users):
        genres = rng.choice(8, 2, replace=False)
        items = rng.permutation(np.concatenate([np.arange(g * 5, g * 5 + 5) for g in genres]))
        lines += [f"u{u},i{item},{1000 + t}" for t, item in enumerate(items)]
    path.write_text("\n".join(lines) + "\n")
    return path


def save_base_model(folder, csv):
    """A small (untrained) SeqRec checkpoint over the CSV's catalogue."""
    ds = load_dataset(csv)
    torch.manual_seed(0)
    cfg = SeqRecConfig(
        n_items=ds.n_items, dim=16, n_layers=1, n_heads=2, max_len=3, dropout=0.0, item_repr="id"
    )
    meta = {"dataset": ds.name, "dataset_source": str(csv)}
    return save_checkpoint(folder, Checkpoint(SeqRec(cfg), "seqrec", ds.users, ds.items.ids, meta))


@pytest.fixture
def genre_csv(tmp_path):
    return write_genre_csv(tmp_path / "genres.csv")


@pytest.fixture
def base_model(tmp_path, genre_csv):
    return save_base_model(tmp_path / "base", genre_csv)


def write_config(tmp_path, text: str):
    path = tmp_path / "meta.toml"
    path.write_text(text)
    return path


QUICK = """
[meta]
inner_lr = 0.1
outer_lr = 0.01
[train]
meta_batch_size = 4
max_steps = 6
eval_every = 3
progress = false
device = "cpu"
"""


def test_meta_train_then_adapt_end_to_end(monkeypatch, capsys, tmp_path, genre_csv, base_model):
    out = tmp_path / "meta"
    args = ["meta-train", "--base", str(base_model), "--data", str(genre_csv), "--out", str(out)]
    args += ["--algorithm", "fomaml", "--policy", "all", "--k", "3", "--fold", "1"]
    args += ["--config", str(write_config(tmp_path, QUICK))]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "fomaml" in stdout and "no-adapt" in stdout and "report" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "meta-train"
    rows = {r["method"]: r for r in metrics["results"]}
    assert set(rows) == {"no-adapt", "finetune", "fomaml"}
    assert rows["fomaml"]["setting"] == {"K": 3, "policy": "all", "fold": 1}
    assert rows["fomaml"]["cost"]["meta_steps"] == 6 and rows["fomaml"]["cost"]["adapt_ms_p95"] > 0
    assert rows["finetune"]["setting"]["lr"] in (1e-4, 1e-3, 1e-2)
    assert (out / "report.md").is_file() and (out / "meta_validation.png").is_file()
    # 3 meta-validation users: 2 early-stop and pick the rate, 1 judges -> no interval, so
    # the choice is no adaptation and the folder holds the base weights
    choice = json.loads((out / "meta.json").read_text())["choice"]
    assert (choice["method"], choice["n_users"], choice["gain_ndcg10"]) == ("no-adapt", 1, 0.0)
    assert [c["method"] for c in choice["candidates"]] == ["no-adapt", "finetune", "fomaml"]
    assert choice["candidates"][1]["ci95"] is None
    assert "adaptation:      no-adapt (nothing beat it" in stdout
    assert "Chosen adaptation: no-adapt" in (out / "report.md").read_text()
    assert "on the cold users: gain +0.0000, 95% CI [+0.0000, +0.0000]" in stdout
    config = json.loads((out / "config.json").read_text())
    assert (
        config["weights_sha256"]
        == json.loads((base_model / "config.json").read_text())["weights_sha256"]
    )
    mc = load_meta_checkpoint(out)
    assert mc.spec.algorithm == "fomaml" and mc.info["tasks"]["k"] == 3
    assert mc.checkpoint.meta["base_checkpoint"] == str(base_model)
    assert mc.choice is not None and mc.choice.method == "no-adapt" and mc.adapter() is None

    code, stdout, err = run_cli(
        monkeypatch, capsys, "adapt", "--model", str(out), "--items", "i0", "i1", "i2", "--top", "5"
    )
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("adaptation: chosen on held-out users: no-adapt (")
    assert "before (no adaptation)" in lines[2] and "after (no-adapt)" in lines[2]
    assert [line.split()[0] for line in lines[3:]] == ["1", "2", "3", "4", "5"]
    for line in lines[3:]:  # no adaptation chosen: both columns are the base model's ranking
        assert line[6:50].rstrip() == line[52:] != ""

    code, stdout, err = run_cli(monkeypatch, capsys, "adapt", "--model", str(out), "i0", "zzz")
    assert code == 1 and "Traceback" not in err + stdout
    assert err.strip().count("\n") == 0 and "'zzz'" in err

    # a second run refuses to replace the checkpoint before doing any work
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 1 and "--overwrite" in err

    # --no-choose: the meta-learner, unjudged, as before the choice existed
    code, stdout, err = run_cli(monkeypatch, capsys, *args, "--overwrite", "--no-choose")
    assert code == 0, err
    assert "not judged (--no-choose)" in stdout
    assert "choice" not in json.loads((out / "meta.json").read_text())
    rows = {r["method"] for r in json.loads((out / "metrics.json").read_text())["results"]}
    assert rows == {"no-adapt", "fomaml"}
    mc = load_meta_checkpoint(out)
    assert mc.choice is None and mc.adapter() is mc.learner
    code, stdout, err = run_cli(monkeypatch, capsys, "adapt", "--model", str(out), "i0", "i1")
    assert code == 0, err
    assert stdout.startswith("adaptation: fomaml (unjudged") and "after (fomaml, all)" in stdout


def test_meta_train_auto_trains_and_judges_every_meta_learner(
    monkeypatch, capsys, tmp_path, genre_csv, base_model
):
    from metarec.meta.learners import algorithms

    out = tmp_path / "auto"
    args = ["meta-train", "--base", str(base_model), "--data", str(genre_csv), "--out", str(out)]
    args += ["--algorithm", "auto", "--policy", "all", "--k", "3", "--fold", "1"]
    args += ["--config", str(write_config(tmp_path, QUICK))]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    for name in algorithms():
        assert f"{name}: best meta-validation" in stdout and f"meta-training {name}" in err
    choice = json.loads((out / "meta.json").read_text())["choice"]
    assert [c["method"] for c in choice["candidates"]] == ["no-adapt", "finetune", *algorithms()]
    assert f"Bonferroni over {len(algorithms()) + 1}" in choice["interval"]
    rows = {r["method"]: r for r in json.loads((out / "metrics.json").read_text())["results"]}
    assert (
        rows["anil"]["setting"]["policy"] == "head" and rows["maml"]["setting"]["policy"] == "all"
    )
    code, _, err = run_cli(monkeypatch, capsys, *args, "--overwrite", "--no-choose")
    assert code == 1 and "drop --no-choose" in err and "Traceback" not in err


def test_meta_train_rejects_unknown_keys(monkeypatch, capsys, tmp_path, genre_csv, base_model):
    bad = write_config(tmp_path, "[meta]\ninner_lr = 0.1\nalpha_init = 0.5\n")
    args = ["meta-train", "--base", str(base_model), "--data", str(genre_csv)]
    args += ["--out", str(tmp_path / "m"), "--config", str(bad)]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 1 and "'alpha_init'" in err and "maml" in err and "Traceback" not in err
    code, _, err = run_cli(
        monkeypatch, capsys, *args[:-2], "--algorithm", "anil", "--policy", "all"
    )
    assert code == 1 and "anil adapts the head only" in err


def test_adapt_needs_a_meta_trained_model(monkeypatch, capsys, base_model):
    code, _, err = run_cli(
        monkeypatch, capsys, "adapt", "--model", str(base_model), "--items", "i1"
    )
    assert code == 1 and "not a meta-trained model" in err


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile", "meta-sgd"])
def test_meta_train_defaults_to_the_inner_loop_coldstart_validated(algorithm, tmp_path):
    from metarec.config import meta_train_settings
    from metarec.protocols.coldstart_ml import ColdstartConfig

    bench = ColdstartConfig()
    (spec,), *_ = meta_train_settings(None, {"algorithm": algorithm}, {}, {})
    assert spec.config == bench.learner_spec(algorithm).config
    assert spec.config.inner_steps == bench.inner_loop()["inner_steps"] == 3
    assert getattr(spec.config, "outer_lr", 3e-4) == bench.inner_loop()["outer_lr"] == 3e-4
    # the file still decides what it names
    given = write_config(tmp_path, "[meta]\ninner_steps = 2\n")
    (spec,), *_ = meta_train_settings(given, {"algorithm": algorithm}, {}, {})
    assert spec.config.inner_steps == 2


def test_meta_settings_merge_file_and_flags(tmp_path):
    from metarec.config import meta_train_settings

    cfg = write_config(
        tmp_path,
        '[meta]\nalgorithm = "meta-sgd"\nk = 3\nalpha_range = [0.01, 0.02]\n'
        '[model]\npolicy = "lora"\nrank = 2\ntargets = ["blocks.0.ff.0"]\n'
        "[train]\nmax_steps = 7\n",
    )
    (spec,), tasks, train, _ = meta_train_settings(cfg, {"k": 4}, {"policy": None}, {"seed": 3})
    assert spec.algorithm == "meta-sgd" and spec.config.alpha_range == (0.01, 0.02)
    assert (spec.policy.name, spec.policy.rank, spec.policy.targets) == (
        "lora",
        2,
        ("blocks.0.ff.0",),
    )
    assert (tasks.k, train.max_steps, train.seed) == (4, 7, 3)
    (spec,), *_ = meta_train_settings(None, {"algorithm": "anil"}, {}, {})
    assert spec.policy.name == "head"
    assert spec.config.inner_steps == 3  # anil is MAML: the product's inner loop too
    with pytest.raises(ConfigError, match="fomaml"):
        meta_train_settings(
            write_config(tmp_path, "[meta]\nfirst_order = false\n"), {"algorithm": "fomaml"}, {}, {}
        )
    with pytest.raises(ConfigError, match="targets"):
        meta_train_settings(write_config(tmp_path, "[model]\ntargets = [1]\n"), {}, {}, {})
    with pytest.raises(ConfigError, match="k must be"):
        meta_train_settings(None, {"k": 1}, {}, {})


def test_pretrain_on_a_fold_marks_the_checkpoint_and_meta_train_trusts_it(
    monkeypatch, capsys, tmp_path, genre_csv
):
    base = tmp_path / "fold-base"
    args = ["pretrain", "--data", str(genre_csv), "--out", str(base), "--item-repr", "id"]
    args += ["--max-epochs", "1", "--cold-start-fold", "1", "--device", "cpu"]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    config = json.loads((base / "config.json").read_text())
    assert config["cold_start_fold"] == {"fold": 1, "n_folds": 5, "seed": 0, "valid_fraction": 0.1}
    for fold, warned in ((1, False), (2, True)):
        out = tmp_path / f"meta-{fold}"
        args = ["meta-train", "--base", str(base), "--data", str(genre_csv), "--out", str(out)]
        args += ["--algorithm", "fomaml", "--policy", "head", "--k", "3", "--fold", str(fold)]
        args += ["--config", str(write_config(tmp_path, QUICK))]
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 0, err
        report = (out / "report.md").read_text()
        assert ("may have been seen in pretraining" in report) == warned
        assert "early stopping on them can be optimistic" not in report
