"""Training loop, checkpoints and resume on a small synthetic dataset with a learnable pattern."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from metarec.data.schema import Dataset, Interactions, ItemCatalog
from metarec.data.splits import leave_one_out
from metarec.errors import CheckpointError
from metarec.evaluation.next_item import evaluate_next_item
from metarec.training.checkpoint import load_checkpoint
from metarec.training.loop import TrainConfig
from metarec.training.pretrain import fit_popularity, prepare_next_item
from metarec.workflows.pretrain import ModelSpec, TextFeatures, pretrain_seqrec

N_USERS, N_ITEMS = 60, 30


def _cyclic_dataset() -> Dataset:
    """Every user walks the item cycle 0 -> 1 -> ... from a random start: next item = last + 1."""
    rng = np.random.default_rng(0)
    users, items, times = [], [], []
    for u in range(N_USERS):
        start, n = rng.integers(N_ITEMS), rng.integers(8, 20)
        for t in range(n):
            users.append(u)
            items.append((start + t) % N_ITEMS)
            times.append(t)
    inter = Interactions(user=np.array(users), item=np.array(items), timestamp=np.array(times))
    catalog = ItemCatalog([f"i{i}" for i in range(N_ITEMS)], [f"item {i}" for i in range(N_ITEMS)])
    return Dataset("cyclic", inter.sort_by_user_time(), [f"u{u}" for u in range(N_USERS)], catalog)


SPEC = ModelSpec(item_repr="id", dim=16, n_layers=1, n_heads=1, max_len=10, dropout=0.1)
NO_TEXT = TextFeatures(None, {"text_model": None})


@pytest.fixture(scope="module")
def setup():
    ds = _cyclic_dataset()
    return ds, prepare_next_item(leave_one_out(ds), ds.n_users, ds.n_items, max_len=10)


def _config(**kw) -> TrainConfig:
    base = dict(max_epochs=30, batch_size=16, lr=1e-2, patience=30, progress=False, seed=1)
    return TrainConfig(**{**base, **kw})


def test_seqrec_learns_the_pattern_and_beats_popularity(setup, tmp_path):
    ds, data = setup
    res = pretrain_seqrec(ds, data, SPEC, _config(), out=tmp_path / "ck", text=NO_TEXT)
    pop = evaluate_next_item(fit_popularity(data), data.test, ds.n_items)
    assert res.test["HR@10"] > 0.9
    assert res.test["NDCG@10"] > pop["NDCG@10"] + 0.3
    assert res.state.curve[-1][1] > res.state.curve[0][1]
    assert len(res.state.curve) == res.state.epoch


def test_checkpoint_round_trip_gives_identical_scores(setup, tmp_path):
    ds, data = setup
    res = pretrain_seqrec(ds, data, SPEC, _config(max_epochs=3), out=tmp_path / "ck", text=NO_TEXT)
    ckpt = load_checkpoint(tmp_path / "ck")
    assert ckpt.items == ds.items.ids and ckpt.users == ds.users
    assert ckpt.meta["dataset"] == "cyclic"
    assert ckpt.meta["versions"]["torch"] == torch.__version__
    from metarec.training.checkpoint import read_item_text

    assert read_item_text(tmp_path / "ck", ds.items.ids) == ds.items.text
    again = evaluate_next_item(ckpt.model, data.test, ds.n_items)
    assert again == pytest.approx(res.test, abs=1e-7)


def test_a_loaded_checkpoint_saved_with_new_weights_names_the_new_file(setup, tmp_path):
    """A loaded checkpoint's meta holds the old weights_file / sha256; saving it with changed
    weights (what refresh does) must write and name the new ones."""
    from metarec.training.checkpoint import save_checkpoint

    ds, data = setup
    pretrain_seqrec(ds, data, SPEC, _config(max_epochs=1), out=tmp_path / "a", text=NO_TEXT)
    ckpt = load_checkpoint(tmp_path / "a")
    with torch.no_grad():
        ckpt.model.norm.bias.add_(1.0)
    save_checkpoint(tmp_path / "b", replace(ckpt, meta={**ckpt.meta, "note": "changed"}))
    again = load_checkpoint(tmp_path / "b")
    assert again.meta["note"] == "changed"
    assert again.meta["weights_sha256"] != ckpt.meta["weights_sha256"]
    assert torch.equal(again.model.norm.bias, ckpt.model.norm.bias)


def test_resume_continues_exactly(setup, tmp_path):
    ds, data = setup
    straight = pretrain_seqrec(
        ds, data, SPEC, _config(max_epochs=4), out=tmp_path / "a", text=NO_TEXT
    )
    pretrain_seqrec(ds, data, SPEC, _config(max_epochs=2), out=tmp_path / "b", text=NO_TEXT)
    resumed = pretrain_seqrec(
        ds, data, SPEC, _config(max_epochs=4), out=tmp_path / "b", resume=True, text=NO_TEXT
    )
    assert resumed.state.epoch == 4
    assert [e for e, _ in resumed.state.curve] == [1, 2, 3, 4]
    assert [m for _, m in resumed.state.curve] == pytest.approx(
        [m for _, m in straight.state.curve]
    )
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_early_stopping_stops(setup):
    ds, data = setup
    res = pretrain_seqrec(ds, data, SPEC, _config(lr=1e-9, patience=2, max_epochs=50), text=NO_TEXT)
    assert res.state.epoch < 50
    assert "no improvement" in res.state.stopped


def test_validate_start_keeps_the_start_when_training_makes_it_worse(setup):
    """Fine-tuning a trained model with a ruinous learning rate: with ``validate_start`` the
    untrained weights are epoch 0 and are what comes back; without it, a worse epoch does."""
    import copy

    from metarec.training.pretrain import train_seqrec
    from metarec.training.pretrain import validator as make_validator

    ds, data = setup
    trained = pretrain_seqrec(ds, data, SPEC, _config(), text=NO_TEXT).model
    start = copy.deepcopy(trained.state_dict())
    start_metric = make_validator(data)(trained)
    ruin = _config(lr=30.0, grad_clip=0.0, max_epochs=2, patience=5)

    plain, _ = train_seqrec(copy.deepcopy(trained), data, ruin)
    assert [e for e, _ in plain.curve] == [1, 2]
    assert plain.best_metric < start_metric - 0.1

    kept, kept_best = train_seqrec(copy.deepcopy(trained), data, replace(ruin, validate_start=True))
    assert kept.curve[0] == (0, pytest.approx(start_metric))
    assert [e for e, _ in kept.curve] == [0, 1, 2]
    assert kept.best_epoch == 0 and kept.best_metric == pytest.approx(start_metric)
    for name, value in start.items():
        assert torch.equal(kept_best[name], value), name


def _weights(folder):
    return folder / json.loads((folder / "config.json").read_text())["weights_file"]


def test_corrupt_or_missing_checkpoint_is_reported(setup, tmp_path):
    ds, data = setup
    pretrain_seqrec(ds, data, SPEC, _config(max_epochs=1), out=tmp_path / "ck", text=NO_TEXT)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    weights = _weights(tmp_path / "ck")
    original = weights.read_bytes()
    weights.write_bytes(original[:-100])
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path / "ck")
    weights.write_bytes(original)
    cfg_path = tmp_path / "ck" / "config.json"
    good = cfg_path.read_text()
    cfg = json.loads(good)
    for key, value, message in [
        ("model_config", {**cfg["model_config"], "dim": 32}, "shape"),
        ("model_config", {**cfg["model_config"], "n_heads": 0}, "invalid model_config"),
        ("items", 5, "items must be a list"),
        ("weights_file", "../../etc/passwd", "invalid weights_file"),
    ]:
        cfg_path.write_text(json.dumps({**cfg, key: value}))
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "ck")
    for text, message in [("{not json", "not valid JSON"), ("5", "JSON object")]:
        cfg_path.write_text(text)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "ck")
    cfg_path.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "ck")


def test_failed_save_keeps_the_previous_checkpoint(setup, tmp_path, monkeypatch):
    from metarec.training import checkpoint as ck

    ds, data = setup
    first = pretrain_seqrec(
        ds, data, SPEC, _config(max_epochs=1), out=tmp_path / "ck", text=NO_TEXT
    )

    def broken(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "atomic_json", broken)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(
            tmp_path / "ck",
            ck.Checkpoint(first.model, "seqrec", ds.users, ds.items.ids, {}),
            weights={k: v + 1 for k, v in first.model.state_dict().items()},
        )
    monkeypatch.undo()
    again = load_checkpoint(tmp_path / "ck")
    for name, value in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], value), name


def test_existing_checkpoint_is_not_overwritten_silently(setup, tmp_path):
    ds, data = setup
    pretrain_seqrec(ds, data, SPEC, _config(max_epochs=1), out=tmp_path / "ck", text=NO_TEXT)
    with pytest.raises(CheckpointError, match="--overwrite"):
        pretrain_seqrec(ds, data, SPEC, _config(max_epochs=1), out=tmp_path / "ck", text=NO_TEXT)
    with pytest.raises(CheckpointError, match="lr"):
        pretrain_seqrec(
            ds,
            data,
            SPEC,
            _config(max_epochs=2, lr=0.5),
            out=tmp_path / "ck",
            resume=True,
            text=NO_TEXT,
        )
    latest = tmp_path / "ck" / "resume" / "latest.json"
    folder = tmp_path / "ck" / "resume" / json.loads(latest.read_text())["folder"]
    (folder / "state.json").write_text("{}")
    with pytest.raises(CheckpointError, match="unreadable or does not fit"):
        pretrain_seqrec(
            ds, data, SPEC, _config(max_epochs=2), out=tmp_path / "ck", resume=True, text=NO_TEXT
        )


def test_resume_without_state_is_an_error(setup, tmp_path):
    ds, data = setup
    with pytest.raises(CheckpointError, match="nothing to resume"):
        pretrain_seqrec(
            ds, data, SPEC, _config(max_epochs=1), out=tmp_path / "x", resume=True, text=NO_TEXT
        )


def test_sampled_bce_objective_also_learns(setup):
    ds, data = setup
    spec = ModelSpec(
        item_repr="id",
        dim=16,
        n_layers=1,
        n_heads=1,
        max_len=10,
        dropout=0.1,
        loss="bce",
        n_negatives=4,
    )
    res = pretrain_seqrec(ds, data, spec, _config(), text=NO_TEXT)
    pop = evaluate_next_item(fit_popularity(data), data.test, ds.n_items)
    assert res.test["NDCG@10"] > pop["NDCG@10"] + 0.2


def test_sampled_softmax_objective_learns_with_shared_distinct_negatives(setup):
    from metarec.training.pretrain import seqrec_batches

    ds, data = setup
    batch = next(seqrec_batches(data, 16, 12, shared=True)(0, np.random.default_rng(0)))
    assert batch.negatives.shape == (12,) and len(set(batch.negatives.tolist())) == 12
    assert batch.negatives.min() >= 0 and batch.negatives.max() < ds.n_items
    spec = replace(SPEC, loss="sampled", n_negatives=8)
    res = pretrain_seqrec(ds, data, spec, _config(), text=NO_TEXT)
    pop = evaluate_next_item(fit_popularity(data), data.test, ds.n_items)
    assert res.test["NDCG@10"] > pop["NDCG@10"] + 0.3


def test_cooccurrence_start_is_ahead_before_the_first_step(setup):
    ds, data = setup
    before = {}
    for init in ("random", "cooccurrence"):
        spec = replace(SPEC, id_init=init)
        res = pretrain_seqrec(
            ds, data, spec, _config(max_epochs=1, validate_start=True), text=NO_TEXT
        )
        before[init] = res.state.curve[0][1]  # validation NDCG@10 of the untrained start
    # next item = last + 1: neighbours in the cycle co-occur, so their vectors start alike
    assert before["cooccurrence"] > before["random"] + 0.1


class _LrProbe(torch.nn.Module):
    """A one-weight model whose loss records the learning rate of the step it is taken for."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2, 2))
        self.optimizer: torch.optim.Optimizer | None = None
        self.seen: list[float] = []

    def loss(self, batch):
        self.seen.append(self.optimizer.param_groups[0]["lr"])
        return (self.w * batch).sum() ** 2


def test_schedule_and_warmup_set_the_rate_of_every_step():
    import math

    from metarec.training.loop import fit, make_optimizer

    steps_per_epoch, epochs, lr, warmup = 3, 4, 0.1, 5
    config = TrainConfig(
        max_epochs=epochs,
        lr=lr,
        schedule="cosine",
        warmup_steps=warmup,
        patience=10,
        progress=False,
    )
    model = _LrProbe()
    model.optimizer = make_optimizer(model, config)
    batches = lambda epoch, rng: [torch.ones(2, 2)] * steps_per_epoch  # noqa: E731
    state, _ = fit(model, batches, lambda m: 0.0, config, optimizer=model.optimizer)

    expected = []
    for epoch in range(epochs):
        scale = 0.5 * (1 + math.cos(math.pi * (epoch + 0.5) / epochs))
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i + 1
            expected.append(lr * scale * min(1.0, step / warmup))
    assert model.seen == pytest.approx(expected)
    assert state.steps == epochs * steps_per_epoch
    assert expected[0] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi / 8)) / 5)
    assert expected[-1] < 0.05 * lr  # decayed almost to zero by the last epoch

    linear = replace(config, schedule="linear", warmup_steps=0)
    assert [linear.epoch_lr_scale(e) for e in range(epochs)] == pytest.approx(
        [0.875, 0.625, 0.375, 0.125]
    )
    assert TrainConfig().epoch_lr_scale(7) == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(warmup_steps=-1)
