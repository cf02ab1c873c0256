"""SeqRec, the item tower and the baselines: shapes, causality, padding, losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from metarec.models import (
    BPR,
    PAD,
    BPRConfig,
    PairBatch,
    Popularity,
    SeqBatch,
    SeqRec,
    SeqRecConfig,
)

N_ITEMS, TEXT_DIM = 40, 16


def _text() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return F.normalize(torch.randn(N_ITEMS, TEXT_DIM, generator=g), dim=-1)


def _model(item_repr: str = "hybrid", **kw) -> SeqRec:
    torch.manual_seed(0)
    cfg = SeqRecConfig(
        n_items=N_ITEMS,
        dim=16,
        n_heads=2,
        max_len=8,
        item_repr=item_repr,
        text_dim=0 if item_repr == "id" else TEXT_DIM,
        **kw,
    )
    return SeqRec(cfg, None if item_repr == "id" else _text()).eval()


@pytest.mark.parametrize("item_repr", ["id", "text", "hybrid"])
def test_scores_cover_the_catalogue(item_repr):
    model = _model(item_repr)
    batch = SeqBatch(torch.zeros(3, dtype=torch.long), torch.randint(0, N_ITEMS, (3, 8)))
    assert model.score(batch).shape == (3, N_ITEMS)
    sub = model.score(batch, torch.tensor([1, 5, 7]))
    assert torch.allclose(sub, model.score(batch)[:, [1, 5, 7]], atol=1e-5)


def test_future_items_do_not_change_earlier_positions():
    model = _model()
    items = torch.randint(0, N_ITEMS, (1, 8))
    changed = items.clone()
    changed[0, 5:] = (changed[0, 5:] + 1) % N_ITEMS
    vec = model.items.all_items()
    a, b = model.encode(items, vec), model.encode(changed, vec)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-5)
    assert not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-3)


def test_left_padding_does_not_change_the_user_vector():
    model = _model()
    users = torch.zeros(1, dtype=torch.long)
    wide = model.score(SeqBatch(users, torch.tensor([[PAD, PAD, PAD, PAD, PAD, 3, 9, 4]])))
    narrow = model.score(SeqBatch(users, torch.tensor([[PAD, PAD, 3, 9, 4]])))
    exact = model.score(SeqBatch(users, torch.tensor([[3, 9, 4]])))
    assert torch.allclose(wide, narrow, atol=1e-5)
    assert torch.allclose(wide, exact, atol=1e-5)


def test_empty_history_gives_finite_scores():
    model = _model()
    batch = SeqBatch(torch.zeros(1, dtype=torch.long), torch.full((1, 8), PAD))
    assert torch.isfinite(model.score(batch)).all()


def test_cross_entropy_at_init_is_near_uniform():
    model = _model().train()
    items = torch.randint(0, N_ITEMS, (4, 8))
    targets = torch.randint(0, N_ITEMS, (4, 8))
    loss = model.loss(SeqBatch(torch.zeros(4, dtype=torch.long), items, targets))
    assert abs(loss.item() - math.log(N_ITEMS)) < 1.0


def test_bce_loss_uses_negatives_and_ignores_padding():
    model = _model(loss="bce", n_negatives=3).train()
    items = torch.randint(0, N_ITEMS, (2, 8))
    targets = items.roll(-1, dims=1)
    targets[:, :3] = PAD
    negatives = torch.randint(0, N_ITEMS, (2, 8, 3))
    loss = model.loss(SeqBatch(torch.zeros(2, dtype=torch.long), items, targets, negatives))
    assert loss.item() > 0
    loss.backward()
    assert model.items.id_embedding.weight.grad.abs().sum() > 0


def test_sampled_softmax_over_every_item_is_the_full_softmax():
    full, sampled = _model(), _model(loss="sampled", n_negatives=N_ITEMS)
    items = torch.randint(0, N_ITEMS, (3, 8))
    targets = items.roll(-1, dims=1)
    targets[:, :2] = PAD
    batch = SeqBatch(torch.zeros(3, dtype=torch.long), items, targets)
    every = SeqBatch(batch.users, items, targets, torch.randperm(N_ITEMS))
    full.eval(), sampled.eval()
    # the target is masked among the negatives, so the candidates are exactly the catalogue
    assert torch.allclose(sampled.loss(every), full.loss(batch), atol=1e-5)
    assert torch.allclose(sampled.loss(batch), full.loss(batch))  # no negatives: full softmax


def test_sampled_softmax_sees_only_target_and_negatives():
    model = _model("id", loss="sampled", n_negatives=4).train()
    items = torch.randint(0, N_ITEMS, (2, 8))
    targets = torch.full((2, 8), 5)
    negatives = torch.tensor([1, 2, 3, 5])  # 5 is every row's target: masked, not a negative
    model.loss(SeqBatch(torch.zeros(2, dtype=torch.long), items, targets, negatives)).backward()
    grad = model.items.id_embedding.weight.grad.abs().sum(1)
    untouched = torch.ones(N_ITEMS, dtype=torch.bool)
    untouched[items.flatten()] = False
    untouched[[1, 2, 3, 5]] = False
    assert (grad[[1, 2, 3, 5]] > 0).all() and (grad[untouched] == 0).all()
    h = torch.randn(6, 16)
    iv = model.items.all_items().detach()
    one = torch.tensor([1, 2, 3, 5])
    expected = F.cross_entropy(
        torch.cat([h @ iv[[5]].T, h @ iv[[1, 2, 3]].T], 1), torch.zeros(6).long()
    )
    from metarec.models.seqrec import sampled_softmax_loss

    got = sampled_softmax_loss(h, torch.full((6,), 5), one, iv)
    assert torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="shared negatives"):
        sampled_softmax_loss(h, torch.full((6,), 5), one.expand(6, 4), iv)


def test_text_embeddings_are_a_frozen_buffer():
    model = _model("text")
    names = {n for n, _ in model.named_parameters()}
    assert "items.text_embeddings" not in names
    assert "items.text_embeddings" in model.state_dict()


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="divisible"):
        SeqRecConfig(n_items=5, dim=10, n_heads=3)
    with pytest.raises(ValueError, match="item_repr"):
        SeqRecConfig(n_items=5, item_repr="words", text_dim=4)
    with pytest.raises(ValueError, match="text_dim"):
        SeqRecConfig(n_items=5, item_repr="text")


def test_popularity_scores_are_counts():
    model = Popularity.fit(torch.tensor([1, 1, 2, 1, 0]), n_items=4)
    scores = model.score(SeqBatch(torch.zeros(2, dtype=torch.long), torch.zeros(2, 1).long()))
    assert scores.tolist() == [[1.0, 3.0, 1.0, 0.0]] * 2


def test_bpr_learns_a_preference():
    torch.manual_seed(0)
    model = BPR(BPRConfig(n_users=2, n_items=4, dim=8))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    batch = PairBatch(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([2, 1]))
    for _ in range(100):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    s = model.score(SeqBatch(torch.tensor([0, 1, -1]), torch.zeros(3, 1).long()))
    assert s[0, 1] > s[0, 2] and s[1, 2] > s[1, 1]
    assert torch.all(s[2] == 0)  # unknown user: no preference


def test_id_dropout_acts_only_in_training_and_mlp_adaptor_shapes():
    model = _model("hybrid", id_dropout=0.5, text_hidden=32)
    assert isinstance(model.items.text_proj, torch.nn.Sequential)
    model.eval()
    assert torch.equal(model.items.all_items(), model.items.all_items())
    model.train()
    torch.manual_seed(1)
    a = model.items.all_items()
    text_only = model.items.text_proj(model.items.text_embeddings)
    dropped = torch.isclose(a, text_only, atol=1e-6).all(dim=1)
    assert 0.2 < dropped.float().mean() < 0.8  # about half the items lost their id part


def test_identity_text_init_starts_with_the_text_embeddings():
    from metarec.models.item_tower import ItemTower, ItemTowerConfig

    text = torch.randn(7, 8)
    tower = ItemTower(ItemTowerConfig(7, 8, "text", 8, text_init="identity"), text)
    assert torch.allclose(tower.all_items(), text)


def test_pca_text_init_keeps_text_similarity():
    from metarec.models.item_tower import ItemTower, ItemTowerConfig

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 16, generator=g)
    text = torch.randn(50, 3, generator=g) @ basis + 0.01 * torch.randn(50, 16, generator=g)
    tower = ItemTower(ItemTowerConfig(50, 3, "text", 16, text_init="pca"), text)
    vec = tower.all_items()
    # a 3-d projection of data living in 3 directions keeps every pairwise distance
    assert torch.allclose(torch.cdist(vec, vec), torch.cdist(text, text), atol=0.05)
    assert torch.allclose(vec.mean(0), torch.zeros(3), atol=1e-5)  # centred
    again = ItemTower(ItemTowerConfig(50, 3, "text", 16, text_init="pca"), text)
    assert torch.equal(again.text_proj.weight, tower.text_proj.weight)  # deterministic


def test_text_init_needs_a_linear_adaptor_of_the_right_width():
    from metarec.models.item_tower import ItemTowerConfig

    with pytest.raises(ValueError, match="linear adaptor"):
        ItemTowerConfig(5, 8, "text", 8, text_hidden=4, text_init="pca")
    with pytest.raises(ValueError, match="dim == text_dim"):
        ItemTowerConfig(5, 4, "text", 8, text_init="identity")
    with pytest.raises(ValueError, match="dim <= text_dim"):
        ItemTowerConfig(5, 16, "text", 8, text_init="pca")
    with pytest.raises(ValueError, match="text_init must be one of"):
        ItemTowerConfig(5, 8, "text", 8, text_init="svd")


def test_trimming_padding_columns_leaves_the_loss_unchanged():
    import numpy as np

    from metarec.training.pretrain import trim_padding

    model = _model("id").eval()
    inputs = np.full((3, model.config.max_len), PAD)
    targets = inputs.copy()
    for row, n in enumerate((3, 5, 2)):
        seq = np.random.default_rng(row).integers(0, model.config.n_items, n + 1)
        inputs[row, -n:], targets[row, -n:] = seq[:-1], seq[1:]
    users = torch.zeros(3, dtype=torch.long)
    short_in, short_t = trim_padding(inputs, targets)
    assert short_in.shape == (3, 5)
    full = model.loss(SeqBatch(users, torch.from_numpy(inputs), torch.from_numpy(targets)))
    trimmed = model.loss(SeqBatch(users, torch.from_numpy(short_in), torch.from_numpy(short_t)))
    assert torch.allclose(full, trimmed, atol=1e-6)
