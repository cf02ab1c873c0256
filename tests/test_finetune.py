"""Fine-tuning strategies, moving a model to a new catalogue, adapter-only checkpoints."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from metarec.adapt.adapter_io import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    Adapter,
    adapter_size_bytes,
    load_adapter,
    save_adapter,
)
from metarec.adapt.finetune import (
    STRATEGIES,
    FinetuneConfig,
    count_parameters,
    lora_layers,
    make_optimizer,
    merge_lora,
    prepare,
)
from metarec.adapt.policies import LoraPolicy, PolicyConfig
from metarec.adapt.transfer import to_catalogue
from metarec.data.combine import combine_datasets
from metarec.data.schema import Dataset, Interactions, ItemCatalog
from metarec.data.splits import leave_one_out, user_fraction
from metarec.errors import CheckpointError, ConfigError, DataError
from metarec.meta import functional_score
from metarec.models import SeqBatch, SeqRec, SeqRecConfig
from metarec.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from test_meta_helpers import one_thread  # noqa: F401  (autouse)

N, TEXT = 24, 8


def _model(seed: int = 0, item_repr: str = "hybrid", hidden: int = 12) -> SeqRec:
    torch.manual_seed(seed)
    cfg = SeqRecConfig(
        n_items=N, dim=16, n_layers=2, n_heads=2, max_len=8, dropout=0.0,
        item_repr=item_repr, text_dim=TEXT, text_hidden=hidden,
    )  # fmt: skip
    return SeqRec(cfg, torch.randn(N, TEXT)).eval()


def _batch(seed: int = 0, n: int = N) -> SeqBatch:
    g = torch.Generator().manual_seed(seed)
    return SeqBatch(
        users=torch.zeros(4, dtype=torch.long), items=torch.randint(0, n, (4, 6), generator=g)
    )


def _randomise_lora(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_untrained_strategy_leaves_the_output_unchanged(strategy):
    model = _model()
    ref = model.score(_batch())
    tuned = copy.deepcopy(model)
    names = prepare(tuned, FinetuneConfig.bare(strategy=strategy))
    assert torch.allclose(tuned.score(_batch()), ref, atol=1e-6)
    assert names == [n for n, p in tuned.named_parameters() if p.requires_grad]


def test_strategies_train_what_they_name():
    model = _model()
    picked = {s: prepare(copy.deepcopy(model), FinetuneConfig.bare(strategy=s)) for s in STRATEGIES}
    assert len(picked["full"]) == len(list(model.parameters()))
    assert all("lora_" in n for n in picked["lora"])
    assert {n.split(".lora_")[0] for n in picked["lora"]} == set(
        lora_layers(model, FinetuneConfig.bare())
    )
    assert all(".adapter." in n for n in picked["adapter"]) and len(picked["adapter"]) == 8
    assert all(n.startswith("items.") for n in picked["adaptor"])
    assert all(n.startswith(("blocks.1.", "norm.")) for n in picked["head"])


def test_parameter_counts_exclude_what_a_strategy_adds():
    model = _model()
    total = sum(p.numel() for p in model.parameters())
    tuned = copy.deepcopy(model)
    prepare(tuned, FinetuneConfig.bare(strategy="lora", lora_rank=2))
    n_train, n_total = count_parameters(tuned)
    expected = sum(2 * (m.in_features + m.out_features) for m in _linears(model, tuned))
    assert (n_train, n_total) == (expected, total)


def _linears(model, tuned):
    mods = dict(model.named_modules())
    return [mods[n] for n in lora_layers(model, FinetuneConfig.bare())]


def test_peft_lora_agrees_with_the_functional_lora_policy():
    model = _model()
    tuned = copy.deepcopy(model)
    config = FinetuneConfig.bare(strategy="lora", lora_rank=3, lora_alpha=6.0)
    prepare(tuned, config)
    _randomise_lora(tuned)
    state = tuned.state_dict()
    layers = tuple(lora_layers(model, config))  # the layers peft wrapped
    policy = LoraPolicy(PolicyConfig("lora", rank=3, alpha=6.0, targets=layers), model)
    fast = {
        f"{layer}.lora_{ab}": state[f"{layer}.lora_{ab}.default.weight"]
        for layer in policy.layers
        for ab in "AB"
    }
    ours = functional_score(model, policy.effective_params(model, fast), _batch())
    assert torch.allclose(tuned.score(_batch()), ours, atol=1e-5)
    assert not torch.allclose(model.score(_batch()), ours, atol=1e-3)


def test_merged_lora_is_a_plain_model_with_the_same_output():
    tuned = _model()
    prepare(tuned, FinetuneConfig.bare(strategy="lora"))
    _randomise_lora(tuned)
    merged = merge_lora(tuned)
    assert type(merged) is SeqRec
    assert not any("lora" in k or "base_layer" in k for k in merged.state_dict())
    assert torch.allclose(merged.score(_batch()), tuned.score(_batch()), atol=1e-4)


def test_optimizers_update_only_trainable_tensors():
    for name in ("adamw", "adagrad", "sgd"):
        tuned = _model()
        before = {k: v.clone() for k, v in tuned.state_dict().items()}
        config = FinetuneConfig.bare(strategy="head", optimizer=name)
        names = prepare(tuned, config)
        opt = make_optimizer(tuned, config, lr=0.05, weight_decay=0.01)
        tuned.train()
        tuned.loss(_batch_with_targets()).backward()
        opt.step()
        changed = {k for k, v in tuned.state_dict().items() if not torch.equal(v, before[k])}
        assert changed and changed <= set(names), name


def _batch_with_targets() -> SeqBatch:
    b = _batch()
    return SeqBatch(users=b.users, items=b.items, targets=torch.roll(b.items, -1, dims=1))


def test_bad_finetune_configs_are_refused():
    with pytest.raises(ValueError, match="strategy"):
        FinetuneConfig.bare(strategy="prefix")
    with pytest.raises(ValueError, match="optimizer"):
        FinetuneConfig.bare(optimizer="lamb")
    with pytest.raises(ValueError, match="lora_rank"):
        FinetuneConfig.bare(lora_rank=0)
    with pytest.raises(ConfigError, match=r"match no nn\.Linear"):
        prepare(_model(), FinetuneConfig.bare(lora_targets=("nothing.*",)))


def test_moving_to_a_new_catalogue_keeps_the_encoder_and_reads_text():
    model = _model()
    new_text = torch.randn(10, TEXT)
    moved = to_catalogue(model, new_text, item_ids=False)
    assert moved.config.item_repr == "text" and moved.config.n_items == 10
    hybrid = to_catalogue(model, new_text, item_ids=True)
    assert hybrid.config.item_repr == "hybrid"
    batch = _batch(n=10)
    assert torch.allclose(moved.score(batch), hybrid.score(batch), atol=1e-6)  # zero ids
    text_vectors = model.items.text_proj(new_text)
    assert torch.allclose(moved.items.all_items(), text_vectors, atol=1e-6)
    assert torch.equal(moved.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)
    with pytest.raises(ConfigError, match="text embeddings have shape"):
        to_catalogue(model, torch.randn(10, TEXT + 1))
    with pytest.raises(ConfigError, match="id-only"):
        to_catalogue(SeqRec(SeqRecConfig(n_items=N, dim=16, item_repr="id")), new_text)


def test_a_restarted_adaptor_starts_at_the_new_texts_principal_axes(tmp_path):
    cfg = SeqRecConfig(n_items=N, dim=16, n_heads=2, max_len=8, item_repr="text", text_dim=20)
    model = SeqRec(cfg, torch.randn(N, 20)).eval()
    new_text = torch.randn(12, 20)
    moved = to_catalogue(model, new_text, restart_adaptor=True)
    kept = to_catalogue(model, new_text)
    assert not torch.allclose(moved.items.text_proj.weight, kept.items.text_proj.weight)
    assert torch.allclose(moved.items.all_items().mean(0), torch.zeros(16), atol=1e-5)  # centred
    assert torch.equal(moved.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)
    with pytest.raises(ConfigError, match="linear text adaptor"):
        to_catalogue(_model(hidden=12), torch.randn(12, TEXT), restart_adaptor=True)
    with pytest.raises(ConfigError, match="no wider than"):
        to_catalogue(_model(hidden=0), torch.randn(12, TEXT), restart_adaptor=True)
    # an adapter trained on a restarted adaptor loads back to the same model
    base_path = save_checkpoint(
        tmp_path / "base", Checkpoint(model, "seqrec", ["u"], [f"i{i}" for i in range(N)], {})
    )
    config = FinetuneConfig.bare(strategy="lora", restart_adaptor=True)
    names = prepare(moved, config)
    _randomise_lora(moved)
    batch = _batch(n=12)
    reloaded = _reload(tmp_path, moved, config, names, base_path)
    assert torch.allclose(reloaded.score(batch), moved.eval().score(batch), atol=1e-5)


def _reload(tmp_path, moved: SeqRec, config: FinetuneConfig, names, base_path) -> SeqRec:
    """``moved`` saved as an adapter on the checkpoint at ``base_path`` and loaded back."""
    adapter = Adapter(moved, config, [], ["x"] * moved.config.n_items)
    out = save_adapter(tmp_path / "ad", adapter, names, load_checkpoint(base_path), True)
    return load_adapter(out).model


def test_a_low_rank_id_table_trains_r_times_items_plus_dim_and_merges(tmp_path):
    """lora with item ids and id_rank r: a rank-r LoRA on the (zero-started) id table instead of
    the whole table; untrained it changes nothing, trained it moves the scores, it merges into a
    plain model and reloads from an adapter checkpoint with the same output."""
    base_path, base = _base(tmp_path)
    moved = to_catalogue(base, torch.randn(10, TEXT), item_ids=True)
    ref = moved.eval().score(_batch(n=10))
    config = FinetuneConfig.bare(strategy="lora", item_ids=True, id_rank=3, lora_rank=2)
    names = prepare(moved, config)
    assert "items.id_embedding.weight" not in names
    id_params = [n for n in names if n.startswith("items.id_embedding.")]
    shapes = {n: tuple(p.shape) for n, p in moved.named_parameters() if n in id_params}
    assert sum(np.prod(s) for s in shapes.values()) == 3 * (10 + 16)
    assert torch.allclose(moved.score(_batch(n=10)), ref, atol=1e-6)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            if name in names:
                p.add_(0.3 * torch.randn_like(p))
    tuned = moved.score(_batch(n=10))
    assert not torch.allclose(tuned, ref, atol=1e-3)
    vectors = moved.items.all_items()  # the id deltas reach the item vectors
    assert not torch.allclose(vectors, moved.items.text_proj(moved.items.text_embeddings))
    merged = merge_lora(moved).eval()
    assert torch.allclose(merged.score(_batch(n=10)), tuned, atol=1e-4)
    assert merged.items.id_embedding.weight.abs().sum() > 0
    reloaded = _reload(tmp_path, moved, config, names, base_path)
    assert torch.allclose(reloaded.score(_batch(n=10)), tuned, atol=1e-5)
    with pytest.raises(ValueError, match="id_rank"):
        FinetuneConfig.bare(strategy="full", id_rank=2)
    with pytest.raises(ValueError, match="id_rank"):
        FinetuneConfig.bare(strategy="lora", id_rank=2)  # no item ids
    with pytest.raises(ValueError, match="id_rank"):
        FinetuneConfig.bare(strategy="lora", item_ids=True, id_rank=-1)


def _base(tmp_path):
    model = _model()
    ckpt = Checkpoint(model, "seqrec", ["u"], [f"i{i}" for i in range(N)], {})
    return save_checkpoint(tmp_path / "base", ckpt), model


@pytest.mark.parametrize("strategy", ["lora", "adapter", "adaptor", "head"])
def test_adapter_checkpoint_round_trip(tmp_path, strategy):
    base_path, base = _base(tmp_path)
    moved = to_catalogue(base, torch.randn(10, TEXT))
    config = FinetuneConfig.bare(strategy=strategy)
    names = prepare(moved, config)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            if name in names:
                p.add_(0.1 * torch.randn_like(p))
    items = [f"n{i}" for i in range(10)]
    out = save_adapter(
        tmp_path / "ad",
        Adapter(moved, config, ["v"], items),
        names,
        load_checkpoint(base_path),
        True,
    )
    loaded = load_adapter(out)
    batch = _batch(n=10)
    assert torch.allclose(loaded.model.score(batch), moved.eval().score(batch), atol=1e-6)
    assert loaded.items == items
    n_bytes = sum(moved.state_dict()[n].numel() * 4 for n in names)
    assert n_bytes <= adapter_size_bytes(out) < n_bytes + 4096


def test_adapter_refuses_another_base_and_a_corrupt_file(tmp_path):
    base_path, base = _base(tmp_path)
    config = FinetuneConfig.bare(strategy="head")
    moved = to_catalogue(base, torch.randn(10, TEXT))
    names = prepare(moved, config)
    out = save_adapter(
        tmp_path / "ad",
        Adapter(moved, config, [], ["x"] * 10),
        names,
        load_checkpoint(base_path),
        True,
    )
    other = Checkpoint(_model(seed=1), "seqrec", ["u"], [f"i{i}" for i in range(N)], {})
    other_path = save_checkpoint(tmp_path / "other", other)
    with pytest.raises(CheckpointError, match="trained on base weights"):
        load_adapter(out, other_path)
    (out / ADAPTER_WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_adapter(out)
    doc = json.loads((out / ADAPTER_CONFIG).read_text())
    doc["format"] = "other"
    (out / ADAPTER_CONFIG).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="not a metarec adapter"):
        load_adapter(out)


def _dataset(name: str, n_users: int, n_items: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(n_users), 5)
    inter = Interactions(
        user=user,
        item=rng.integers(0, n_items, len(user)),
        timestamp=np.tile(np.arange(5), n_users),
        rating=np.full(len(user), 4.0, np.float32),
    )
    items = ItemCatalog(
        [str(i) for i in range(n_items)], [f"{name} item {i}" for i in range(n_items)]
    )
    return Dataset(name, inter.sort_by_user_time(), [str(u) for u in range(n_users)], items)


def test_combined_datasets_share_one_catalogue_with_domains():
    a, b = _dataset("films", 4, 6, 0), _dataset("shop", 3, 5, 1)
    c = combine_datasets([a, b], domain_tag=True)
    assert c.n_users == 7 and c.n_items == 11 and len(c.interactions) == 35
    assert c.domains == ("films", "shop")
    assert c.users[4] == "shop:0" and c.items.ids[6] == "shop:0"
    assert c.items.text[6] == "shop: shop item 0"
    shop = c.interactions.domain == 1
    assert set(c.interactions.user[shop]) == {4, 5, 6}
    assert c.interactions.item[shop].min() >= 6
    # every row of b is there, shifted
    got = sorted(zip(c.interactions.user[shop] - 4, c.interactions.item[shop] - 6, strict=True))
    assert got == sorted(zip(b.interactions.user, b.interactions.item, strict=True))
    with pytest.raises(DataError, match="distinct names"):
        combine_datasets([a, a])


def test_user_fraction_keeps_test_rows_and_a_subset_of_training_users():
    ds = _dataset("films", 40, 9, 0)
    split = leave_one_out(ds)
    part = user_fraction(split, 0.25, seed=3)
    kept = np.unique(part.train.user)
    assert len(kept) == 10 and set(np.unique(part.valid.user)) <= set(kept)
    assert len(part.test) == len(split.test)
    assert np.array_equal(user_fraction(split, 0.25, seed=3).train.user, part.train.user)
    with pytest.raises(ConfigError, match="fraction"):
        user_fraction(split, 0.0)


def test_a_cooccurrence_id_start_is_frozen_under_lora_and_travels_with_the_adapter(tmp_path):
    """id_init="cooccurrence": the moved model's id vectors start from the target's own PPMI
    SVD (no trainable parameter added under LoRA: the table stays at it), and the adapter
    checkpoint carries the table, since the base cannot rebuild it."""
    from metarec.data.sequences import user_sequences
    from metarec.training.cooccurrence import cooccurrence_embeddings
    from metarec.training.loop import TrainConfig
    from metarec.training.pretrain import prepare_next_item
    from metarec.workflows.finetune import finetune

    base_path, base = _base(tmp_path)
    target = _dataset("shop", 30, 10, 2)
    data = prepare_next_item(leave_one_out(target), target.n_users, target.n_items, 8)
    train = TrainConfig(max_epochs=1, batch_size=8, progress=False, seed=4)
    runs = {}
    for start in ("zero", "cooccurrence"):
        config = FinetuneConfig.bare(strategy="lora", item_ids=True, id_rank=2, id_init=start)
        moved = to_catalogue(
            base, torch.randn(10, TEXT, generator=torch.Generator().manual_seed(1)), item_ids=True
        )
        runs[start] = (finetune(moved, data, config, train), config)
    zero, cooc = runs["zero"][0], runs["cooccurrence"][0]
    assert cooc.params["trainable"] == zero.params["trainable"]  # the table is not trained
    indptr, items = user_sequences(data.train, data.n_users)
    expected, covered = cooccurrence_embeddings(indptr, items, 10, 16, seed=4)
    assert covered.sum() >= 8
    table = cooc.model.items.id_embedding.base_layer.weight
    assert torch.allclose(table[covered], expected[covered].float(), atol=1e-6)
    assert zero.model.items.id_embedding.base_layer.weight.abs().sum() == 0
    assert cooc.before["NDCG@10"] != zero.before["NDCG@10"]  # the start alone moves the scores
    batch = _batch(n=10)
    reloaded = _reload(tmp_path, cooc.model, runs["cooccurrence"][1], cooc.trainable, base_path)
    assert torch.allclose(reloaded.score(batch), cooc.model.eval().score(batch), atol=1e-5)
    with pytest.raises(ValueError, match="id_init"):
        FinetuneConfig.bare(strategy="lora", id_init="cooccurrence")  # no item ids
    with pytest.raises(ValueError, match="id_init"):
        FinetuneConfig.bare(strategy="full", id_init="svd")
