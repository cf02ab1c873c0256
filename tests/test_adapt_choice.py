"""The automatic choice end to end: meta-train records it, loading, `metarec adapt` and the
service follow it, and GET /models shows it per version."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from fastapi.testclient import TestClient

from metarec.config import meta_train_settings
from metarec.data.loaders.registry import load_dataset
from metarec.errors import CheckpointError, ConfigError
from metarec.meta import choice as choice_module
from metarec.meta.checkpoint import load_meta_checkpoint
from metarec.meta.choice import FINETUNE, NO_ADAPT
from metarec.meta.inference import PolicyBundle, adapt_user, finetune_bundle, recommend
from metarec.meta.learners import algorithms
from metarec.serving import ServeSettings, create_app
from metarec.serving.registry import adaptation_of, load_served_model
from metarec.workflows.meta_train import meta_train_fold
from test_cli_meta import QUICK, save_base_model, write_genre_csv

ITEMS = [0, 7, 3, 12, 5]


@pytest.fixture(scope="module")
def chosen(tmp_path_factory):
    """fomaml meta-trained on 40 genre users, half the fold's train users held out (8 judge),
    judged at an interval level near 0 so that the best positive mean gain is kept: fomaml,
    whose weights then go to the folder (at 95% nothing clears 8 users' noise here)."""
    tmp = tmp_path_factory.mktemp("choice")
    csv = write_genre_csv(tmp / "genres.csv")
    base = save_base_model(tmp / "base", csv)
    (tmp / "meta.toml").write_text(QUICK + "[choice]\nfinetune_lrs = [1e-3, 1e-2]\n")
    meta = {"algorithm": "fomaml", "k": 3, "fold": 1, "valid_fraction": 0.5}
    (spec,), tasks, train, config = meta_train_settings(
        tmp / "meta.toml", meta, {"policy": "all"}, {}
    )
    run = _judged_near_zero(base, csv, spec, tasks, train, tmp / "meta", config)
    return SimpleNamespace(tmp=tmp, base=base, out=tmp / "meta", run=run)


def _judged_near_zero(base, csv, specs, tasks, train, out, config):
    """meta_train_fold on one thread with intervals of level ~0, so that the best positive
    mean gain is kept (what the tests check the bookkeeping of)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(choice_module, "family_level", lambda m, level=0.95: 1e-6)
            return meta_train_fold(base, load_dataset(csv), specs, tasks, train, out, choice=config)
    finally:
        torch.set_num_threads(threads)


def _with_choice(chosen, name: str, method: str | None):
    """A copy of the meta checkpoint whose recorded choice says ``method`` (None: removed)."""
    folder = chosen.tmp / name
    shutil.copytree(chosen.out, folder, dirs_exist_ok=True)
    doc = json.loads((folder / "meta.json").read_text())
    if method is None:
        doc.pop("choice")
    else:
        (row,) = (c for c in doc["choice"]["candidates"] if c["method"] == method)
        doc["choice"].update(method=method, gain_ndcg10=row["gain_ndcg10"], ci95=row["ci95"])
    (folder / "meta.json").write_text(json.dumps(doc))
    return folder


def test_meta_train_records_the_choice_and_keeps_the_meta_learned_weights(chosen):
    doc = json.loads((chosen.out / "meta.json").read_text())["choice"]
    assert doc["method"] == "fomaml" and doc["n_users"] == 8
    assert [c["method"] for c in doc["candidates"]] == [NO_ADAPT, FINETUNE, "fomaml"]
    gains = {c["method"]: c["gain_ndcg10"] for c in doc["candidates"]}
    assert doc["gain_ndcg10"] == gains["fomaml"] == max(gains.values()) > 0
    assert doc["ci95"][0] > 0 and doc["ci95"][0] == pytest.approx(doc["gain_ndcg10"], abs=1e-4)
    assert doc["candidates"][1]["settings"]["lr"] in (1e-3, 1e-2)
    assert doc["candidates"][1]["settings"]["steps"] == 5
    assert chosen.run.choice.method == "fomaml"
    # measured on the cold users: the paired gain is the table's difference of means
    rows = {
        r["method"]: r["metrics"]
        for r in json.loads((chosen.out / "metrics.json").read_text())["results"]
    }
    measured = chosen.run.measured
    assert measured.method == "fomaml" and measured.gain == pytest.approx(
        rows["fomaml"]["NDCG@10"] - rows["no-adapt"]["NDCG@10"]
    )
    assert f"fomaml gain {measured.gain:+.4f}" in (chosen.out / "report.md").read_text()
    sha = lambda p: json.loads((p / "config.json").read_text())["weights_sha256"]  # noqa: E731
    assert sha(chosen.out) != sha(chosen.base)  # the meta-trained weights, as judged
    mc = load_meta_checkpoint(chosen.out)
    assert mc.adapter() is mc.learner
    assert "fomaml (NDCG@10 gain +" in mc.describe_choice()


def test_loading_follows_a_choice_of_no_adaptation_or_fine_tuning(chosen):
    mc = load_meta_checkpoint(_with_choice(chosen, "no-adapt", NO_ADAPT))
    model = mc.checkpoint.model
    assert mc.adapter() is None and adapt_user(model, mc.adapter(), ITEMS) == {}
    _, base_scores = recommend(model, None, ITEMS)
    learned = adapt_user(model, mc.learner, ITEMS)
    assert not torch.equal(
        torch.as_tensor(recommend(model, learned, ITEMS)[1]), torch.as_tensor(base_scores)
    )  # the learner would have moved it

    mc = load_meta_checkpoint(_with_choice(chosen, "finetune", FINETUNE))
    model, bundle = mc.checkpoint.model, mc.adapter()
    lr = mc.choice.candidate(FINETUNE).settings["lr"]
    assert isinstance(bundle, PolicyBundle) and bundle.steps == 5 and bundle.start is None
    expected = adapt_user(model, finetune_bundle(model, mc.spec.policy, lr, 5), ITEMS)
    got = adapt_user(model, bundle, ITEMS)
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in got)

    mc = load_meta_checkpoint(_with_choice(chosen, "unjudged", None))
    assert mc.choice is None and mc.adapter() is mc.learner
    bad = _with_choice(chosen, "bad", None)
    doc = json.loads((chosen.out / "meta.json").read_text())
    for change, named in [
        ({"method": "sgd"}, "'sgd' is none"),
        ({"gain_ndcg10": 1.0}, "not those"),
    ]:
        (bad / "meta.json").write_text(json.dumps({**doc, "choice": {**doc["choice"], **change}}))
        with pytest.raises(CheckpointError, match=f"meta.json: choice.*{named}"):
            load_meta_checkpoint(bad)


def test_the_service_follows_the_choice_and_lists_it_per_version(chosen):
    no_adapt = _with_choice(chosen, "served-no-adapt", NO_ADAPT)
    unjudged = _with_choice(chosen, "served-unjudged", None)
    body = {"items": [f"i{i}" for i in ITEMS], "k": 10}
    settings = ServeSettings(models=(no_adapt, chosen.base), db=str(chosen.tmp / "a.db"))
    with TestClient(create_app(settings)) as client:
        plain = client.post("/recommendations", json={**body, "adapt": False}).json()
        asked = client.post("/recommendations", json=body).json()
        listed = {m["version"]: m for m in client.get("/models").json()}
    assert asked["adapted"] is False and asked["items"] == plain["items"]  # no gradient steps
    meta_v, base_v = load_served_model(no_adapt).version, load_served_model(chosen.base).version
    shown = listed[meta_v]["adaptation"]
    assert shown["method"] == NO_ADAPT and shown["judged"] is True and shown["n_users"] == 8
    assert shown["gain_ndcg10"] == 0.0 and shown["ci95"] == [0.0, 0.0]
    assert listed[base_v]["adaptation"] == {
        "method": "default",
        "judged": False,
        "gain_ndcg10": None,
        "ci95": None,
        "n_users": None,
    }

    settings = ServeSettings(models=(chosen.out,), db=str(chosen.tmp / "b.db"))
    with TestClient(create_app(settings)) as client:
        plain = client.post("/recommendations", json={**body, "adapt": False}).json()
        asked = client.post("/recommendations", json=body).json()
        (listed,) = client.get("/models").json()
    assert asked["adapted"] is True and asked["items"] != plain["items"]
    doc = json.loads((chosen.out / "meta.json").read_text())["choice"]
    assert listed["adaptation"] == {
        "method": "fomaml",
        "judged": True,
        "gain_ndcg10": doc["gain_ndcg10"],
        "ci95": doc["ci95"],
        "n_users": 8,
    }
    assert adaptation_of(unjudged)["method"] == "fomaml"
    assert adaptation_of(unjudged)["judged"] is False


def test_several_meta_learners_are_trained_and_judged_together(chosen):
    """fomaml and reptile, each from the pretrained weights: both are candidates of one
    choice, both rows are in the table, and the folder keeps the winner (or, when a baseline
    wins, the meta-learner with the larger judged gain, over the base weights)."""
    meta = {"algorithm": "fomaml,reptile", "k": 3, "fold": 1, "valid_fraction": 0.5}
    specs, tasks, train, config = meta_train_settings(
        chosen.tmp / "meta.toml", meta, {"policy": "all"}, {}
    )
    assert [s.algorithm for s in specs] == ["fomaml", "reptile"]
    csv, out = chosen.tmp / "genres.csv", chosen.tmp / "several"
    run = _judged_near_zero(chosen.base, csv, specs, tasks, train, out, config)
    doc = json.loads((out / "meta.json").read_text())
    methods = [c["method"] for c in doc["choice"]["candidates"]]
    assert methods == [NO_ADAPT, FINETUNE, "fomaml", "reptile"]
    assert set(run.trained) == {"fomaml", "reptile"}
    assert all(r.step == 6 for r in run.trained.values())  # each learner its own budget
    rows = {r["method"]: r for r in json.loads((out / "metrics.json").read_text())["results"]}
    assert set(rows) == {NO_ADAPT, FINETUNE, "fomaml", "reptile"}
    assert (
        rows["reptile"]["cost"]["meta_steps"] == 6 and rows["fomaml"]["cost"]["train_seconds"] > 0
    )
    passing = [c for c in doc["choice"]["candidates"][1:] if c["ci95"][0] > 0]
    expected = max(passing, key=lambda c: c["gain_ndcg10"])["method"] if passing else NO_ADAPT
    assert doc["choice"]["method"] == run.choice.method == expected
    gains = {c["method"]: c["gain_ndcg10"] for c in doc["choice"]["candidates"]}
    learners = ("fomaml", "reptile")
    kept = expected if expected in learners else max(learners, key=gains.__getitem__)
    mc = load_meta_checkpoint(out)
    learned = json.loads((out / "config.json").read_text())["meta_trained"]
    assert mc.spec.algorithm == learned["algorithm"] == kept
    assert (
        "fomaml" in (out / "report.md").read_text() and "reptile" in (out / "report.md").read_text()
    )
    with pytest.raises(ConfigError, match="drop --no-choose"):
        meta_train_fold(
            chosen.base,
            load_dataset(csv),
            specs,
            tasks,
            train,
            choice=replace(config, choose=False),
        )


def test_algorithm_auto_is_every_registered_meta_learner_with_the_keys_each_takes(tmp_path):
    path = tmp_path / "meta.toml"
    path.write_text('[meta]\nalgorithm = "auto"\ninner_steps = 2\nalpha_range = [0.01, 0.02]\n')
    specs, *_ = meta_train_settings(path, {}, {"policy": "all"}, {})
    by_name = {s.algorithm: s for s in specs}
    assert tuple(by_name) == algorithms()
    assert all(s.config.inner_steps == 2 for s in specs)  # every config has inner_steps
    assert by_name["meta-sgd"].config.alpha_range == (0.01, 0.02)  # only meta-sgd's has this
    assert by_name["anil"].policy.name == "head" and by_name["maml"].policy.name == "all"
    assert by_name["fomaml"].config.first_order and not by_name["maml"].config.first_order
    # with the head policy anil is maml itself: auto trains it once
    head, *_ = meta_train_settings(None, {"algorithm": "auto"}, {"policy": "head"}, {})
    assert [s.algorithm for s in head] == [a for a in algorithms() if a != "anil"]
    listed, *_ = meta_train_settings(None, {"algorithm": "maml,anil"}, {"policy": "head"}, {})
    assert [s.algorithm for s in listed] == ["maml", "anil"]  # named explicitly: both
    (one,), *_ = meta_train_settings(None, {"algorithm": "reptile"}, {}, {})
    assert one.algorithm == "reptile"
    for bad, named in [("maml,sgd", "'sgd'"), ("maml, maml", "each algorithm once"), ("", "''")]:
        with pytest.raises(ConfigError, match=named):
            meta_train_settings(None, {"algorithm": bad}, {}, {})
    path.write_text('[meta]\nalgorithm = "reptile"\nalpha_range = [0.01, 0.02]\n')
    with pytest.raises(ConfigError, match="'alpha_range' for algorithm reptile"):
        meta_train_settings(path, {}, {}, {})
