"""The functional inner loop and the (init, update) inner optimizers, against closed forms and
torch.optim."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metarec.adapt import PolicyConfig, make_policy
from metarec.meta import adagrad, adamw, adapt, functional_loss, sgd
from test_meta_helpers import one_thread, same_state, snapshot, tasks, tiny_seqrec  # noqa: F401

POLICY_NAMES = ("all", "head", "bias", "lora", "user-embedding")


def _plain_grads(model, support):
    """Reference gradients from an ordinary call of the model (no functional_call)."""
    names, params = zip(*model.named_parameters(), strict=True)
    grads = torch.autograd.grad(model.loss(support), params)
    return dict(zip(names, grads, strict=True))


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_zero_inner_steps_return_the_initial_parameters(name):
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig(name), model)
    start = policy.init_fast(model)
    fast = adapt(model, policy, start, tasks(1)[0][0], sgd(0.1), steps=0)
    assert fast.keys() == start.keys()
    assert all(fast[k] is start[k] for k in start)


@settings(max_examples=15, deadline=None)
@given(lr=st.floats(0.0, 2.0))
def test_one_sgd_step_is_the_closed_form(lr):
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig("all"), model)
    support = tasks(1)[0][0]
    fast = adapt(model, policy, policy.init_fast(model), support, sgd(lr), steps=1)
    grads = _plain_grads(model, support)
    for k, p in model.named_parameters():
        assert torch.allclose(fast[k], p - lr * grads[k], atol=1e-6), k


def test_sgd_takes_one_rate_per_tensor_or_per_element():
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig("head"), model)
    start = policy.init_fast(model)
    lrs = {
        k: torch.rand_like(v) if i % 2 else torch.tensor(0.1 * i)
        for i, (k, v) in enumerate(start.items())
    }
    support = tasks(1)[0][0]
    fast = adapt(model, policy, start, support, sgd(lrs), steps=1)
    grads = _plain_grads(model, support)
    for k in start:
        assert torch.allclose(fast[k], start[k] - lrs[k] * grads[k], atol=1e-6), k


def test_two_steps_take_the_gradient_at_the_moved_point():
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig("all"), model)
    support = tasks(1)[0][0]
    one = adapt(model, policy, policy.init_fast(model), support, sgd(0.3), steps=1)
    two = adapt(model, policy, policy.init_fast(model), support, sgd(0.3), steps=2)
    again = adapt(model, policy, one, support, sgd(0.3), steps=1)
    assert all(torch.allclose(two[k], again[k], atol=1e-6) for k in two)
    assert not all(torch.allclose(two[k], one[k]) for k in two)


def test_adaptation_leaves_the_model_alone_and_works_without_grad_mode():
    model = tiny_seqrec()
    before = snapshot(model)
    policy = make_policy(PolicyConfig("all"), model)
    with torch.no_grad():
        fast = adapt(model, policy, policy.init_fast(model), tasks(1)[0][0], adamw(0.1), steps=3)
    assert same_state(model, before)
    assert all(p.grad is None for p in model.parameters())
    assert not all(torch.equal(fast[k], p) for k, p in model.named_parameters())


def test_inner_loop_arguments_are_checked():
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig("bias"), model)
    start = policy.init_fast(model)
    with pytest.raises(ValueError, match="non-negative integer, got -1"):
        adapt(model, policy, start, tasks(1)[0][0], sgd(0.1), steps=-1)
    frozen = {k: v.detach() for k, v in start.items()}
    with pytest.raises(ValueError, match="do not require grad"):
        adapt(model, policy, frozen, tasks(1)[0][0], sgd(0.1), steps=1)


def test_a_tensor_learning_rate_receives_a_gradient():
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig("head"), model)
    support = tasks(1)[0][0]
    lr = torch.tensor(0.2, requires_grad=True)
    fast = adapt(model, policy, policy.init_fast(model), support, sgd(lr), steps=1)
    probe = {k: torch.randn_like(v) for k, v in fast.items()}
    (dlr,) = torch.autograd.grad(sum((fast[k] * probe[k]).sum() for k in fast), lr)
    grads = _plain_grads(model, support)
    expected = -sum((grads[k] * probe[k]).sum() for k in fast)  # d(p - lr g)/d lr = -g
    assert torch.allclose(dlr, expected, atol=1e-5)


# --- inner optimizers against torch.optim ------------------------------------------------------


def _run_both(make_ours, make_torch, steps=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    start = {
        "w": torch.randn(4, 3, generator=g, dtype=torch.float64),
        "b": torch.randn(3, generator=g, dtype=torch.float64),
    }
    grads = [
        {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in start.items()}
        for _ in range(steps)
    ]
    grads[0]["b"][0] = 0.0  # a zero gradient entry
    ours = make_ours()
    params, state = dict(start), ours.init(start)
    for step in grads:
        params, state = ours.update(step, state, params)
    theirs = {k: torch.nn.Parameter(v.clone()) for k, v in start.items()}
    opt = make_torch(list(theirs.values()))
    for step in grads:
        for k, p in theirs.items():
            p.grad = step[k].clone()
        opt.step()
    return params, theirs


@settings(max_examples=20, deadline=None)
@given(
    lr=st.floats(1e-3, 1.0),
    momentum=st.sampled_from([0.0, 0.9]),
    wd=st.sampled_from([0.0, 0.1]),
)
def test_sgd_matches_torch(lr, momentum, wd):
    ours, theirs = _run_both(
        lambda: sgd(lr, momentum=momentum, weight_decay=wd),
        lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum, weight_decay=wd),
    )
    assert all(torch.allclose(ours[k], theirs[k], rtol=1e-10, atol=1e-12) for k in ours)


@settings(max_examples=20, deadline=None)
@given(
    lr=st.floats(1e-3, 1.0),
    lr_decay=st.sampled_from([0.0, 0.5]),
    wd=st.sampled_from([0.0, 0.1]),
    acc=st.sampled_from([0.0, 0.3]),
)
def test_adagrad_matches_torch(lr, lr_decay, wd, acc):
    kwargs = {"lr": lr, "lr_decay": lr_decay, "weight_decay": wd, "initial_accumulator_value": acc}
    ours, theirs = _run_both(
        lambda: adagrad(**kwargs), lambda ps: torch.optim.Adagrad(ps, **kwargs)
    )
    assert all(torch.allclose(ours[k], theirs[k], rtol=1e-10, atol=1e-12) for k in ours)


@settings(max_examples=20, deadline=None)
@given(
    lr=st.floats(1e-3, 1.0),
    b1=st.sampled_from([0.0, 0.9]),
    b2=st.sampled_from([0.9, 0.999]),
    wd=st.sampled_from([0.0, 0.01, 0.5]),
)
def test_adamw_matches_torch(lr, b1, b2, wd):
    kwargs = {"lr": lr, "betas": (b1, b2), "weight_decay": wd}
    ours, theirs = _run_both(lambda: adamw(**kwargs), lambda ps: torch.optim.AdamW(ps, **kwargs))
    assert all(torch.allclose(ours[k], theirs[k], rtol=1e-10, atol=1e-12) for k in ours)


def test_single_steps_match_in_float32_too():
    for ours, theirs in (
        (adagrad(0.1), lambda ps: torch.optim.Adagrad(ps, lr=0.1)),
        (adamw(0.1), lambda ps: torch.optim.AdamW(ps, lr=0.1)),
    ):
        p, g = torch.randn(5), torch.randn(5)
        new, _ = ours.update({"p": g}, ours.init({"p": p}), {"p": p})
        ref = torch.nn.Parameter(p.clone())
        ref.grad = g.clone()
        theirs([ref]).step()
        assert torch.equal(new["p"], ref.detach())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: sgd(-0.1), "invalid learning rate: -0.1"),
        (lambda: sgd(0.1, momentum=-1.0), "invalid momentum value: -1.0"),
        (lambda: sgd({"a": 0.1, "b": -2.0}), "invalid learning rate: -2.0"),
        (lambda: adagrad(torch.tensor([0.1, -0.1])), "invalid learning rate"),
        (lambda: adagrad(0.1, weight_decay=-1.0), "invalid weight_decay value: -1.0"),
        (lambda: adamw(float("nan")), "invalid learning rate: nan"),
        (lambda: adamw(0.1, betas=(0.9, 1.0)), "invalid beta parameter at index 1: 1.0"),
        (lambda: adamw(0.1, eps=-1e-8), "invalid epsilon value"),
    ],
)
def test_inner_optimizer_arguments_are_checked_eagerly(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_per_name_hyperparameters_must_cover_every_fast_tensor():
    opt = sgd({"a": 0.1})
    params = {"a": torch.ones(2), "b": torch.ones(2)}
    with pytest.raises(ValueError, match="no hyperparameter given for fast parameter 'b'"):
        opt.update(params, opt.init(params), params)


@pytest.mark.parametrize("make", [lambda: adagrad(0.1), lambda: adamw(0.1)])
def test_second_order_through_adaptive_optimizers_is_finite_at_zero_gradients(make):
    """LoRA's A has a zero gradient while B = 0; sqrt'(0) would make the meta-gradient NaN."""
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig("lora"), model)
    start = policy.init_fast(model)
    ((support, query),) = tasks(1)
    fast = adapt(model, policy, start, support, make(), steps=2, create_graph=True)
    loss = functional_loss(model, policy.effective_params(model, fast), query)
    grads = torch.autograd.grad(loss, list(start.values()))
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["head", "lora", "user-embedding", "all"])
def test_precomputed_item_vectors_give_the_same_adaptation(name):
    """The inner loop computes the item tower once when no fast parameter is in it; the
    result must equal stepping with the tower recomputed at every step."""
    from metarec.meta.functional import fixed_item_vectors

    model = tiny_seqrec()
    policy = make_policy(PolicyConfig(name), model)
    support = tasks(1)[0][0]
    fast = policy.init_fast(model)
    ours = adapt(model, policy, fast, support, sgd(0.3), steps=3)
    ref = dict(fast)
    for _ in range(3):
        loss = functional_loss(model, policy.effective_params(model, ref), support)
        grads = torch.autograd.grad(loss, list(ref.values()))
        ref = {k: v - 0.3 * g for (k, v), g in zip(ref.items(), grads, strict=True)}
    for k in ref:
        assert torch.allclose(ours[k], ref[k], atol=1e-6), k
    cached = fixed_item_vectors(model, policy.touched)
    assert (cached is None) == (name == "all")


def test_frozen_item_vectors_are_cached_until_the_tower_changes():
    """adapt_user / recommend / evaluation reuse one catalogue pass per model version; an
    in-place update of a tower weight (an optimizer step, load_state_dict) must invalidate it."""
    from metarec.meta.functional import frozen_item_vectors

    model = tiny_seqrec().eval()
    first = frozen_item_vectors(model, ("blocks.0.ff.0.weight",))
    assert first is not None and not first.requires_grad
    assert frozen_item_vectors(model, ()) is first  # same model version: the cached tensor
    assert torch.allclose(first, model.items.all_items())
    with torch.no_grad():
        next(model.items.parameters()).add_(0.5)
    changed = frozen_item_vectors(model, ())
    assert changed is not first
    assert torch.allclose(changed, model.items.all_items())
    assert not torch.allclose(changed, first)
    assert frozen_item_vectors(model, ("items.id_embedding.weight",)) is None
    model.train()
    assert frozen_item_vectors(model, ()) is not frozen_item_vectors(model, ())
