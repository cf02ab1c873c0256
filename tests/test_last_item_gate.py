"""The last-item gate: a learned scalar that adds that much of the last item's vector to the user
vector. Neutral at 0, exact in its effect, trained by every fine-tuning strategy at its own rate,
and carried by checkpoints, adapters and merged LoRA models."""

from __future__ import annotations

import pytest
import torch

from metarec.adapt.finetune import (
    STRATEGIES,
    FinetuneConfig,
    count_parameters,
    make_optimizer,
    merge_lora,
    prepare,
)
from metarec.adapt.transfer import to_catalogue
from metarec.models import SeqBatch, SeqRec, SeqRecConfig
from metarec.models.seqrec import GATE_LR, add_last_item_gate
from metarec.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from metarec.training.loop import TrainConfig
from metarec.training.loop import make_optimizer as train_optimizer
from metarec.workflows.pretrain import ModelSpec
from test_finetune import _reload
from test_meta_helpers import one_thread  # noqa: F401  (autouse)

N, TEXT = 20, 8


def _model(gate: bool = False, seed: int = 0, text: torch.Tensor | None = None, **flags):
    """A one-block text SeqRec over N items (``flags``: more SeqRecConfig switches)."""
    torch.manual_seed(seed)
    cfg = SeqRecConfig(
        n_items=N, dim=16, n_layers=1, n_heads=2, max_len=6, dropout=0.0,
        text_dim=TEXT, last_item_gate=gate, **flags,
    )  # fmt: skip
    return SeqRec(cfg, torch.randn(N, TEXT) if text is None else text).eval()


def _batch(n: int = N, empty_row: bool = False) -> SeqBatch:
    """Three histories; the first padded, the last empty with ``empty_row``."""
    g = torch.Generator().manual_seed(1)
    items = torch.randint(0, n, (3, 5), generator=g)
    items[0, :2] = -1
    if empty_row:
        items[2, :] = -1
    return SeqBatch(users=torch.zeros(3, dtype=torch.long), items=items)


def test_a_gate_at_zero_changes_nothing_and_a_set_gate_adds_the_last_item():
    plain = _model()
    gated = add_last_item_gate(_model())
    assert gated.config.last_item_gate and gated.last_item_gate.item() == 0.0
    batch = _batch()
    assert torch.equal(gated.score(batch), plain.score(batch))
    with torch.no_grad():
        gated.last_item_gate.fill_(2.5)
    vectors = plain.items.all_items()
    expected = (plain.user_vectors(batch, vectors) + 2.5 * vectors[batch.items[:, -1]]) @ vectors.T
    assert torch.allclose(gated.score(batch), expected, atol=1e-5)
    # a model built with the gate holds the same parameter
    assert "last_item_gate" in dict(_model(gate=True).named_parameters())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_trains_the_gate_at_its_own_rate(strategy):
    model = _model()
    n_before = count_parameters(model)[1]
    names = prepare(
        model, FinetuneConfig.bare(strategy=strategy, last_item_gate=True, gate_lr=0.05)
    )
    assert "last_item_gate" in names
    assert count_parameters(model)[1] == n_before + 1
    opt = make_optimizer(model, FinetuneConfig.bare(strategy=strategy, gate_lr=0.05), 1e-3, 0.01)
    (group,) = [g for g in opt.param_groups if any(p is model.last_item_gate for p in g["params"])]
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.0 and len(group["params"]) == 1
    # the other groups keep the strategy's rate
    assert all(g["lr"] == 1e-3 for g in opt.param_groups if g is not group)


def test_training_on_repeated_items_opens_the_gate():
    """When the next item is always the last one, the loss pulls the gate up."""
    model = _model(gate=True).train()
    opt = train_optimizer(model, TrainConfig(lr=1e-3))
    assert any(g["lr"] == GATE_LR for g in opt.param_groups)
    items = torch.arange(N).repeat_interleave(5).view(N, 5)  # each user repeats one item
    batch = SeqBatch(users=torch.zeros(N, dtype=torch.long), items=items, targets=items)
    for _ in range(20):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    assert model.last_item_gate.item() > 0.1  # 20 steps at GATE_LR move it by 0.6 at most


def test_checkpoints_adapters_and_merged_lora_keep_the_gate_and_the_fusion_weight(tmp_path):
    base = _model()
    base_path = save_checkpoint(
        tmp_path / "base", Checkpoint(base, "seqrec", ["u"], [f"i{i}" for i in range(N)], {})
    )
    moved = to_catalogue(base, torch.randn(10, TEXT))
    config = FinetuneConfig.bare(strategy="lora", last_item_gate=True, text_fusion=True)
    names = prepare(moved, config)
    assert "text_fusion_weight" not in names  # fitted after training, not trained
    moved.text_fusion_weight.fill_(4.0)
    with torch.no_grad():
        moved.last_item_gate.fill_(1.7)
        for name, p in moved.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.3)
    batch = _batch(n=10, empty_row=True)
    tuned = moved.eval().score(batch)
    loaded = _reload(tmp_path, moved, config, names, base_path)  # adapter on the base
    assert loaded.last_item_gate.item() == pytest.approx(1.7)
    assert loaded.text_fusion_weight.item() == 4.0
    assert torch.allclose(loaded.score(batch), tuned, atol=1e-5)
    merged = merge_lora(moved)
    assert merged.config.last_item_gate and merged.config.text_fusion
    assert torch.allclose(merged.score(batch), tuned, atol=1e-4)
    ckpt = Checkpoint(merged, "seqrec", ["v"], [f"n{i}" for i in range(10)], {})
    reloaded = load_checkpoint(save_checkpoint(tmp_path / "merged", ckpt)).model
    assert reloaded.text_fusion_weight.item() == 4.0
    assert torch.allclose(reloaded.score(batch), tuned, atol=1e-4)


def test_model_spec_passes_the_gate_and_bad_rates_are_refused():
    assert ModelSpec(last_item_gate=True).seqrec_config(10, 8).last_item_gate
    assert not ModelSpec().seqrec_config(10, 8).last_item_gate
    with pytest.raises(ValueError, match="gate_lr"):
        FinetuneConfig.bare(gate_lr=0.0)
