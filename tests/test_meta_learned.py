"""Meta-SGD, learned optimizer settings and Reptile: rates, hypergradients, regulariser, steps."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from metarec.adapt import PolicyConfig, make_policy
from metarec.meta import (
    LearnedOptimConfig,
    MetaSGDConfig,
    Reptile,
    ReptileConfig,
    learned_optim,
    meta_sgd,
)
from test_meta_helpers import one_thread, same_state, snapshot, tasks, tiny_seqrec  # noqa: F401


def _meta_sgd(policy="head", **kw):
    model = tiny_seqrec()
    return meta_sgd(model, make_policy(PolicyConfig(policy), model), MetaSGDConfig(**kw))


def test_meta_sgd_rates_move_and_stay_positive():
    learner = _meta_sgd(alpha_init=0.1, outer_lr=0.05)
    before = {k: a.detach().clone() for k, a in learner.rule.rates().items()}
    for _ in range(3):
        learner.meta_step(tasks(2))
    after = learner.rule.rates()
    assert all(after[k].shape == before[k].shape for k in before)
    assert any(not torch.equal(after[k], before[k]) for k in before)
    assert all((a > 0).all() for a in after.values())


def test_meta_sgd_rate_granularity_and_initial_range():
    per_tensor = _meta_sgd(per="tensor")
    assert all(a.shape == () for a in per_tensor.rule.rates().values())
    ranged = _meta_sgd(alpha_range=(0.01, 0.1))
    rates = torch.cat([a.detach().flatten() for a in ranged.rule.rates().values()])
    assert rates.min() >= 0.01 - 1e-6 and rates.max() <= 0.1 + 1e-6 and rates.std() > 0


def test_regulariser_enters_the_meta_loss():
    batch = tasks(2)
    on = _meta_sgd(alpha_range=(0.05, 0.2), regulariser="magnitude", reg_weight=0.5)
    off = _meta_sgd(alpha_range=(0.05, 0.2), regulariser="magnitude", reg_weight=0.0)
    a, b = on.meta_backward(batch), off.meta_backward(batch)
    rates = torch.cat([v.flatten() for v in on.rule.initial.values()])
    r = float(rates.pow(2).mean())  # R(alpha) by hand
    assert a["query_loss"] == pytest.approx(b["query_loss"], rel=1e-6)
    assert a["loss"] - b["loss"] == pytest.approx(0.5 * r, rel=1e-5)
    assert a["regulariser"] == pytest.approx(r, rel=1e-5)
    # and its gradient: d(0.5 R)/d raw = 0.5 * 2 alpha * sigmoid(raw) / n
    n = rates.numel()
    for k, raw in on.rule.raw.items():
        expected = 0.5 * 2 * F.softplus(raw) * torch.sigmoid(raw) / n
        assert torch.allclose(raw.grad - off.rule.raw[k].grad, expected.detach(), atol=1e-7)


def test_toward_init_regulariser_is_zero_at_the_start_and_grows_away_from_it():
    learner = _meta_sgd(regulariser="toward-init", reg_weight=1.0)
    assert learner.meta_backward(tasks(1))["regulariser"] == 0.0
    name = next(iter(learner.rule.raw))
    with torch.no_grad():
        learner.rule.raw[name] += 0.3
    rates = {k: a.detach() for k, a in learner.rule.rates().items()}
    diffs = torch.cat([(rates[k] - learner.rule.initial[k]).flatten() for k in rates])
    stats = learner.meta_backward(tasks(1))
    assert stats["regulariser"] == pytest.approx(float(diffs.pow(2).mean()), rel=1e-5)
    assert stats["loss"] == pytest.approx(stats["query_loss"] + stats["regulariser"], rel=1e-6)


def test_meta_learn_hyper_changes_only_the_rates():
    learner = _meta_sgd(meta_learn="hyper", outer_lr=0.05)
    before = snapshot(learner.model)
    learner.meta_step(tasks(2))
    assert same_state(learner.model, before)
    assert [g["name"] for g in learner.outer.param_groups] == ["hyper"]
    assert learner.outer.param_groups[0]["weight_decay"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha_init": 0.0}, "alpha_init must be > 0, got 0.0"),
        ({"alpha_range": (0.2, 0.1)}, "got \\(0.2, 0.1\\)"),
        ({"regulariser": "l3"}, "'l3'"),
        ({"reg_weight": -1.0}, "got -1.0"),
        ({"per": "row"}, "'row'"),
    ],
)
def test_meta_sgd_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MetaSGDConfig(**kwargs)


def _loaded(model, params):
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for k, p in clone.named_parameters():
            p.copy_(params[k])
    return clone


def test_learned_lr_and_weight_decay_hypergradients_are_the_closed_form():
    """One SGD step phi = theta - lr (g + wd theta): dF/dlr = -<q, g + wd theta>,
    dF/dwd = -lr <q, theta>, q the query gradient at phi; raw values are softplus^-1."""
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig("head"), model)
    cfg = LearnedOptimConfig(
        lr=0.3, weight_decay=0.05, group_by="one", meta_learn="hyper", inner_steps=1
    )  # one step: the closed form
    learner = learned_optim(model, policy, cfg)
    ((support, query),) = tasks(1)
    learner.meta_backward([(support, query)])
    theta = {k: p.detach() for k, p in model.named_parameters()}
    plain = _loaded(model, theta)
    plain.loss(support).backward()
    step = {k: p.grad + 0.05 * theta[k] for k, p in plain.named_parameters()}
    phi = {k: theta[k] - 0.3 * step[k] if k in policy.touched else theta[k] for k in theta}
    after = _loaded(model, phi)
    after.loss(query).backward()
    q = {k: p.grad for k, p in after.named_parameters()}
    d_lr = -sum(float((q[k] * step[k]).sum()) for k in policy.touched)
    d_wd = -0.3 * sum(float((q[k] * theta[k]).sum()) for k in policy.touched)
    raw_lr, raw_wd = learner.rule.raw_lr["all"], learner.rule.raw_wd["all"]
    slope_lr, slope_wd = (float(torch.sigmoid(r.detach())) for r in (raw_lr, raw_wd))
    assert float(raw_lr.grad) == pytest.approx(d_lr * slope_lr, rel=1e-4)
    assert float(raw_wd.grad) == pytest.approx(d_wd * slope_wd, rel=1e-4)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "adamw"])
def test_learned_settings_move_per_group(optimizer):
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig("head"), model)
    cfg = LearnedOptimConfig(optimizer, lr=0.05, weight_decay=0.01, inner_steps=2, outer_lr=0.05)
    learner = learned_optim(model, policy, cfg)
    modules = {n.rsplit(".", 1)[0] for n in policy.touched}
    assert set(learner.rule.learning_rates()) == modules
    lr0, wd0 = learner.rule.learning_rates(), learner.rule.weight_decays()
    learner.meta_step(tasks(2))
    assert learner.rule.learning_rates() != lr0
    assert learner.rule.weight_decays() != wd0
    assert all(v > 0 for v in learner.rule.learning_rates().values())
    assert set(learner.meta_tensors()) == {f"hyper.{k}" for k in learner.rule.tensors()}


def test_fixed_weight_decay_is_not_learned():
    model = tiny_seqrec()
    cfg = LearnedOptimConfig(weight_decay=0.0, learn_weight_decay=False, group_by="tensor")
    learner = learned_optim(model, make_policy(PolicyConfig("bias"), model), cfg)
    assert all(k.startswith("lr.") for k in learner.rule.tensors())
    with pytest.raises(ValueError, match=r"invalid weight_decay value: 0\.0"):
        LearnedOptimConfig(weight_decay=0.0)
    with pytest.raises(ValueError, match="'rmsprop'"):
        LearnedOptimConfig(optimizer="rmsprop")


@pytest.mark.parametrize("name", ["all", "lora"])
def test_reptile_moves_the_start_toward_the_adapted_parameters_by_the_step_size(name):
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig(name), model)
    learner = Reptile(model, policy, ReptileConfig(inner_lr=0.2, inner_steps=3, step_size=0.25))
    batch = tasks(3)
    before = snapshot(model)
    start = {k: v.detach().clone() for k, v in learner.start.items()}
    adapted = [learner.adapt_task(support) for support, _ in batch]
    learner.meta_step(batch)
    for k, v in learner.start.items():
        mean = sum(a[k] for a in adapted) / len(adapted)
        assert torch.allclose(v, start[k] + 0.25 * (mean - start[k]), atol=1e-6), k
    assert any(not torch.equal(v, start[k]) for k, v in learner.start.items())
    if name == "lora":  # the LoRA start is the learner's; the model stays as it was
        assert same_state(model, before)


def test_hyper_lr_is_the_outer_rate_of_the_learned_rates_only():
    learner = _meta_sgd(outer_lr=0.0, hyper_lr=0.05)
    lrs = {g["name"]: g["lr"] for g in learner.outer.param_groups}
    assert lrs["hyper"] == 0.05 and lrs["model"] == 0.0
    weights = {k: v.detach().clone() for k, v in learner.model.state_dict().items()}
    before = {k: a.detach().clone() for k, a in learner.rule.rates().items()}
    learner.meta_step(tasks(2))
    after = learner.rule.rates()
    assert any(not torch.equal(after[k], before[k]) for k in before)
    assert all(torch.equal(v, learner.model.state_dict()[k]) for k, v in weights.items())
    with pytest.raises(ValueError, match="hyper_lr"):
        MetaSGDConfig(hyper_lr=-1.0)
