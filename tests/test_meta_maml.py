"""MAML, first-order MAML and ANIL: meta-gradients against hand-made references and finite
differences; every policy with every algorithm."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch

from metarec.adapt import POLICIES, PolicyConfig, make_policy
from metarec.meta import (
    LearnedOptimConfig,
    LearnerSpec,
    MAMLConfig,
    MetaSGDConfig,
    Reptile,
    ReptileConfig,
    adapt,
    build_learner,
    functional_loss,
    learned_optim,
    maml,
    meta_sgd,
    sgd,
)
from test_meta_helpers import one_thread, same_state, snapshot, tasks, tiny_seqrec  # noqa: F401


def _plain_grads(model, params, batch):
    """d loss / d params by an ordinary call of a copy holding ``params``."""
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for k, p in clone.named_parameters():
            p.copy_(params[k])
    clone.zero_grad()
    clone.loss(batch).backward()
    return {k: p.grad for k, p in clone.named_parameters()}


@pytest.mark.parametrize("name", ["all", "head"])
def test_first_order_meta_gradient_equals_a_detached_reference(name):
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig(name), model)
    lr, batch = 0.3, tasks(2)
    maml(model, policy, MAMLConfig(inner_lr=lr, inner_steps=1, first_order=True)).meta_backward(
        batch
    )
    theta = {k: p.detach().clone() for k, p in model.named_parameters()}
    reference = {k: torch.zeros_like(p) for k, p in theta.items()}
    for support, query in batch:
        g = _plain_grads(model, theta, support)
        phi = {k: p - lr * g[k] if k in policy.touched else p for k, p in theta.items()}
        gq = _plain_grads(model, phi, query)  # the query gradient at phi, a constant
        for k in reference:
            reference[k] += gq[k] / len(batch)
    for k, p in model.named_parameters():
        assert torch.allclose(p.grad, reference[k], atol=1e-6), k


def _meta_loss(model, policy, lr, steps, task, direction, shift):
    """The true MAML objective at start + shift * direction (no meta-learner involved)."""
    start = {
        k: (p.detach() + shift * direction[k]).requires_grad_() for k, p in model.named_parameters()
    }
    fast = adapt(model, policy, start, task[0], sgd(lr), steps)
    with torch.no_grad():
        return float(functional_loss(model, policy.effective_params(model, fast), task[1]))


def test_second_order_matches_finite_differences_and_first_order_does_not():
    model = tiny_seqrec(dtype=torch.float64, item_repr="id")
    policy = make_policy(PolicyConfig("all"), model)
    lr, steps, task = 0.1, 2, tasks(1)[0]
    cfg = MAMLConfig(inner_lr=lr, inner_steps=steps)
    maml(model, policy, cfg).meta_backward([task])
    second = {k: p.grad for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    maml(model, policy, replace(cfg, first_order=True)).meta_backward([task])
    first = {k: p.grad for k, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = {k: torch.randn(g.shape, generator=gen, dtype=g.dtype) for k, g in second.items()}
        eps = 1e-6  # the objective is strongly curved: central differences need a small step
        fd = (
            _meta_loss(model, policy, lr, steps, task, v, eps)
            - _meta_loss(model, policy, lr, steps, task, v, -eps)
        ) / (2 * eps)
        d2 = float(sum((second[k] * v[k]).sum() for k in v))
        d1 = float(sum((first[k] * v[k]).sum() for k in v))
        assert d2 == pytest.approx(fd, rel=1e-5, abs=1e-7)
        assert abs(d1 - fd) > 1e-3 * max(1.0, abs(fd))  # the Hessian term matters here


def test_anil_adapts_the_head_and_meta_learns_the_body():
    model = tiny_seqrec()
    learner = build_learner(
        model, LearnerSpec("anil", PolicyConfig("head"), MAMLConfig(inner_lr=0.2))
    )
    assert set(learner.policy.touched) == {
        n for n, _ in model.named_parameters() if n.startswith(("blocks.0.", "norm."))
    }
    support, _ = tasks(1)[0]
    assert learner.adapt_task(support).keys() == set(learner.policy.touched)
    learner.meta_backward(tasks(2))
    body = [p for n, p in model.named_parameters() if n not in learner.policy.touched]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in body)


def test_meta_learn_fast_moves_only_the_start_of_the_fast_parameters():
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig("head"), model)
    before = snapshot(model)
    learner = maml(model, policy, MAMLConfig(inner_lr=0.2, meta_learn="fast", outer_lr=0.01))
    learner.meta_step(tasks(2))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= set(policy.touched)


def test_maml_config_is_validated():
    with pytest.raises(ValueError, match="invalid learning rate: -1"):
        MAMLConfig(inner_lr=-1)
    with pytest.raises(ValueError, match="got -2"):
        MAMLConfig(inner_steps=-2)
    with pytest.raises(ValueError, match="'sometimes'"):
        MAMLConfig(meta_learn="sometimes")
    with pytest.raises(ValueError, match="trains nothing"):
        MAMLConfig(meta_learn="hyper")
    learner = maml(tiny_seqrec(), make_policy(PolicyConfig("bias"), tiny_seqrec()))
    with pytest.raises(ValueError, match="at least one task"):
        learner.meta_step([])


ALGORITHMS = {
    "maml": lambda m, p: maml(m, p, MAMLConfig(inner_lr=0.2, outer_lr=0.01)),
    "fomaml": lambda m, p: maml(m, p, MAMLConfig(inner_lr=0.2, first_order=True, outer_lr=0.01)),
    "reptile": lambda m, p: Reptile(m, p, ReptileConfig(inner_lr=0.2, inner_steps=2)),
    "meta-sgd": lambda m, p: meta_sgd(m, p, MetaSGDConfig(alpha_init=0.2, reg_weight=0.1)),
    "learned-sgd": lambda m, p: learned_optim(m, p, LearnedOptimConfig(lr=0.2)),
    "learned-adagrad": lambda m, p: learned_optim(
        m, p, LearnedOptimConfig("adagrad", lr=0.05, inner_steps=2)
    ),
    "learned-adamw": lambda m, p: learned_optim(m, p, LearnedOptimConfig("adamw", lr=0.05)),
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("policy_name", POLICIES)
def test_every_policy_works_with_every_algorithm(policy_name, algorithm):
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig(policy_name), model)
    learner = ALGORITHMS[algorithm](model, policy)
    support, query = tasks(1)[0]
    before = snapshot(model)
    start = {k: v.detach().clone() for k, v in learner.start.items()}
    fast = learner.adapt_task(support)
    assert same_state(model, before)  # adaptation never changes the model
    assert fast.keys() == start.keys()
    assert not torch.equal(learner.score(fast, query), model.score(query))
    stats = learner.meta_step(tasks(2))
    assert math.isfinite(stats["loss"])
    moved = any(not torch.equal(start[k], v) for k, v in learner.start.items())
    assert moved or not same_state(model, before)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "meta-sgd", "learned-optim"])
def test_one_tower_pass_per_meta_step_gives_the_per_task_meta_gradient(algorithm, monkeypatch):
    """With a policy that leaves the item tower alone, a meta step passes the catalogue through
    the tower once for all its tasks; the meta-gradient is the one of a tower pass per loss."""
    model = tiny_seqrec(dtype=torch.float64)  # hybrid: the tower maps text (and ids) to vectors
    policy = make_policy(PolicyConfig("head"), model)
    if algorithm == "meta-sgd":
        learner = meta_sgd(model, policy, MetaSGDConfig(alpha_init=0.2, inner_steps=2))
    elif algorithm == "learned-optim":
        learner = learned_optim(model, policy, LearnedOptimConfig(inner_steps=2))
    else:
        cfg = MAMLConfig(inner_lr=0.3, inner_steps=2, first_order=algorithm == "fomaml")
        learner = maml(model, policy, cfg)
    batch = tasks(3)
    params = [p for g in learner.outer.param_groups for p in g["params"]]
    reference = [torch.zeros_like(p) for p in params]
    for support, query in batch:  # each loss runs the tower itself
        loss = learner.query_loss(support, query) / len(batch)
        for i, g in enumerate(torch.autograd.grad(loss, params, allow_unused=True)):
            if g is not None:
                reference[i] += g
    if (reg := learner.rule.regulariser()) is not None:
        for i, g in enumerate(torch.autograd.grad(reg[0] * reg[1], params, allow_unused=True)):
            if g is not None:
                reference[i] += g
    calls, real = [], type(model.items).all_items
    monkeypatch.setattr(type(model.items), "all_items", lambda self: calls.append(1) or real(self))
    learner.meta_backward(batch)
    assert len(calls) == 1  # not 2 per task
    for p, ref in zip(params, reference, strict=True):
        got = torch.zeros_like(p) if p.grad is None else p.grad
        assert torch.allclose(got, ref, atol=1e-10)
    assert model.items.text_proj.weight.grad.abs().sum() > 0  # the tower is meta-learned
