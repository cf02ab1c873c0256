"""Meta-training, meta checkpoints and adaptation at inference on small synthetic data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from metarec.adapt import PolicyConfig, make_policy
from metarec.data.schema import Interactions
from metarec.errors import CheckpointError
from metarec.meta import (
    LEARNERS,
    LearnerSpec,
    MetaTrainConfig,
    PolicyBundle,
    adapt_user,
    build_learner,
    evaluate_tasks,
    like_tasks,
    load_meta_checkpoint,
    meta_train,
    next_item_tasks,
    recommend,
    save_meta_checkpoint,
    sgd,
)
from metarec.meta.learners import default_config, learner_state
from metarec.meta.tasks import history_batch
from metarec.models import SeqRec, SeqRecConfig
from metarec.training.checkpoint import Checkpoint, save_checkpoint
from test_meta_helpers import one_thread, same_state, snapshot  # noqa: F401

N_ITEMS, GENRE = 40, 5


def genre_log(n_users: int = 80, seed: int = 0) -> Interactions:
    """Each user likes 2 of 8 genres of 5 items and consumes those 10 items in random order.

    With a history window of one item the model sees one genre at a time; the other one is
    only learnable per user, from the support set: adaptation has something to find.
    """
    rng = np.random.default_rng(seed)
    user, item = [], []
    for u in range(n_users):
        genres = rng.choice(N_ITEMS // GENRE, 2, replace=False)
        items = np.concatenate([np.arange(g * GENRE, (g + 1) * GENRE) for g in genres])
        user += [u] * len(items)
        item += list(rng.permutation(items))
    ts = np.tile(np.arange(2 * GENRE), n_users)
    return Interactions(np.asarray(user), np.asarray(item), ts)


def tiny_model(max_len: int = 1, seed: int = 0) -> SeqRec:
    torch.manual_seed(seed)
    cfg = SeqRecConfig(
        n_items=N_ITEMS, dim=16, n_layers=1, n_heads=2, max_len=max_len, dropout=0.0, item_repr="id"
    )
    return SeqRec(cfg)


def split_tasks(max_len: int = 1, k: int = 5):
    inter = genre_log()
    train = next_item_tasks(inter.take(inter.user < 64), k, 5, max_len)
    valid = next_item_tasks(inter.take(inter.user >= 64), k, 5, max_len)
    return train, valid


def spec(algorithm: str = "fomaml", policy: str = "all", **changes) -> LearnerSpec:
    config = replace(default_config(algorithm), **changes)
    return LearnerSpec(algorithm, PolicyConfig(policy), config)


QUICK = MetaTrainConfig(meta_batch_size=8, max_steps=60, eval_every=10, patience=5, progress=False)


def test_meta_training_improves_query_ndcg_over_no_adaptation():
    train, valid = split_tasks()
    model = tiny_model()
    learner = build_learner(model, spec(inner_lr=0.1, inner_steps=2, outer_lr=1e-2))
    base = evaluate_tasks(learner, valid, steps=0)["NDCG@10"]
    res = meta_train(learner, train, valid, QUICK)
    adapted = evaluate_tasks(learner, valid)["NDCG@10"]
    unadapted = evaluate_tasks(learner, valid, steps=0)["NDCG@10"]
    assert res.curve[0][0] == 0 and res.step == 60 and "max_steps" in res.stopped
    assert adapted == pytest.approx(res.best_metric)  # the best validated state is kept
    assert adapted > base + 0.2
    assert adapted > unadapted + 0.02  # the per-user genre is found by adaptation


def test_early_stopping_keeps_the_best_state():
    train, valid = split_tasks()
    model = tiny_model()
    before = snapshot(model)
    learner = build_learner(model, spec(outer_lr=0.0))
    config = replace(QUICK, max_steps=1000, eval_every=2, patience=3)
    res = meta_train(learner, train, valid, config)
    assert res.stopped == "no improvement for 3 validations" and res.step == 6
    assert [s for s, _ in res.curve] == [0, 2, 4, 6] and res.best_step == 0
    assert same_state(model, before)


def test_time_budget_stops_after_one_step():
    train, valid = split_tasks()
    learner = build_learner(tiny_model(), spec("reptile", "user-embedding"))
    res = meta_train(learner, train, valid, replace(QUICK, time_budget_s=1e-9))
    assert res.step == 1 and "time budget" in res.stopped and len(res.curve) == 2


def test_like_tasks_meta_train_on_auc():
    inter = genre_log(n_users=30)
    rating = np.where(inter.item % 2 == 0, 5.0, 1.0)
    inter = Interactions(inter.user, inter.item, inter.timestamp, rating)
    tasks = like_tasks(inter, k=5, n_query=5, max_len=3)
    learner = build_learner(tiny_model(max_len=3), spec("maml", inner_lr=0.1, outer_lr=1e-2))
    config = replace(QUICK, max_steps=30, select="AUC")
    res = meta_train(learner, tasks[:24], tasks[24:], config)
    metrics = evaluate_tasks(learner, tasks[24:])
    assert set(metrics) == {"AUC", "LogLoss"} and res.best_metric > 0.9


@pytest.mark.parametrize(
    "algorithm, policy", [("meta-sgd", "lora"), ("reptile", "user-embedding"), ("anil", "head")]
)
def test_save_load_round_trip_gives_identical_adapted_scores(tmp_path, algorithm, policy):
    train, valid = split_tasks(max_len=3)
    model = tiny_model(max_len=3)
    learner = build_learner(model, spec(algorithm, policy))
    meta_train(learner, train, valid, replace(QUICK, max_steps=4, eval_every=2))
    ckpt = Checkpoint(model, "seqrec", ["u"], [f"i{i}" for i in range(N_ITEMS)], {"dataset": "x"})
    text = [f"item {i}" for i in range(N_ITEMS)]
    save_meta_checkpoint(
        tmp_path / "m", ckpt, learner, learner_spec(learner, algorithm, policy), {"k": 5}, text
    )
    loaded = load_meta_checkpoint(tmp_path / "m")
    assert loaded.item_text == text and loaded.info == {"k": 5}
    for key, value in learner.meta_tensors().items():
        assert torch.equal(loaded.learner.meta_tensors()[key], value), key
    items = [3, 4, 0, 1, 2]
    ours = adapt_user(model, learner, items)
    theirs = adapt_user(loaded.checkpoint.model, loaded.learner, items)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    a = recommend(model, ours, items, 5)
    b = recommend(loaded.checkpoint.model, theirs, items, 5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def learner_spec(learner, algorithm: str, policy: str) -> LearnerSpec:
    return LearnerSpec(algorithm, PolicyConfig(policy), learner.config)


def test_corrupt_meta_checkpoints_raise_checkpoint_error(tmp_path):
    model = tiny_model(max_len=3)
    learner = build_learner(model, spec("meta-sgd", "lora"))
    ckpt = Checkpoint(model, "seqrec", ["u"], [f"i{i}" for i in range(N_ITEMS)])
    folder = save_meta_checkpoint(
        tmp_path / "m", ckpt, learner, learner_spec(learner, "meta-sgd", "lora")
    )
    meta = json.loads((folder / "meta.json").read_text())
    tensors = folder / meta["tensors_file"]
    good = tensors.read_bytes()
    tensors.write_bytes(good[:-8] + bytes(b ^ 0xFF for b in good[-8:]))
    with pytest.raises(CheckpointError, match="sha256"):
        load_meta_checkpoint(folder)
    tensors.write_bytes(good)
    (folder / "meta.json").write_text(
        json.dumps({**meta, "learner": {**meta["learner"], "algorithm": "magic"}})
    )
    with pytest.raises(CheckpointError, match="invalid learner settings"):
        load_meta_checkpoint(folder)
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_meta_checkpoint(folder)
    (folder / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="not a meta-trained model"):
        load_meta_checkpoint(folder)
    (folder / "meta.json").write_text(json.dumps(meta))
    load_meta_checkpoint(folder)  # restored: loads again
    save_file({"start.nothing": torch.zeros(2)}, str(tensors))
    digest = hashlib.sha256(tensors.read_bytes()).hexdigest()
    (folder / "meta.json").write_text(json.dumps({**meta, "tensors_sha256": digest}))
    with pytest.raises(CheckpointError, match="does not fit the learner"):
        load_meta_checkpoint(folder)
    save_checkpoint(folder, Checkpoint(tiny_model(max_len=3, seed=1), "seqrec", ["u"], ckpt.items))
    with pytest.raises(CheckpointError, match="other model weights"):
        load_meta_checkpoint(folder)


def test_learner_specs_round_trip_and_check_themselves():
    for algorithm in LEARNERS:
        policy = PolicyConfig("head" if algorithm == "anil" else "lora", targets=("blocks.0.ff.0",))
        s = LearnerSpec(algorithm, policy, None)
        assert LearnerSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError, match="anil adapts the head only"):
        LearnerSpec("anil", PolicyConfig("all"))
    with pytest.raises(ValueError, match="fomaml"):
        LearnerSpec("maml", PolicyConfig("all"), default_config("fomaml"))


def test_adapt_user_and_recommend():
    model = tiny_model(max_len=3).eval()
    before = snapshot(model)
    learner = build_learner(model, spec("maml", "lora", inner_lr=0.5))
    items = [0, 1, 2, 3]
    unchanged = adapt_user(model, learner, items, steps=0)
    top, scores = recommend(model, unchanged, items, k=5)
    plain = model.score(history_batch(items, 3)).detach()[0]
    plain[items] = -torch.inf
    assert np.array_equal(top, torch.topk(plain, 5).indices.numpy())
    assert np.allclose(scores, torch.topk(plain, 5).values.numpy(), atol=1e-6)
    assert not set(top) & set(items)
    assert 0 in recommend(model, None, items, k=N_ITEMS, exclude=())[0]
    adapted = adapt_user(model, learner, items)
    assert set(adapted) == set(learner.policy.touched)
    assert not np.allclose(recommend(model, adapted, items, 5)[1], scores)
    assert all(
        torch.equal(a, b)
        for a, b in zip(adapt_user(model, learner, [7]).values(), unchanged.values(), strict=True)
    )
    bundle = PolicyBundle(make_policy(PolicyConfig("head"), model), sgd(0.5), steps=2)
    tuned = adapt_user(model, bundle, items)
    assert not np.allclose(recommend(model, tuned, items, 5)[1], scores)
    assert same_state(model, before)
    with pytest.raises(ValueError, match="another model"):
        adapt_user(tiny_model(max_len=3), learner, items)
    with pytest.raises(ValueError, match="item indices"):
        adapt_user(model, learner, [0, N_ITEMS])


def test_learner_state_is_a_copy():
    learner = build_learner(tiny_model(), spec("meta-sgd", "user-embedding"))
    state = learner_state(learner)
    assert {k for k in state if k.startswith("meta.")} == {
        "meta.start.user_vector",
        "meta.hyper.alpha.user_vector",
    }
    with torch.no_grad():
        learner.start["user_vector"] += 1
    assert state["meta.start.user_vector"].abs().sum() == 0
