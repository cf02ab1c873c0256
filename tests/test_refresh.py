"""metarec refresh: events since the base -> fine-tuned version, gated, registered, activated."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from metarec.errors import ConfigError, DataError
from metarec.serving import ServeSettings, create_app
from metarec.serving.refresh import RefreshConfig, RefreshResult, events_dataset, refresh
from metarec.serving.registry import checkpoint_version
from metarec.serving.scheduler import parse_duration, run_every
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


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("45s", 45.0), ("30m", 1800.0), ("1.5h", 5400.0), ("2d", 172800.0)],
)
def test_durations_parse_with_their_unit(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "m", "10x", "0", "-5m", "nan", "infh"])
def test_bad_durations_are_refused_naming_the_value(text):
    with pytest.raises(ConfigError, match=f"--every {text!r}"):
        parse_duration(text, "--every")


def _fake_refresh(accepts):
    """A refresh that records the config of each round; round i is accepted by accepts[i]."""
    seen = []

    def run(cfg, log):
        seen.append(cfg)
        n = len(seen)
        path = cfg.out / f"v{n}"
        return RefreshResult(f"v{n}", path, accepts[n - 1], False, {}, {}, 20, path / "report.md")

    return run, seen


def test_run_every_runs_the_bounded_rounds_and_moves_the_base_on_acceptance(tmp_path):
    run, seen = _fake_refresh([True, False, True])
    sleeps, results = [], []
    cfg = RefreshConfig(db="x.db", base=tmp_path / "base", out=tmp_path / "reg", since=5.0)
    last = run_every(
        cfg, 60.0, run=run, sleep=sleeps.append, log=print, on_result=results.append, rounds=3
    )
    assert [r.version for r in results] == ["v1", "v2", "v3"] and last is results[-1]
    assert sleeps == [60.0, 60.0]  # between rounds, never after the last
    assert seen[0].base == tmp_path / "base" and seen[0].since == 5.0
    assert seen[1].base == tmp_path / "reg" / "v1" and seen[1].since is None  # v1 accepted
    assert seen[2].base == tmp_path / "reg" / "v1"  # v2 rejected: the base stays


def test_run_every_without_a_period_runs_once_and_never_sleeps(tmp_path):
    run, seen = _fake_refresh([True])
    cfg = RefreshConfig(db="x.db", base=tmp_path / "base", out=tmp_path / "reg")
    run_every(cfg, None, run=run, sleep=lambda s: pytest.fail("slept"))
    assert len(seen) == 1
    with pytest.raises(ConfigError, match="every_s"):
        run_every(cfg, 0.0, run=run)
