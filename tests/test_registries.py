"""Registries: a new meta-learner, fine-tuning strategy or fast-parameter policy is one class (or
function) and one registry line, and then works everywhere the built-in ones do."""

from __future__ import annotations

import copy

import pytest
import torch

from metarec.adapt import finetune as ft
from metarec.adapt import policies
from metarec.adapt.policies import PolicyConfig, SubsetPolicy, make_policy
from metarec.meta import learners
from metarec.meta.checkpoint import load_meta_checkpoint, save_meta_checkpoint
from metarec.meta.core import INNER_LR, INNER_STEPS, FixedRule, MetaLearner
from metarec.meta.inner_optim import sgd
from metarec.meta.learners import LearnerEntry, LearnerSpec, build_learner
from metarec.meta.maml import MAMLConfig
from metarec.meta.train import meta_train
from metarec.training.checkpoint import Checkpoint
from test_meta_helpers import one_thread  # noqa: F401  (autouse)
from test_meta_train import N_ITEMS, QUICK, split_tasks, tiny_model


class HalfStepMAML(MetaLearner):
    """A toy meta-learner: second-order MAML whose inner loop steps at half the rate."""

    def __init__(self, model, policy, config, outer_opt=None):
        rule = FixedRule(sgd(config.inner_lr / 2))
        super().__init__(model, policy, config, rule, outer_opt=outer_opt)


def _norms_only(model, config) -> None:
    """A toy fine-tuning strategy: only the LayerNorms train."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("norm.") or ".ln" in name)


class NormPolicy(SubsetPolicy):
    """A toy fast-parameter policy: the final LayerNorm adapts."""

    def __init__(self, config: PolicyConfig, model):
        super().__init__(config.name, model, ("norm.weight", "norm.bias"))


@pytest.fixture
def toy_learner(monkeypatch):
    monkeypatch.setitem(learners.LEARNERS, "half-maml", LearnerEntry(MAMLConfig, HalfStepMAML))


def test_a_registered_meta_learner_trains_saves_and_loads(toy_learner, tmp_path):
    spec = LearnerSpec("half-maml", PolicyConfig("head"))
    assert (spec.config.inner_lr, spec.config.inner_steps) == (INNER_LR, INNER_STEPS)
    model = tiny_model()
    learner = build_learner(model, spec)
    assert isinstance(learner, HalfStepMAML)
    assert learner.rule.inner_opt is not None
    train, valid = split_tasks()
    res = meta_train(learner, train, valid, QUICK)
    assert res.step > 0 and res.best_metric > 0
    ckpt = Checkpoint(model, "seqrec", ["u"], [f"i{i}" for i in range(N_ITEMS)])
    folder = save_meta_checkpoint(tmp_path / "m", ckpt, learner, spec)
    loaded = load_meta_checkpoint(folder)
    assert loaded.spec == spec and isinstance(loaded.learner, HalfStepMAML)
    task = valid[0]
    a = learner.score(learner.adapt_task(task.support), task.query)
    b = loaded.learner.score(loaded.learner.adapt_task(task.support), task.query)
    assert torch.allclose(a, b)


def test_a_registered_meta_learner_is_read_from_toml(toy_learner, tmp_path):
    from metarec.config import meta_train_settings

    path = tmp_path / "meta.toml"
    path.write_text('[meta]\nalgorithm = "half-maml"\ninner_lr = 0.2\n')
    (spec,), *_ = meta_train_settings(path, {}, {}, {})
    assert spec.algorithm == "half-maml" and spec.config.inner_lr == 0.2
    assert spec.config.inner_steps == INNER_STEPS  # the rest: the product's defaults


def test_an_unregistered_meta_learner_is_refused_by_name():
    with pytest.raises(ValueError, match="half-maml"):
        LearnerSpec("half-maml")


def test_a_registered_strategy_trains_only_what_it_names(monkeypatch):
    monkeypatch.setitem(ft.STRATEGIES, "norms", _norms_only)
    model = tiny_model()
    names = ft.prepare(copy.deepcopy(model), ft.FinetuneConfig.bare("norms"))
    assert names == ["norm.weight", "norm.bias"]
    # with the product's defaults the last-item gate trains beside it
    names = ft.prepare(copy.deepcopy(model), ft.FinetuneConfig(strategy="norms", text_fusion=False))
    assert names == ["last_item_gate", "norm.weight", "norm.bias"]
    assert ft.finetune_train("norms").lr == ft.FINETUNE_TRAIN.lr  # no rate of its own yet
    with pytest.raises(ValueError, match="strategy must be one of"):
        ft.FinetuneConfig(strategy="bitfit")


def test_a_registered_policy_adapts_only_its_parameters(monkeypatch):
    monkeypatch.setitem(policies.POLICIES, "norm", NormPolicy)
    model = tiny_model()
    policy = make_policy(PolicyConfig("norm"), model)
    assert policy.touched == ("norm.weight", "norm.bias")
    learner = build_learner(model, LearnerSpec("maml", PolicyConfig("norm")))
    fast = learner.adapt_task(split_tasks()[0][0].support)
    assert set(fast) == {"norm.weight", "norm.bias"}
    assert not torch.equal(fast["norm.bias"], model.norm.bias)


def test_models_declare_their_adaptation_surfaces():
    model = tiny_model()
    declared = model.adaptation_surfaces()
    assert declared.head == ("blocks.0", "norm") and declared.user_vector == ("norm.bias",)
    assert declared.id_table == "items.id_embedding"
    head = make_policy(PolicyConfig("head"), model).touched
    assert head and all(n.startswith(("blocks.0.", "norm.")) for n in head)
    lora = make_policy(PolicyConfig("lora"), model)
    assert set(lora.layers) == {"blocks.0.attn.qkv", "blocks.0.attn.out", "blocks.0.ff.0",
                                "blocks.0.ff.3"}  # fmt: skip
