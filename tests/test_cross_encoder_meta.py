"""The cross-encoder's meta-learned start: Reptile over LoRA A/B and heads, implicit tasks."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from metarec.data.schema import Interactions
from metarec.like.cross_encoder import CrossEncoder, CrossEncoderConfig
from metarec.like.cross_encoder_fit import LoraFitConfig, add_lora, fit_cross_encoder
from metarec.like.cross_encoder_meta import (
    CrossMetaConfig,
    PromptBatch,
    implicit_tasks,
    load_trainable,
    meta_train_cross_encoder,
    prompt_renderer,
    trainable_state,
)
from metarec.like.head import NUMERIC
from test_like_cross_encoder import _tiny_encoder


def _tiny_model(numeric: bool = False) -> CrossEncoder:
    encoder = _tiny_encoder()
    lora = LoraFitConfig(layers=(1,))
    return add_lora(CrossEncoder(CrossEncoderConfig(numeric=numeric), encoder), lora)


def _rule_batch(gen: torch.Generator, rows: int) -> PromptBatch:
    """Random tokens; the label is which token sits in column 1 (2000: like, 3000: dislike)."""
    ids = torch.randint(1000, 2000, (rows, 6), generator=gen)
    labels = (torch.arange(rows) % 2 == 0).float()
    ids[:, 1] = torch.where(labels > 0, 2000, 3000)
    return PromptBatch(ids, torch.ones_like(ids), torch.zeros(rows, len(NUMERIC)), labels)


def _rule_tasks(seed: int, rows: int = 8) -> Iterator[tuple[PromptBatch, PromptBatch]]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield _rule_batch(gen, rows), _rule_batch(gen, rows)


def _split(model: torch.nn.Module) -> tuple[dict, dict]:
    """(frozen, trainable) detached copies of the model's parameters."""
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    return frozen, trainable_state(model)


def test_meta_training_moves_the_start_and_never_the_frozen_encoder():
    model = _tiny_model(numeric=True)
    frozen, start = _split(model)
    assert any("lora_A" in n for n in start) and "text_head.weight" in start
    assert "numeric.weight" in start
    assert frozen and all(n.startswith("encoder.") and "lora_" not in n for n in frozen)
    cfg = CrossMetaConfig(meta_steps=3, support=4, inner_steps=2, inner_lr=1e-2)
    res = meta_train_cross_encoder(model, _rule_tasks(0), cfg)
    assert len(res["query_losses"]) == 3
    frozen_after, start_after = _split(model)
    for name, value in frozen.items():
        assert torch.equal(frozen_after[name], value), name
    moved = [n for n in start if not torch.equal(start_after[n], start[n])]
    assert "text_head.weight" in moved and any("lora_B" in n for n in moved)
    # zero numeric features: the numeric weights get no gradient and keep their prior exactly
    assert torch.equal(start_after["numeric.weight"], start["numeric.weight"])


@pytest.mark.parametrize(
    "cfg",
    [
        CrossMetaConfig(meta_steps=0),
        CrossMetaConfig(meta_steps=2, support=4, inner_steps=2, inner_lr=1e-2, step_size=0.0),
    ],
    ids=["no-meta-steps", "step-size-0"],
)
def test_no_outer_step_leaves_the_start_exactly(cfg):
    model = _tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    meta_train_cross_encoder(model, _rule_tasks(1), cfg)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name


def _query_loss_after_fit(model: CrossEncoder, tasks: list, steps: int) -> float:
    """Mean query loss over ``tasks`` after ``steps`` AdamW steps (lr 1e-2) on each support."""
    losses = []
    for support, query in tasks:
        m = copy.deepcopy(model)
        tokens = {"input_ids": support.input_ids, "attention_mask": support.attention_mask}
        fit = LoraFitConfig(epochs=1, min_steps=steps, batch_size=len(support) // steps, lr=1e-2)
        fit_cross_encoder(m, tokens, support.numeric, support.labels, fit)
        m.eval()
        with torch.no_grad():
            q = query
            losses.append(float(m.loss(q.input_ids, q.attention_mask, q.numeric, q.labels)))
    return float(np.mean(losses))


def test_meta_learned_start_adapts_better_on_a_text_rule_family():
    base = _tiny_model()
    meta = copy.deepcopy(base)
    cfg = CrossMetaConfig(meta_steps=15, support=4, inner_steps=3, inner_lr=1e-2, step_size=1.0)
    meta_train_cross_encoder(meta, _rule_tasks(2), cfg)
    held_out = [next(_rule_tasks(100 + i)) for i in range(4)]
    base_loss = _query_loss_after_fit(base, held_out, steps=2)
    meta_loss = _query_loss_after_fit(meta, held_out, steps=2)
    # measured: 0.695 from the untrained start (two steps hardly learn the rule), 0.0001 from
    # the meta-learned one
    assert base_loss > 0.6 and meta_loss < 0.05, (meta_loss, base_loss)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"meta_steps": -1}, "meta_steps"),
        ({"meta_steps": True}, "meta_steps"),
        ({"tasks_per_step": 0}, "tasks_per_step"),
        ({"support": 0}, "support"),
        ({"inner_steps": 0}, "inner_steps"),
        ({"inner_lr": 0.0}, "inner learning rate"),
        ({"step_size": -0.1}, "step size"),
        ({"inner_optimizer": "adam"}, "inner_optimizer"),
    ],
)
def test_bad_config_values_are_named(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CrossMetaConfig(**kwargs)


def test_meta_training_needs_trainable_tensors_and_states_fit_only_the_same_build():
    from transformers import BertConfig, BertModel

    plain = CrossEncoder(
        CrossEncoderConfig(numeric=False),
        BertModel(
            BertConfig(
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                vocab_size=4000,
            )
        ),
    )
    plain.requires_grad_(False)
    with pytest.raises(ValueError, match="add_lora"):
        meta_train_cross_encoder(plain, _rule_tasks(0), CrossMetaConfig(meta_steps=1))
    model, other = _tiny_model(), _tiny_model()
    with torch.no_grad():
        model.text_head.weight.fill_(0.5)
    load_trainable(other, trainable_state(model))
    assert torch.equal(other.text_head.weight, model.text_head.weight)
    with pytest.raises(ValueError, match="not built the same way"):
        load_trainable(plain, trainable_state(model))


def _log() -> tuple[Interactions, np.ndarray]:
    """4 users x 12 time-ordered interactions over 40 items (rows shuffled); users 0-2 train."""
    rng = np.random.default_rng(0)
    user = np.repeat(np.arange(4), 12)
    item = np.concatenate([rng.choice(40, 12, replace=False) for _ in range(4)])
    time = np.tile(np.arange(12), 4) * 10
    order = rng.permutation(len(user))
    inter = Interactions(
        user[order], item[order], time[order], rating=rng.uniform(0.5, 5, len(user))[order]
    )
    return inter, np.array([0, 1, 2])


def _ids_render(history: np.ndarray, items: np.ndarray) -> PromptBatch:
    """A stand-in renderer whose input_ids are the rows themselves: [history..., candidate]."""
    ids = torch.from_numpy(np.column_stack([history, items]))
    return PromptBatch(
        ids, torch.ones_like(ids), torch.zeros(len(items), 8), torch.zeros(len(items))
    )


def _follows(row: np.ndarray, seq: np.ndarray) -> bool:
    """Whether ``row`` (window items, then the candidate) is a run of consecutive items of seq."""
    w = len(row)
    return any(np.array_equal(seq[t : t + w], row) for t in range(len(seq) - w + 1))


def test_implicit_tasks_are_next_item_vs_unseen_item_of_one_train_user():
    inter, train = _log()
    seqs = {
        u: inter.item[inter.user == u][np.argsort(inter.timestamp[inter.user == u])]
        for u in range(4)
    }
    tasks = implicit_tasks(inter, train, _ids_render, 40, window=3, support=4, seed=0)
    users = set()
    for _ in range(10):
        support, query = next(tasks)
        rows = torch.cat([support.input_ids, query.input_ids]).numpy()
        labels = torch.cat([support.labels, query.labels]).numpy()
        assert len(support) == len(query) == 8 and labels.sum() == 8
        # every positive is a window of one train user followed by the item that came next
        owner = [u for u in range(4) if all(_follows(r, seqs[u]) for r in rows[labels == 1])]
        assert len(owner) == 1 and owner[0] in train
        users.add(owner[0])
        assert not np.isin(rows[labels == 0, -1], seqs[owner[0]]).any()  # never interacted with
        pos = sorted(tuple(r[:3]) for r in rows[labels == 1])
        assert sorted(tuple(r[:3]) for r in rows[labels == 0]) == pos  # each window: both labels
        windows = [{tuple(r[:3]) for r in b.input_ids.numpy()[:4]} for b in (support, query)]
        assert not windows[0] & windows[1]  # support and query are different windows
    assert len(users) > 1


def test_implicit_tasks_read_no_rating():
    inter, train = _log()
    other = Interactions(inter.user, inter.item, inter.timestamp, rating=None)
    a = implicit_tasks(inter, train, _ids_render, 40, window=3, support=4, seed=5)
    b = implicit_tasks(other, train, _ids_render, 40, window=3, support=4, seed=5)
    for _ in range(5):
        for x, y in zip(next(a), next(b), strict=True):
            assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.labels, y.labels)


def test_prompts_of_implicit_tasks_show_titles_without_ratings():
    from transformers import AutoTokenizer

    from metarec.text.encoder import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(None)[1], local_files_only=True)
    titles = ["alpha", "bravo", "charlie", "delta"]
    render = prompt_renderer(CrossEncoderConfig(history_items=2), tokenizer, titles)
    batch = render(np.array([[0, 1, 2]]), np.array([3]))
    text = tokenizer.decode(batch.input_ids[0], skip_special_tokens=True)
    assert text == "recently rated : bravo ; charlie. candidate : delta. will the user like it?"
    assert batch.numeric.abs().sum() == 0 and batch.input_ids.shape == batch.attention_mask.shape
