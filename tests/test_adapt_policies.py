"""Fast-parameter policies: what each one selects; they act only through functional calls."""

from __future__ import annotations

import pytest
import torch

from metarec.adapt import USER_VECTOR, PolicyConfig, make_policy
from metarec.meta import adapt, functional_loss, functional_score, sgd
from test_meta_helpers import (  # one_thread: autouse fixture
    DIM,
    N_ITEMS,
    one_thread,  # noqa: F401
    pair_batch,
    same_state,
    snapshot,
    tasks,
    tiny_bpr,
    tiny_seqrec,
    user_batch,
)

POLICY_NAMES = ("all", "head", "bias", "lora", "user-embedding")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "everything"}, "'everything'"),
        ({"name": "lora", "rank": 0}, "got 0"),
        ({"name": "lora", "alpha": -1.0}, "got -1.0"),
        ({"name": "all", "targets": ("norm",)}, "takes no targets"),
        ({"name": "head", "targets": ["norm"]}, "['norm']"),
    ],
)
def test_policy_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        PolicyConfig(**kwargs)


def test_seqrec_selections():
    model = tiny_seqrec()
    names = [n for n, _ in model.named_parameters()]
    head = make_policy(PolicyConfig("head"), model).touched
    assert set(head) == {n for n in names if n.startswith(("blocks.0.", "norm."))}
    bias = make_policy(PolicyConfig("bias"), model).touched
    assert "norm.weight" in bias and "blocks.0.norm1.weight" in bias
    assert all(n.endswith("bias") or "norm" in n for n in bias)
    assert "blocks.0.attn.qkv.weight" not in bias
    lora = make_policy(PolicyConfig("lora"), model).touched
    expected = {"attn.qkv", "attn.out", "ff.0", "ff.3"}
    assert set(lora) == {f"blocks.0.{m}.weight" for m in expected}  # not the item tower
    assert make_policy(PolicyConfig("user-embedding"), model).touched == ("norm.bias",)
    assert make_policy(PolicyConfig("all"), model).touched == tuple(names)


def test_targets_are_name_patterns():
    model = tiny_seqrec()
    lora = make_policy(PolicyConfig("lora", targets=("blocks.*.attn",)), model)
    assert set(lora.touched) == {"blocks.0.attn.qkv.weight", "blocks.0.attn.out.weight"}
    head = make_policy(PolicyConfig("head", targets=("norm",)), model)
    assert head.touched == ("norm.weight", "norm.bias")
    with pytest.raises(ValueError, match=r"match no nn\.Linear"):
        make_policy(PolicyConfig("lora", targets=("norm",)), model)


def test_describe_counts_fast_parameters():
    model = tiny_seqrec()
    lora = make_policy(PolicyConfig("lora", rank=2), model)
    # qkv (3D x D), out (D x D), ff.0 (4D x D), ff.3 (D x 4D): r * (out + in) each
    assert lora.describe() == {
        "policy": "lora",
        "tensors": 8,
        "parameters": 2 * (4 * DIM + 2 * DIM + 5 * DIM + 5 * DIM),
    }
    n_all = sum(p.numel() for p in model.parameters())
    assert make_policy(PolicyConfig("all"), model).describe()["parameters"] == n_all
    assert make_policy(PolicyConfig("user-embedding"), model).describe()["parameters"] == DIM
    for name in POLICY_NAMES:
        policy = make_policy(PolicyConfig(name), model)
        fast = policy.init_fast(model)
        assert sum(v.numel() for v in fast.values()) == policy.describe()["parameters"]


@pytest.mark.parametrize("name", ["lora", "user-embedding", "all"])
def test_unadapted_policy_gives_the_base_output(name):
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig(name), model)
    params = policy.effective_params(model, policy.init_fast(model))
    batch = user_batch(3)
    assert torch.equal(functional_score(model, params, batch), model.score(batch))
    assert torch.equal(functional_loss(model, params, batch), model.loss(batch))


def test_lora_starts_with_zero_b_and_random_a():
    model = tiny_seqrec()
    fast = make_policy(PolicyConfig("lora"), model).init_fast(model)
    assert all(v.abs().sum() == 0 for k, v in fast.items() if k.endswith("lora_B"))
    assert all(v.abs().sum() > 0 for k, v in fast.items() if k.endswith("lora_A"))
    assert all(v.requires_grad and v.is_leaf for v in fast.values())


def test_lora_delta_is_scaled_b_times_a():
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig("lora", rank=2, alpha=6.0), model)
    fast = {k: torch.randn_like(v) for k, v in policy.init_fast(model).items()}
    params = policy.effective_params(model, fast)
    name = "blocks.0.attn.out"
    w = dict(model.named_parameters())[f"{name}.weight"]
    delta = 3.0 * fast[f"{name}.lora_B"] @ fast[f"{name}.lora_A"]
    assert torch.allclose(params[f"{name}.weight"], w + delta)


def test_user_vector_shifts_the_user_representation_only():
    model = tiny_seqrec()
    policy = make_policy(PolicyConfig("user-embedding"), model)
    u = torch.randn(DIM)
    params = policy.effective_params(model, {USER_VECTOR: u})
    batch = user_batch(4)
    items = model.items.all_items()  # (N, D), unchanged by the policy
    shift = functional_score(model, params, batch) - model.score(batch)
    assert torch.allclose(shift, (u @ items.T)[None], atol=1e-5)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_only_the_named_parameters_change_in_the_inner_loop(name):
    model = tiny_seqrec()
    before = snapshot(model)
    policy = make_policy(PolicyConfig(name), model)
    fast = adapt(model, policy, policy.init_fast(model), tasks(1)[0][0], sgd(0.5), steps=2)
    params = policy.effective_params(model, fast)
    base = dict(model.named_parameters())
    changed = {k for k in base if not torch.equal(params[k], base[k])}
    assert changed, "the inner loop moved nothing"
    assert changed <= set(policy.touched)
    assert same_state(model, before)


def test_effective_params_check_the_fast_names():
    model = tiny_seqrec()
    for name in POLICY_NAMES:
        policy = make_policy(PolicyConfig(name), model)
        fast = policy.init_fast(model)
        fast.pop(next(iter(fast)))
        with pytest.raises(ValueError, match="missing"):
            policy.effective_params(model, fast)


def test_policies_on_a_model_without_blocks():
    model = tiny_bpr()
    assert make_policy(PolicyConfig("head"), model).touched == ("item_embedding.weight",)
    user = make_policy(PolicyConfig("user-embedding"), model)
    assert user.touched == ("user_embedding.weight",)
    batch = pair_batch(0)
    for policy in (user, make_policy(PolicyConfig("all"), model)):
        fast = adapt(model, policy, policy.init_fast(model), batch, sgd(0.5), steps=1)
        after = functional_loss(model, policy.effective_params(model, fast), batch)
        assert after < model.loss(batch)
    with pytest.raises(ValueError, match="'bias' selects no parameter of BPR"):
        make_policy(PolicyConfig("bias"), model)
    with pytest.raises(ValueError, match=r"match no nn\.Linear layer of BPR"):
        make_policy(PolicyConfig("lora"), model)
    assert model.item_embedding.weight.shape[0] == N_ITEMS
