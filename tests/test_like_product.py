"""P(like) as a product: `metarec like fit` end to end, the head's checkpoint, `p_like` served."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from metarec.cli import app
from metarec.data.loaders.registry import load_dataset
from metarec.errors import CheckpointError
from metarec.like.workflow import (
    HEAD_CONFIG,
    HEAD_DIR,
    HEAD_WEIGHTS,
    NEUTRAL_RATING,
    LikeFitConfig,
    fit_like_head,
    load_like_head,
    predict_like,
    save_like_head,
)
from metarec.models import SeqRec, SeqRecConfig
from metarec.serving import ServeSettings, create_app
from metarec.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from test_cli import run_cli

N_USERS, N_ITEMS, PER_USER = 60, 30, 20


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    """Users rating items: even items are good, each user has a bias; labels = rating > 3."""
    rng = np.random.default_rng(0)
    lines = ["user,item,ts,rating"]
    for u in range(N_USERS):
        bias = rng.normal(0, 0.7)
        for t, i in enumerate(rng.choice(N_ITEMS, PER_USER, replace=False)):
            r = np.clip(np.round(3.2 + (1.2 if i % 2 == 0 else -1.2) + bias + rng.normal()), 1, 5)
            lines.append(f"u{u},i{i},{1000 + t},{r}")
    path = tmp_path_factory.mktemp("like") / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _base(path, dataset, seed=0):
    torch.manual_seed(seed)
    cfg = SeqRecConfig(
        n_items=dataset.n_items, dim=16, n_layers=1, n_heads=2, max_len=10, dropout=0.0,
        item_repr="id",
    )  # fmt: skip
    ckpt = Checkpoint(SeqRec(cfg), "seqrec", list(dataset.users), list(dataset.items.ids), {})
    save_checkpoint(path, ckpt)
    return path


@pytest.fixture(scope="module")
def fitted(ratings_csv, tmp_path_factory):
    """A base checkpoint with a head fitted by the command into <base>/like-head."""
    dataset = load_dataset(str(ratings_csv))
    base = _base(tmp_path_factory.mktemp("base") / "m", dataset)
    args = ["like", "fit", "--base", str(base), "--data", str(ratings_csv), "--budget", "16"]
    return base, dataset, CliRunner().invoke(app, args)


def test_like_fit_command_prints_real_aucs_and_writes_the_head(fitted):
    base, _, res = fitted
    assert res.exit_code == 0, res.output
    lines = {ln.split()[0]: ln.split()[1:] for ln in res.stdout.splitlines() if ln}
    for split in ("valid", "test"):
        values = [float(v) for v in lines[split]]  # history-mean, before, after
        assert len(values) == 3 and all(0.0 <= v <= 1.0 for v in values)
    start, end = (float(x) for x in lines["fit"][1:4:2])
    assert end < start  # the head learned on the rows it was fit on
    config = json.loads((base / HEAD_DIR / HEAD_CONFIG).read_text())
    base_config = json.loads((base / "config.json").read_text())
    assert config["base_weights_sha256"] == base_config["weights_sha256"]
    assert config["fit"]["budget"] == 16
    assert not list((base / HEAD_DIR).glob("*.pt")) and not list((base / HEAD_DIR).glob("*.pkl"))


def test_fit_moves_the_head_and_round_trip_predicts_the_same(fitted, tmp_path):
    base, dataset, _ = fitted
    ckpt = load_checkpoint(base)
    fit = fit_like_head(ckpt, dataset, LikeFitConfig(budget=16, seed=1), log=lambda _: None)
    assert fit.fit_loss[1] < fit.fit_loss[0]
    for row in fit.auc.values():
        assert row["after"] != row["before"] and all(0 <= v <= 1 for v in row.values())
    save_like_head(tmp_path / "h", fit.model)
    loaded = load_like_head(tmp_path / "h", ckpt)
    history, ratings, items = [0, 3, 5, 7], [5.0, 2.0, 4.0, 1.0], list(range(dataset.n_items))
    a = predict_like(fit.model, ckpt.model, history, ratings, items)
    b = predict_like(loaded, ckpt.model, history, ratings, items)
    np.testing.assert_array_equal(a, b)
    assert ((a > 0) & (a < 1)).all() and a.std() > 0


def test_a_head_is_refused_on_another_base(fitted, tmp_path):
    base, dataset, _ = fitted
    other = load_checkpoint(_base(tmp_path / "other", dataset, seed=7))
    head_sha = json.loads((base / HEAD_DIR / HEAD_CONFIG).read_text())["base_weights_sha256"]
    with pytest.raises(CheckpointError) as e:
        load_like_head(base / HEAD_DIR, other)
    assert head_sha in str(e.value) and other.meta["weights_sha256"] in str(e.value)


def test_corrupt_or_incomplete_heads_name_the_file(fitted, tmp_path):
    base, _, _ = fitted
    ckpt = load_checkpoint(base)
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in (HEAD_CONFIG, HEAD_WEIGHTS):
        (bad / name).write_bytes((base / HEAD_DIR / name).read_bytes())
    weights = bytearray((bad / HEAD_WEIGHTS).read_bytes())
    weights[-1] ^= 0xFF
    (bad / HEAD_WEIGHTS).write_bytes(bytes(weights))
    with pytest.raises(CheckpointError, match=HEAD_WEIGHTS):
        load_like_head(bad, ckpt)
    config = json.loads((base / HEAD_DIR / HEAD_CONFIG).read_text())
    del config["threshold"]
    (bad / HEAD_CONFIG).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"{HEAD_CONFIG}.*threshold"):
        load_like_head(bad, ckpt)
    (bad / HEAD_CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match=HEAD_CONFIG):
        load_like_head(bad, ckpt)


def test_service_answers_p_like_equal_to_the_library(fitted, tmp_path):
    base, _, _ = fitted
    ckpt = load_checkpoint(base)
    like = load_like_head(base / HEAD_DIR, ckpt)
    settings = ServeSettings(models=(base,), db=str(tmp_path / "e.db"))
    with TestClient(create_app(settings)) as client:
        events = [
            {"user": "u", "item": "i0", "type": "rating", "value": 5.0, "timestamp": 1},
            {"user": "u", "item": "i1", "type": "view", "timestamp": 2},
            {"user": "u", "item": "i2", "type": "rating", "value": 2.0, "timestamp": 3},
        ]
        assert client.post("/events", json={"events": events}).status_code == 200
        got = client.get("/users/u/recommendations?k=5").json()
        body = {"items": ["i0", "i1", "i2"], "ratings": [5.0, None, 2.0], "k": 5, "adapt": False}
        new = client.post("/recommendations", json=body).json()
    index = {raw: i for i, raw in enumerate(ckpt.items)}
    history = [index["i0"], index["i1"], index["i2"]]
    for answer in (got, new):
        assert answer["source"] == "model" and len(answer["items"]) == 5
        items = [index[r["item"]] for r in answer["items"]]
        expected = predict_like(like, ckpt.model, history, [5.0, NEUTRAL_RATING, 2.0], items)
        served = [r["p_like"] for r in answer["items"]]
        assert all(0.0 <= p <= 1.0 for p in served)
        np.testing.assert_allclose(served, expected, rtol=1e-6)


def test_without_a_head_there_is_no_p_like(ratings_csv, tmp_path):
    dataset = load_dataset(str(ratings_csv))
    base = _base(tmp_path / "plain", dataset)
    with TestClient(create_app(ServeSettings(models=(base,), db=str(tmp_path / "e.db")))) as c:
        res = c.post("/recommendations", json={"items": ["i0", "i2"], "k": 3, "adapt": False})
        bad = c.post("/recommendations", json={"items": ["i0", "i2"], "ratings": [1.0]})
    assert res.status_code == 200 and all(r["p_like"] is None for r in res.json()["items"])
    assert bad.status_code == 422 and "ratings" in bad.text


def test_like_fit_refuses_a_bad_budget_in_one_line(fitted, ratings_csv, monkeypatch, capsys):
    base, _, _ = fitted
    args = ["like", "fit", "--base", str(base), "--data", str(ratings_csv), "--budget", "1"]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--out", str(base / "x"))
    assert code == 1 and "budget" in err and "Traceback" not in err + out


def test_the_like_features_are_built_once_per_version(fitted, tmp_path):
    """The head's item features (a pass over the catalogue) are built at the first p_like of
    a version and reused by every later request of that version."""
    base, _, _ = fitted
    settings = ServeSettings(models=(base,), db=str(tmp_path / "e.db"))
    body = {"items": ["i0", "i2"], "k": 3, "adapt": False}
    with TestClient(create_app(settings)) as client:
        active = client.app.state.service.registry.active
        assert active.like_space is None
        first = client.post("/recommendations", json=body).json()
        space = active.like_space
        assert space is not None and client.post("/recommendations", json=body).json() == first
        assert active.like_space is space  # reused, not rebuilt
        fresh = active.like.space(active.checkpoint.model)
        np.testing.assert_array_equal(space.seq, fresh.seq)
        np.testing.assert_array_equal(space.log_pop, fresh.log_pop)
