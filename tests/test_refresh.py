"""metarec refresh: events since the base -> fine-tuned version, gated, registered, activated."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from metarec.errors import DataError
from metarec.serving import ServeSettings, create_app
from metarec.serving.refresh import RefreshConfig, events_dataset, refresh
from metarec.serving.registry import checkpoint_version
from metarec.serving.store import Event, open_store
from metarec.training.checkpoint import load_checkpoint
from metarec.training.loop import TrainConfig
from test_cli import run_cli
from test_serving import ITEMS, N_ITEMS, _checkpoint


def _fill(db, users=40, length=12):
    """Every user walks the catalogue one item at a time from its own start: next = +1."""
    store = open_store(db)
    events = [
        Event(f"u{u}", ITEMS[(3 * u + t) % N_ITEMS], "view", 1_000.0 + 10 * t + u)
        for u in range(users)
        for t in range(length)
    ]
    store.add_events([*events, Event("u0", "unknown-item", "view", 5.0)])
    return store


def _cfg(tmp_path, **kw):
    train = TrainConfig(batch_size=16, lr=1e-2, max_epochs=15, patience=15, progress=False)
    base = kw.pop("base", None) or _checkpoint(tmp_path / "base", 0)
    return RefreshConfig(
        db=str(tmp_path / "events.db"), base=base, out=tmp_path / "registry", train=train, **kw
    )


def test_events_become_a_dataset_over_the_catalogue():
    events = [
        Event("b", "m2", "view", 3.0),
        Event("a", "m1", "view", 1.0),
        Event("a", "zz", "view", 2.0),
        Event("a", "m3", "dislike", 4.0),
    ]
    ds = events_dataset(events, ITEMS, [""] * N_ITEMS)
    assert ds.users == ["b", "a"]
    assert ds.interactions.user.tolist() == [0, 1] and ds.interactions.item.tolist() == [2, 1]


def test_refresh_learns_the_new_behaviour_and_registers_a_version(tmp_path, monkeypatch):
    _fill(tmp_path / "events.db")
    logs = []
    res = refresh(_cfg(tmp_path), log=logs.append)
    assert res.events == 40 * 12  # the unknown item is left out
    assert res.new["NDCG@10"] > res.base["NDCG@10"] + 0.2 and res.accepted
    assert res.path == tmp_path / "registry" / res.version
    assert checkpoint_version(res.path) == res.version
    saved = load_checkpoint(res.path)
    assert saved.meta["refreshed_until"] > 0 and saved.meta["refresh"]["accepted"] is True
    doc = json.loads((res.path / "metrics.json").read_text())
    assert {r["method"] for r in doc["results"]} == {"base", "refreshed"}
    assert "accepted" in res.report.read_text() and "version" in logs[-1]
    # a running service finds the version in its registry folder and activates it
    settings = (
        ServeSettings(
            models=(tmp_path / "base",), db=str(tmp_path / "events.db"), registry=(res.out,)
        )
        if hasattr(res, "out")
        else ServeSettings(
            models=(tmp_path / "base",),
            db=str(tmp_path / "events.db"),
            registry=(tmp_path / "registry",),
        )
    )
    with TestClient(create_app(settings)) as client:
        monkeypatch.setattr(
            httpx, "post", lambda url, **kw: client.post(url.split("8000")[1], **kw)
        )
        cfg = _cfg(tmp_path, base=res.path, activate_url="http://127.0.0.1:8000", since=0.0)
        again = refresh(cfg, log=lambda m: None)
        assert again.activated is (again.accepted is True)
        versions = {m["version"]: m for m in client.get("/models").json()}
        assert res.version in versions
        if again.activated:
            assert versions[again.version]["active"]
    # nothing new since the refreshed version: refused with a clear message
    with pytest.raises(DataError, match="too few new events"):
        refresh(_cfg(tmp_path, base=res.path), log=lambda m: None)


def test_refresh_command_once(tmp_path, monkeypatch, capsys):
    _fill(tmp_path / "events.db")
    base = _checkpoint(tmp_path / "base", 0)
    args = ["refresh", "--db", str(tmp_path / "events.db"), "--base", str(base)]
    args += ["--out", str(tmp_path / "registry"), "--time-budget", "5"]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "version:" in out and "report:" in out
    code, _, err = run_cli(monkeypatch, capsys, *args, "--every", "soon")
    assert code == 1 and "--every" in err


def test_refresh_refits_a_fused_models_weight_on_its_validation_rows(tmp_path):
    import torch

    from metarec.models import SeqRec, SeqRecConfig
    from metarec.training.checkpoint import Checkpoint, save_checkpoint
    from metarec.training.fusion import FUSION_WEIGHTS

    torch.manual_seed(0)
    cfg = SeqRecConfig(
        n_items=N_ITEMS, dim=16, n_layers=1, n_heads=2, max_len=8, dropout=0.0,
        item_repr="text", text_dim=8, text_fusion=True,
    )  # fmt: skip
    model = SeqRec(cfg, torch.randn(N_ITEMS, 8))
    model.text_fusion_weight.fill_(1000.0)  # not on the grid: a refit must replace it
    base = save_checkpoint(tmp_path / "fused", Checkpoint(model, "seqrec", ["u0"], ITEMS, {}))
    _fill(tmp_path / "events.db")
    res = refresh(_cfg(tmp_path, base=base), log=lambda m: None)
    saved = load_checkpoint(res.path)
    fit = saved.meta["refresh"]["text_fusion"]
    assert set(fit["valid"]) == {str(w) for w in FUSION_WEIGHTS}
    assert saved.model.text_fusion_weight.item() == fit["weight"] in FUSION_WEIGHTS
    assert fit["valid"][str(fit["weight"])] == max(fit["valid"].values())
