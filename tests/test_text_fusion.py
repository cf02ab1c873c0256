"""Text fusion: a SeqRec's scores plus w x the raw text cosine of the last history item, with w
picked on validation rows after training. Neutral at 0, exact in its effect, fitted to the best
validation weight and refused for id-only models; checkpoints, adapters and merged LoRA models
carry it (test_last_item_gate's round trip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metarec.adapt.finetune import FinetuneConfig, prepare
from metarec.data.splits import leave_one_out
from metarec.errors import ConfigError
from metarec.evaluation.next_item import EvalSet, evaluate_next_item
from metarec.models import SeqBatch, SeqRec, SeqRecConfig
from metarec.models.seqrec import add_text_fusion
from metarec.training.fusion import FUSION_WEIGHTS, fit_text_fusion
from metarec.training.loop import TrainConfig
from metarec.training.pretrain import prepare_next_item
from metarec.workflows.finetune import finetune
from metarec.workflows.pretrain import ModelSpec, pretrain_seqrec
from test_finetune import _dataset
from test_last_item_gate import TEXT, N
from test_last_item_gate import _batch as gate_batch
from test_last_item_gate import _model as gate_model
from test_meta_helpers import one_thread  # noqa: F401  (autouse)


def _model(fusion: bool = False, text: torch.Tensor | None = None) -> SeqRec:
    return gate_model(text=text, text_fusion=fusion)


def _batch(n: int = N) -> SeqBatch:
    return gate_batch(n, empty_row=True)


def test_a_zero_weight_changes_nothing_and_a_set_weight_adds_the_text_cosine():
    plain = _model()
    fused = add_text_fusion(_model())
    assert fused.config.text_fusion and fused.text_fusion_weight.item() == 0.0
    batch = _batch()
    assert torch.equal(fused.score(batch), plain.score(batch))
    fused.text_fusion_weight.fill_(3.0)
    unit = F.normalize(plain.items.text_embeddings, dim=1)
    cos = unit[batch.items[:, -1].clamp(min=0)] @ unit.T  # (B, N)
    cos[2] = 0.0  # an empty history has no last item
    assert torch.allclose(fused.score(batch), plain.score(batch) + 3.0 * cos, atol=1e-5)
    # candidate scoring, shared (M,) and per row (B, M), agrees with the catalogue scores
    full = fused.score(batch)
    shared = torch.tensor([4, 0, 7])
    assert torch.allclose(fused.score(batch, shared), full[:, shared], atol=1e-5)
    rows = torch.tensor([[1, 2], [3, 4], [5, 6]])
    assert torch.allclose(fused.score(batch, rows), full.gather(1, rows), atol=1e-5)
    # a model built with fusion holds the same buffer, not a parameter
    built = _model(fusion=True)
    assert "text_fusion_weight" in dict(built.named_buffers())
    assert "text_fusion_weight" not in dict(built.named_parameters())


def test_fusion_needs_item_text():
    with pytest.raises(ValueError, match="text_fusion needs item text"):
        SeqRecConfig(n_items=N, item_repr="id", text_fusion=True)
    with pytest.raises(ConfigError, match="text_fusion needs item text"):
        ModelSpec(item_repr="id", text_fusion=True)
    ids = SeqRec(SeqRecConfig(n_items=N, dim=16, n_heads=2, item_repr="id"))
    with pytest.raises(ValueError, match="text_fusion needs item text"):
        add_text_fusion(ids)
    with pytest.raises(ConfigError, match="text_fusion needs item text"):
        prepare(ids, FinetuneConfig.bare(strategy="full", text_fusion=True))


def _twins() -> tuple[torch.Tensor, EvalSet]:
    """Items in pairs (2k, 2k+1) whose texts nearly match, and validation rows whose target is
    the twin of the last history item: the text cosine alone ranks each target first."""
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(N // 2, TEXT, generator=g)
    text = centres.repeat_interleave(2, 0) + 0.01 * torch.randn(N, TEXT, generator=g)
    rng = np.random.default_rng(0)
    histories = np.stack([rng.choice(N, 3, replace=False) for _ in range(12)])
    targets = histories[:, -1] ^ 1  # the twin
    keep = ~np.isin(targets[:, None], histories).any(1)
    histories, targets = histories[keep], targets[keep]
    e = len(targets)
    es = EvalSet(
        users=np.arange(e),
        histories=histories,
        targets=targets,
        seen_indptr=np.arange(0, 3 * e + 1, 3),
        seen_items=histories.reshape(-1),
    )
    return text, es


def test_fitting_picks_the_best_validation_weight_and_leaves_it_in_the_model():
    text, es = _twins()
    model = _model(fusion=True, text=text)
    unfused = evaluate_next_item(model, es, N)["NDCG@10"]
    fit = fit_text_fusion(model, es, N)
    assert set(fit.valid) == set(FUSION_WEIGHTS)
    assert fit.valid[0.0] == pytest.approx(unfused)
    assert fit.valid[fit.weight] == max(fit.valid.values())
    assert fit.weight > 0 and fit.valid[fit.weight] == pytest.approx(1.0)  # twins come first
    assert model.text_fusion_weight.item() == fit.weight
    assert evaluate_next_item(model, es, N)["NDCG@10"] == pytest.approx(fit.valid[fit.weight])
    assert fit.to_dict()["weight"] == fit.weight


def test_ties_keep_the_smallest_weight_and_bad_input_is_refused():
    text, es = _twins()
    empty = EvalSet(  # no history: the text term is 0 at every weight
        users=es.users,
        histories=np.full_like(es.histories, -1),
        targets=es.targets,
        seen_indptr=np.zeros(len(es) + 1, dtype=np.int64),
        seen_items=np.zeros(0, dtype=np.int64),
    )
    model = _model(fusion=True, text=text)
    assert fit_text_fusion(model, empty, N).weight == 0.0
    with pytest.raises(ValueError, match="no text-fusion weight"):
        fit_text_fusion(_model(), es, N)
    with pytest.raises(ValueError, match="fusion weights"):
        fit_text_fusion(model, es, N, weights=(0.0, -1.0))
    with pytest.raises(ValueError, match="fusion weights"):
        fit_text_fusion(model, es, N, weights=())


def test_finetune_and_pretraining_fit_the_weight_on_validation():
    target = _dataset("shop", 30, N, 2)
    data = prepare_next_item(leave_one_out(target), target.n_users, target.n_items, 6)
    train = TrainConfig(max_epochs=1, batch_size=8, progress=False, seed=4)
    model = _model()
    res = finetune(model, data, FinetuneConfig.bare(strategy="head", text_fusion=True), train)
    assert res.fusion is not None and res.model.config.text_fusion
    assert res.model.text_fusion_weight.item() == res.fusion.weight
    assert res.fusion.valid[res.fusion.weight] == max(res.fusion.valid.values())
    # the product default fuses wherever the model reads text; bare() never does
    assert FinetuneConfig().fuses_text(model) and not FinetuneConfig.bare().fuses_text(model)
    assert finetune(_model(), data, FinetuneConfig.bare(strategy="head"), train).fusion is None
    spec = ModelSpec(
        item_repr="text", dim=16, n_layers=1, n_heads=2, max_len=6, text_hidden=0,
        text_fusion=True,
    )  # fmt: skip
    pre = pretrain_seqrec(target, data, spec, train)
    assert pre.fusion is not None and pre.model.text_fusion_weight.item() == pre.fusion.weight
    assert pre.valid["NDCG@10"] == pytest.approx(pre.fusion.valid[pre.fusion.weight])
