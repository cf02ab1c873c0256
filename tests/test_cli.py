"""The metarec command: real runs on small data and one clear line for every bad input."""

from __future__ import annotations

import json
import sys

import pytest

from metarec.cli import main


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["metarec", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tiny_csv(tmp_path):
    """A generic interactions file with a learnable pattern: 40 users walking a 12-item cycle."""
    path = tmp_path / "tiny.csv"
    lines = ["user,item,ts"]
    for u in range(40):
        for t in range(10):
            lines.append(f"u{u},i{(u + t) % 12},{1000 + t}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_inspect_prints_real_counts(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "data", "inspect", "ml-latest-small")
    assert code == 0
    assert "610" in out and "9,742" in out.replace("9742", "9,742")
    assert "100,836" in out.replace("100836", "100,836")


def test_unknown_dataset_is_one_line_without_traceback(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", "no-such-dataset")
    assert code == 1
    assert "error:" in err and "no-such-dataset" in err
    assert "Traceback" not in err + out


def test_malformed_file_names_the_line(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,timestamp\nu1,i1,100\nu2,i2,yesterday\n")
    code, _, err = run_cli(monkeypatch, capsys, "data", "inspect", str(bad))
    assert code == 1
    assert "bad.csv" in err and "line 3" in err and "Traceback" not in err


def test_unknown_config_key_is_named(monkeypatch, capsys, tmp_path, tiny_csv):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[model]\nitem_repr = 'id'\nwidth = 3\n")
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "pretrain",
        "--data",
        str(tiny_csv),
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "m"),
    )
    assert code == 1
    assert "'width'" in err and "config error" in err


def test_bad_option_value_exits_nonzero(monkeypatch, capsys, tiny_csv, tmp_path):
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "pretrain",
        "--data",
        str(tiny_csv),
        "--item-repr",
        "pixels",
        "--out",
        str(tmp_path / "m"),
    )
    assert code == 1 and "item_repr" in err and "Traceback" not in err


def test_pretrain_then_evaluate(monkeypatch, capsys, tmp_path, tiny_csv):
    out = tmp_path / "model"
    code, stdout, err = run_cli(
        monkeypatch,
        capsys,
        "pretrain",
        "--data",
        str(tiny_csv),
        "--item-repr",
        "id",
        "--max-epochs",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "0.003",
        "--schedule",
        "cosine",
        "--id-init",
        "cooccurrence",
        "--out",
        str(out),
    )
    assert code == 0, err
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_spec"]["id_init"] == "cooccurrence"
    assert saved["train_state"]["epoch"] == 3
    assert saved["train_config"]["batch_size"] == 4 and saved["train_config"]["lr"] == 0.003
    assert saved["train_config"]["schedule"] == "cosine"
    pretrain_metrics = json.loads((out / "metrics.json").read_text())
    assert pretrain_metrics["results"][0]["cost"]["epochs"] == 3
    assert (out / "learning_curve.png").is_file() and "report" in stdout
    assert (out / saved["weights_file"]).is_file()
    code, stdout, err = run_cli(
        monkeypatch,
        capsys,
        "evaluate",
        "--model",
        str(out),
        "--data",
        str(tiny_csv),
        "--out",
        str(tmp_path / "eval"),
    )
    assert code == 0, err
    assert "NDCG@10" in stdout and "popularity" in stdout
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {r["method"] for r in metrics["results"]} == {"seqrec", "popularity"}


def test_evaluate_missing_checkpoint(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--model", str(tmp_path / "none"))
    assert code == 1 and "checkpoint folder not found" in err


@pytest.mark.slow
def test_demo_quick_end_to_end(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "demo", "--quick")
    assert code == 0, err
    folder = tmp_path / "metarec-demo"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["protocol"] == "warm-ml" and metrics["dataset"] == "ml-latest-small"
    methods = {r["method"]: r for r in metrics["results"]}
    assert set(methods) == {"popularity", "bpr", "metarec"}
    assert 0 < methods["popularity"]["metrics"]["NDCG@10"] < 0.1
    assert (folder / "report.md").read_text().count("|") > 10
    assert list((folder / "checkpoint").glob("model-*.safetensors"))
    assert "report" in out and str(folder.name) in out


def test_download_offline_is_a_clear_error(monkeypatch, capsys, tmp_path):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    code, _, err = run_cli(
        monkeypatch, capsys, "data", "download", "ml-100k", "--dest", str(tmp_path)
    )
    assert code == 1 and "offline" in err and "ml-100k.zip" in err
    assert not any(tmp_path.iterdir())


def test_download_extracts_a_zip_safely(monkeypatch, tmp_path):
    import io
    import zipfile

    from metarec.data import download as dl
    from metarec.errors import DataError

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,5\n")
    monkeypatch.setattr(dl, "_fetch", lambda url, timeout: buf.getvalue())
    folder = dl.download("ml-latest-small", tmp_path)
    assert (folder / "ratings.csv").read_text().startswith("userId")

    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escape.txt", "x")
    monkeypatch.setattr(dl, "_fetch", lambda url, timeout: evil.getvalue())
    with pytest.raises(DataError, match="outside"):
        dl.download("ml-latest-small", tmp_path / "other")
    assert not (tmp_path / "escape.txt").exists()


def test_config_file_and_flags_merge(tmp_path):
    from metarec.config import pretrain_settings

    cfg = tmp_path / "run.toml"
    cfg.write_text("[model]\nitem_repr = 'text'\ndim = 32\n[train]\nlr = 0.01\nmax_epochs = 7\n")
    spec, train = pretrain_settings(cfg, {"item_repr": "id", "loss": None}, {"max_epochs": None})
    assert (spec.item_repr, spec.dim) == ("id", 32)  # the flag wins over the file
    # unset keys keep the product's pretraining defaults (warm-ml's batches of 8, cosine decay)
    assert (train.lr, train.max_epochs, train.batch_size) == (0.01, 7, 8)
    assert train.schedule == "cosine"
    # id-only: the text adaptor's PCA start is dropped; the co-occurrence id start stays
    assert (spec.text_init, spec.id_init) == ("random", "cooccurrence")


def test_bad_toml_and_unknown_table(tmp_path):
    from metarec.config import pretrain_settings
    from metarec.errors import ConfigError

    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        pretrain_settings(bad, {}, {})
    extra = tmp_path / "extra.toml"
    extra.write_text("[optimiser]\nlr = 1\n")
    with pytest.raises(ConfigError, match="'optimiser'"):
        pretrain_settings(extra, {}, {})
    with pytest.raises(ConfigError, match="device"):
        pretrain_settings(None, {}, {"device": "tpu"})


def test_threads_option_sets_torch_threads_and_refuses_zero(monkeypatch, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        code, out, _ = run_cli(
            monkeypatch, capsys, "--threads", "1", "data", "inspect", "ml-latest-small"
        )
        assert code == 0 and "users" in out
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    code, _, err = run_cli(monkeypatch, capsys, "--threads", "0", "data", "inspect", "x")
    assert code == 1 and "--threads must be a positive integer" in err
