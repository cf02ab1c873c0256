"""Meta-learning tasks: what support and query hold, like/click and domain tasks, the sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metarec.adapt import PolicyConfig, make_policy
from metarec.data.schema import Interactions
from metarec.errors import ConfigError, DataError
from metarec.meta import adapt, functional_loss, pointwise_loss, sgd
from metarec.meta.tasks import (
    TaskSampler,
    domain_tasks,
    history_batch,
    like_labels,
    like_tasks,
    next_item_tasks,
)
from metarec.models import PAD, LikeBatch, SeqBatch, SeqRec, SeqRecConfig
from test_meta_helpers import one_thread  # noqa: F401

N_ITEMS = 30


def random_log(n_users: int = 12, seed: int = 0) -> Interactions:
    """Each user: 4..14 distinct items at distinct random times, rows shuffled."""
    rng = np.random.default_rng(seed)
    user, item, ts = [], [], []
    for u in range(n_users):
        n = int(rng.integers(4, 15))
        user += [u] * n
        item += list(rng.choice(N_ITEMS, n, replace=False))
        ts += list(rng.choice(10_000, n, replace=False))
    order = rng.permutation(len(user))
    return Interactions(*(np.asarray(c, dtype=np.int64)[order] for c in (user, item, ts)))


def in_time(inter: Interactions, u: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(inter.user == u)
    rows = rows[np.argsort(inter.timestamp[rows])]
    return inter.item[rows], inter.timestamp[rows]


def tiny_model(max_len: int = 4) -> SeqRec:
    torch.manual_seed(0)
    cfg = SeqRecConfig(
        n_items=N_ITEMS, dim=8, n_layers=1, n_heads=2, max_len=max_len, dropout=0.0, item_repr="id"
    )
    return SeqRec(cfg)


@pytest.mark.parametrize("k, n_query, max_len", [(3, 20, 4), (5, 4, 3), (2, 1, 50)])
def test_support_precedes_query_and_they_are_disjoint(k, n_query, max_len):
    inter = random_log()
    tasks = next_item_tasks(inter, k, n_query, max_len)
    assert len(tasks) == 12  # every user has at least 4 > k items
    for task in tasks:
        items, times = in_time(inter, task.key)
        s, q = task.support_items, task.query_items
        assert np.array_equal(s, items[:k])
        assert np.array_equal(q, items[k : k + n_query])
        assert times[k - 1] < times[k]  # the last support item precedes the first query item
        assert not set(s) & set(q)
        # support batch: exactly the K - 1 transitions inside the support sequence
        sb = task.support
        pairs = sorted(
            (int(a), int(b))
            for a, b in zip(sb.items.flatten(), sb.targets.flatten(), strict=True)
            if b != PAD
        )
        assert pairs == sorted(zip(s[:-1].tolist(), s[1:].tolist(), strict=True))
        assert not set(sb.items.flatten().tolist()) & set(q.tolist())
        # query batch: row j predicts q[j] from the last max_len items before it
        seq = np.concatenate([s, q])
        for j, (row, target) in enumerate(zip(task.query.items, task.query.targets, strict=True)):
            assert row[row != PAD].tolist() == seq[: k + j][-max_len:].tolist()
            assert target[-1] == q[j] and (target[:-1] == PAD).all()
        ranking = task.ranking
        assert ranking.history.items[0][ranking.history.items[0] != PAD].tolist() == list(
            s[-max_len:]
        )
        assert set(ranking.positives[0]) == set(q) and set(ranking.exclude[0]) == set(s)


def test_long_support_is_cut_into_windows_covering_each_transition_once():
    s = np.arange(9)
    inter = Interactions(np.zeros(10, dtype=np.int64), np.arange(10), np.arange(10))
    (task,) = next_item_tasks(inter, k=9, n_query=1, max_len=3)
    sb = task.support
    targets = sb.targets[sb.targets != PAD].tolist()
    assert sorted(targets) == s[1:].tolist() and sb.items.shape[1] == 3


def test_trimmed_histories_score_as_padded_ones():
    model = tiny_model(max_len=6).eval()
    short = history_batch([3, 7, 1], max_len=6)
    assert short.items.shape == (1, 3)
    padded = SeqBatch(short.users, torch.tensor([[PAD, PAD, PAD, 3, 7, 1]]))
    assert torch.allclose(model.score(short), model.score(padded), atol=1e-5)


def test_k_below_two_is_a_config_error():
    with pytest.raises(ConfigError, match="k must be an integer >= 2"):
        next_item_tasks(random_log(), k=1)


def test_like_tasks_label_ratings_above_three_and_take_label_columns_as_they_are():
    assert like_labels(np.array([1.0, 3.0, 3.5, 5.0])).tolist() == [0, 0, 1, 1]
    assert like_labels(np.array([0.0, 1.0, 1.0])).tolist() == [0, 1, 1]
    u = np.zeros(6, dtype=np.int64)
    inter = Interactions(u, np.arange(6), np.arange(6), np.array([5, 1, 4, 2, 3, 5.0]))
    (task,) = like_tasks(inter, k=3, n_query=10, max_len=4)
    assert isinstance(task.support, LikeBatch) and task.ranking is None
    assert task.support.candidates.tolist() == [1, 2]  # the first item has no history
    assert task.support.labels.tolist() == [0, 1]
    assert task.query.candidates.tolist() == [3, 4, 5]
    assert task.query.labels.tolist() == [0, 0, 1]
    assert task.query.items[0].tolist() == [PAD, 0, 1, 2]
    with pytest.raises(DataError, match="rating"):
        like_tasks(Interactions(u, np.arange(6), np.arange(6)), k=3)


def test_pointwise_loss_is_bce_on_the_dot_product_and_adapts():
    model = tiny_model().eval()
    batch = LikeBatch(
        torch.zeros(3, dtype=torch.long),
        torch.tensor([[PAD, 1, 2], [1, 2, 3], [2, 3, 4]]),
        torch.tensor([5, 6, 7]),
        torch.tensor([1.0, 0.0, 1.0]),
    )
    params = dict(model.named_parameters())
    items = model.items.all_items()
    logits = (model.user_vectors(batch.history(), items) * items[batch.candidates]).sum(-1)
    expected = F.binary_cross_entropy_with_logits(logits, batch.labels)
    assert torch.allclose(pointwise_loss(model, params, batch), expected)
    assert torch.equal(functional_loss(model, params, batch), pointwise_loss(model, params, batch))
    policy = make_policy(PolicyConfig("all"), model)
    fast = adapt(model, policy, policy.init_fast(model), batch, sgd(0.1), 3)
    assert functional_loss(model, fast, batch).item() < expected.item()


def test_domain_tasks_sample_one_domains_users():
    inter = random_log(n_users=16, seed=1)
    domain = (inter.item >= 15).astype(np.int64)  # items 0..14 are domain 0, 15..29 domain 1
    inter = Interactions(inter.user, inter.item, inter.timestamp, domain=domain)
    tasks = domain_tasks(inter, max_len=4, users_per_task=6, tasks_per_domain=3, seed=0)
    assert sorted({t.key for t in tasks}) == [0, 1] and len(tasks) == 6
    for task in tasks:
        own = set(np.flatnonzero(np.bincount(inter.item[domain == task.key], minlength=N_ITEMS)))
        support_users = set(task.support.users.tolist())
        query_users = set(task.query.users.tolist())
        assert not support_users & query_users and len(support_users | query_users) == 6
        for batch in (task.support, task.query):
            assert set(batch.items[batch.items != PAD].tolist()) <= own
        for u, pos in zip(task.ranking.history.users.tolist(), task.ranking.positives, strict=True):
            items, _ = in_time(inter.take(domain == task.key), u)
            assert pos.tolist() == [items[-1]]
    with pytest.raises(DataError, match="domain"):
        domain_tasks(random_log())
    assert domain_tasks(inter, seed=3)[0].support.items.tolist() != tasks[0].support.items.tolist()


def test_sampler_is_deterministic_and_covers_each_epoch_without_repeats():
    tasks = list(range(10))
    a, b = TaskSampler(tasks, 3, seed=5), TaskSampler(tasks, 3, seed=5)
    first = [next(it) for it in [iter(a)] for _ in range(9)]
    assert first == [next(it) for it in [iter(b)] for _ in range(9)]
    assert TaskSampler(tasks, 3, seed=6).epoch(0) != first[:3] == a.epoch(0)
    assert len(a) == 3
    for e in range(4):
        batches = a.epoch(e)
        flat = [t for batch in batches for t in batch]
        assert all(len(batch) == 3 for batch in batches) and len(set(flat)) == 9
    assert a.epoch(0) != a.epoch(1)
    assert TaskSampler([1, 2], 8).epoch(0) in ([[1, 2]], [[2, 1]])
    with pytest.raises(ConfigError, match="no tasks"):
        TaskSampler([], 4)


def test_feedback_support_adds_the_like_loss_of_the_support_items():
    from metarec.meta.inference import PolicyBundle, adapt_user
    from metarec.meta.tasks import feedback_support, support_batch
    from metarec.models import FeedbackBatch

    u = np.zeros(7, dtype=np.int64)
    ratings = np.array([5, 1, 4, 2, 3, 5, 4.0])
    inter = Interactions(u, np.arange(7), np.arange(7), ratings)
    (task,) = next_item_tasks(inter, k=4, n_query=10, max_len=4, like_weight=0.5)
    support = task.support
    assert isinstance(support, FeedbackBatch) and support.like_weight == 0.5
    assert support.like.candidates.tolist() == [1, 2, 3]  # the first item has no history
    assert support.like.labels.tolist() == [0, 1, 0]  # ratings 1, 4, 2 against > 3
    plain = support_batch(np.arange(4), 4, 0)
    assert torch.equal(support.next_item.items, plain.items)
    assert torch.equal(support.next_item.targets, plain.targets)
    (bare,) = next_item_tasks(inter, k=4, n_query=10, max_len=4)
    assert isinstance(bare.support, SeqBatch) and torch.equal(bare.query.items, task.query.items)
    model = tiny_model().eval()
    params = dict(model.named_parameters())
    expected = functional_loss(model, params, plain) + 0.5 * pointwise_loss(
        model, params, support.like
    )
    assert torch.allclose(functional_loss(model, params, support), expected)
    # adapting with the labels follows that loss; without them, the next-item loss alone
    policy = make_policy(PolicyConfig("all"), model)
    bundle = PolicyBundle(policy, sgd(0.1), 2)
    items, labels = [0, 1, 2, 3], [1.0, 0.0, 1.0, 0.0]
    with_fb = adapt_user(model, bundle, items, labels=labels, like_weight=0.5)
    by_hand = adapt(
        model, policy, policy.init_fast(model), feedback_support(items, labels, 4, 0.5), sgd(0.1), 2
    )
    assert all(torch.allclose(with_fb[n], by_hand[n].detach(), atol=1e-6) for n in with_fb)
    without = adapt_user(model, bundle, items)
    assert any(not torch.allclose(with_fb[n], without[n]) for n in with_fb)
    assert all(
        torch.equal(adapt_user(model, bundle, items, labels=labels, like_weight=0.0)[n], without[n])
        for n in without
    )
    with pytest.raises(DataError, match="like weight needs ratings"):
        next_item_tasks(Interactions(u, np.arange(7), np.arange(7)), k=4, like_weight=0.5)
    with pytest.raises(ValueError, match="0 \\(disliked\\) or 1"):
        feedback_support([0, 1], [1.0, 4.0], 4, 1.0)
    with pytest.raises(ValueError, match="3 labels for 2"):
        feedback_support([0, 1], [1.0, 0.0, 1.0], 4, 1.0)
