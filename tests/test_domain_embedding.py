"""Learned domain vectors: neutral at the start, one row per domain, a new row for a new domain,
trained by every fine-tuning strategy and carried by checkpoints and adapters."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from metarec.adapt.adapter_io import load_adapter
from metarec.adapt.finetune import FinetuneConfig, prepare
from metarec.adapt.transfer import to_catalogue
from metarec.data.combine import load_combined
from metarec.data.loaders.registry import load_dataset
from metarec.data.splits import leave_one_out
from metarec.models import SeqRec, SeqRecConfig
from metarec.models.item_tower import ItemTower, ItemTowerConfig
from metarec.models.seqrec import with_new_items
from metarec.training.checkpoint import load_checkpoint
from metarec.training.loop import TrainConfig
from metarec.training.pretrain import prepare_next_item
from metarec.workflows.pretrain import ModelSpec, item_domains, pretrain_seqrec
from test_cli import run_cli
from test_meta_helpers import one_thread  # noqa: F401  (autouse)
from test_transfer import domains  # noqa: F401  (fixture)

N_ITEMS, TEXT_DIM = 12, 8


def _text(n: int = N_ITEMS) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return F.normalize(torch.randn(n, TEXT_DIM, generator=g), dim=-1)


def _tower(n_domains: int) -> ItemTower:
    torch.manual_seed(0)
    cfg = ItemTowerConfig(N_ITEMS, dim=4, text_dim=TEXT_DIM, n_domains=n_domains)
    return ItemTower(cfg, _text())


def test_domain_rows_start_neutral_and_shift_only_their_items():
    plain, tower = _tower(0), _tower(2)
    assert torch.equal(plain.all_items(), tower.all_items())  # zero rows: the same vectors
    tower.set_item_domains(torch.tensor([0] * 5 + [1] * 7))
    row = torch.tensor([1.0, -2.0, 0.5, 3.0])
    with torch.no_grad():
        tower.domain_embedding.weight[1] = row
    shift = tower.all_items() - plain.all_items()
    assert torch.allclose(shift[:5], torch.zeros(5, 4))
    assert torch.allclose(shift[5:], row.expand(7, 4))


def test_item_domains_are_checked():
    tower = _tower(2)
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        tower.set_item_domains(torch.full((N_ITEMS,), 2))
    with pytest.raises(ValueError, match=r"\(12,\) integers"):
        tower.set_item_domains(torch.zeros(N_ITEMS - 1, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        tower.set_item_domains(torch.zeros(N_ITEMS))
    with pytest.raises(ValueError, match="no domain vectors"):
        _tower(0).set_item_domains(torch.zeros(N_ITEMS, dtype=torch.long))
    with pytest.raises(ValueError, match="n_domains must be >= 0"):
        ItemTowerConfig(N_ITEMS, text_dim=TEXT_DIM, n_domains=-1)


def _domain_model() -> SeqRec:
    torch.manual_seed(0)
    cfg = SeqRecConfig(n_items=N_ITEMS, dim=8, n_heads=1, max_len=6, text_dim=TEXT_DIM, n_domains=2)
    model = SeqRec(cfg, _text())
    model.items.set_item_domains(torch.tensor([0] * 9 + [1] * 3))
    with torch.no_grad():
        model.items.domain_embedding.weight.copy_(torch.randn(2, 8))
    return model


def test_a_new_domain_gets_the_mean_row_and_every_new_item():
    model = _domain_model()
    rows = model.items.domain_embedding.weight.detach().clone()
    moved = to_catalogue(model, _text(5), item_ids=True)
    assert moved.config.n_domains == 3 and moved.config.n_items == 5
    assert torch.equal(moved.items.item_domain, torch.full((5,), 2))
    new_rows = moved.items.domain_embedding.weight
    assert torch.equal(new_rows[:2], rows)
    assert torch.allclose(new_rows[2], rows.mean(0))
    assert torch.equal(model.items.domain_embedding.weight, rows)  # the source is untouched


def test_items_added_later_join_the_most_common_domain():
    model = _domain_model().eval()
    grown = with_new_items(model, _text(2))
    assert grown.items.item_domain.tolist() == [0] * 9 + [1] * 3 + [0, 0]
    assert torch.allclose(grown.items.all_items()[:N_ITEMS], model.items.all_items())


@pytest.mark.parametrize("strategy", ["lora", "adapter", "adaptor", "head"])
def test_every_strategy_trains_the_domain_rows(strategy):
    model = _domain_model()
    names = prepare(model, FinetuneConfig.bare(strategy=strategy, lora_rank=2))
    assert "items.domain_embedding.weight" in names
    assert "blocks.0.attn.qkv.weight" not in names  # the rest stays as the strategy says


def test_spec_builds_one_row_per_domain_of_the_data(domains):  # noqa: F811
    source = load_combined(list(domains[:2]))
    spec = ModelSpec(dim=8, n_layers=1, n_heads=1, text_hidden=0, domain_embedding=True)
    assert spec.seqrec_config(10, TEXT_DIM, n_domains=2).n_domains == 2
    assert ModelSpec().seqrec_config(10, TEXT_DIM, n_domains=2).n_domains == 0
    found = item_domains(source)
    a = load_dataset(domains[0]).n_items
    assert found[:a].tolist() == [0] * a and set(found[a:].tolist()) == {1}


@pytest.mark.slow
def test_a_new_domain_row_is_trained_and_stored_by_a_lora_adapter(
    domains,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    source = load_combined(list(domains[:2]))
    spec = ModelSpec(dim=8, n_layers=1, n_heads=1, max_len=10, text_hidden=0, text_init="pca")
    spec = replace(spec, item_repr="text", domain_embedding=True)
    data = prepare_next_item(leave_one_out(source), source.n_users, source.n_items, spec.max_len)
    train = TrainConfig(max_epochs=1, batch_size=32, progress=False)
    base = pretrain_seqrec(source, data, spec, train, out=tmp_path / "base").checkpoint
    rows = load_checkpoint(base).model.items.domain_embedding.weight.detach()
    out = tmp_path / "lora"
    code, _, err = run_cli(
        monkeypatch, capsys, "finetune", "--base", str(base), "--data", domains[2],
        "--strategy", "lora", "--max-epochs", "1", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    trained = json.loads((out / "adapter.json").read_text())["trainable"]
    assert "items.domain_embedding.weight" in trained
    model = load_adapter(out).model
    assert model.config.n_domains == 3
    assert set(model.items.item_domain.tolist()) == {2}
    new_row = model.items.domain_embedding.weight.detach()[2]
    assert not torch.allclose(new_row, rows.mean(0))  # the target's row was trained
    assert torch.isfinite(new_row).all()
