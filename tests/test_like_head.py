"""The light like head: its prior start, features, fitting, Reptile through the inner loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarec.adapt.policies import PolicyConfig, make_policy
from metarec.like.fit import (
    HeadFitConfig,
    ItemSpace,
    ReptileStartConfig,
    fit_head,
    like_features,
    predict,
    reptile_start,
)
from metarec.like.head import (
    NUMERIC,
    LikeFeatures,
    LikeHead,
    LikeHeadConfig,
    rating_features,
    similar_deviation,
)
from metarec.like.samples import LikeSamples
from metarec.meta.inner import adapt
from metarec.meta.inner_optim import sgd
from metarec.models import SeqRec, SeqRecConfig


def _batch(n=64, item_dim=6, seed=0) -> LikeFeatures:
    """Labels follow feature 0 (the like share) and the item vector's first coordinate."""
    g = torch.Generator().manual_seed(seed)
    numeric = torch.randn(n, len(NUMERIC), generator=g) * 0.3
    item = torch.randn(n, item_dim, generator=g)
    labels = ((numeric[:, 0] + 0.5 * item[:, 0]) > 0).float()
    return LikeFeatures(numeric, item, labels)


def test_untrained_head_is_the_prior():
    b = _batch()
    head = LikeHead(LikeHeadConfig(6))
    expected = 4.0 * b.numeric[:, 0] + 1.0 * b.numeric[:, 1] + 0.4
    torch.testing.assert_close(head.score(b), expected)
    with pytest.raises(ValueError, match="prior"):
        LikeHeadConfig(6, prior=(1.0,))


def test_rating_features_and_similar_deviation_by_hand():
    hr = np.array([[1.0, 5.0, 4.0, 4.0]])
    f = rating_features(hr)
    np.testing.assert_allclose(f[0], [0.75 - 0.5, 3.5 - 3.5, np.std([1, 5, 4, 4]), 13 / 3 - 3.5])
    vectors = np.eye(4)  # item i only resembles itself
    dev = similar_deviation(vectors, np.array([[0, 1, 2, 3]]), hr, np.array([1]), tau=0.01)
    np.testing.assert_allclose(dev, [5.0 - 3.5], atol=1e-6)  # the candidate's own past rating


def test_fit_lowers_the_loss_and_a_strong_pull_keeps_the_start():
    b = _batch()
    head = LikeHead(LikeHeadConfig(6))
    start = head.loss(b).item()
    losses = fit_head(head, b, HeadFitConfig(steps=100, lr=0.05, pull=0.0))
    assert losses[-1] < 0.8 * start
    assert head.quality.weight[0, 0] > 0.1  # found the item coordinate that drives the label
    held = LikeHead(LikeHeadConfig(6))
    before = held.numeric.weight.detach().clone()
    fit_head(held, b, HeadFitConfig(steps=100, lr=0.05, pull=1e4))
    torch.testing.assert_close(held.numeric.weight.detach(), before, atol=1e-3, rtol=0)


def test_head_runs_through_the_functional_inner_loop_and_reptile():
    b = _batch()
    head = LikeHead(LikeHeadConfig(6))
    policy = make_policy(PolicyConfig("all"), head)
    fast = {k: v.detach().clone().requires_grad_() for k, v in policy.init_fast(head).items()}
    same = adapt(head, policy, fast, b, sgd(0.1), steps=0)
    for k in fast:
        torch.testing.assert_close(same[k], fast[k])
    moved = adapt(head, policy, fast, b, sgd(0.5), steps=3)
    params = policy.effective_params(head, moved)
    from metarec.meta.functional import functional_loss

    assert functional_loss(head, params, b).item() < head.loss(b).item()
    meta = reptile_start(head, b, ReptileStartConfig(meta_steps=10, support=16, inner_lr=0.5))
    assert meta is not head and meta.loss(b).item() < head.loss(b).item()
    torch.testing.assert_close(head.score(b), LikeHead(LikeHeadConfig(6)).score(b))  # untouched


def test_like_features_from_a_seqrec():
    torch.manual_seed(0)
    n_items = 12
    cfg = SeqRecConfig(n_items=n_items, dim=8, n_layers=1, n_heads=2, max_len=4, text_dim=5)
    model = SeqRec(cfg, torch.randn(n_items, 5)).eval()
    counts = np.arange(n_items)
    space = ItemSpace.build(model, torch.randn(n_items, 5), counts)
    w = counts / counts.sum()
    assert (w * space.log_pop).sum() == pytest.approx(0.0, abs=1e-9)
    rng = np.random.default_rng(0)
    s = LikeSamples(
        user=np.zeros(5, np.int64),
        history=rng.integers(0, n_items, (5, 4)),
        history_rating=rng.choice([1.0, 4.0], (5, 4)).astype(np.float32),
        item=rng.integers(0, n_items, 5),
        rating=np.full(5, 4.0, np.float32),
        label=np.ones(5, np.float32),
        time=np.zeros(5, np.int64),
    )
    f = like_features(s, space, model)
    assert f.numeric.shape == (5, len(NUMERIC)) and f.item.shape == (5, 8 + 5)
    np.testing.assert_allclose(f.numeric[:, :4].numpy(), rating_features(s.history_rating), 1e-6)
    np.testing.assert_allclose(f.numeric[:, 6].numpy(), space.log_pop[s.item], 1e-6)
    assert np.all(np.abs(f.numeric[:, 7].numpy()) <= 1 + 1e-6)  # a cosine
    assert predict(LikeHead(LikeHeadConfig(13)), f).shape == (5,)
