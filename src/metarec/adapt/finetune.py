"""Fine-tuning strategies, side by side: which tensors train, and with which optimizer.

- ``full``: every parameter.
- ``lora``: rank-r LoRA through ``peft`` (``inject_adapter_in_model``) on the attention and
  feed-forward projections and the item-text adaptor; the base weights are frozen.
  ``merge_lora`` folds the deltas into a plain SeqRec for serving.
- ``adapter``: bottleneck adapters after every transformer block (``adapt.adapters``).
- ``adaptor``: the item-text adaptor only (the projection from text embeddings to item vectors),
  plus the item id embeddings when the model has them.
- ``head``: the last transformer block and the final LayerNorm (the ``head`` policy's tensors).

A model with domain vectors (``ModelSpec.domain_embedding``) trains its domain table under every
strategy: one row per domain, and its items read only their own domain's row.

``prepare`` applies a strategy to a model in place and returns the names of the tensors that
train; ``make_optimizer`` builds AdamW, Adagrad or SGD over them. LAMB is left out: no maintained
package provides it for torch 2.13. Strategies are found by name in ``STRATEGIES`` (name ->
a function that sets which tensors train): a new strategy is one function and one line there.

The defaults are the settings transfer-scientific validated (bench/README.md, 2026-12-03: LoRA
at 97% of full fine-tuning on a new domain): every strategy trains a last-item gate and fuses
the last item's text similarity (when the model reads text), restarts a moved text adaptor at
the target text's principal axes, and LoRA gives the target's items id vectors started from
their co-occurrence, frozen there under a rank-2 LoRA of the id table. ``FINETUNE_TRAIN`` and
``STRATEGY_LR`` are the training settings of that run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from metarec.adapt.adapters import attach_adapters
from metarec.adapt.policies import (
    LORA_ALPHA,
    LORA_RANK,
    LoraPolicy,
    PolicyConfig,
    make_policy,
    surfaces,
)
from metarec.errors import ConfigError
from metarec.models.seqrec import GATE_LR, SeqRec, add_last_item_gate, add_text_fusion
from metarec.models.surfaces import FUSION_WEIGHT, LAST_ITEM_GATE
from metarec.training.loop import TrainConfig, param_groups

ID_STARTS = ("zero", "cooccurrence")
OPTIMIZERS = ("adamw", "adagrad", "sgd")
# LoRA with item ids: the rank of the LoRA on the id table (transfer-scientific's setting)
ID_RANK = 2
# the fine-tuning loop transfer-scientific ran (AdamW, batches of 64, early stopping on
# validation NDCG@10), at each strategy's own rate
FINETUNE_TRAIN = TrainConfig(batch_size=64, lr=1e-3, patience=6, max_epochs=60, time_budget_s=600)
STRATEGY_LR = {"full": 1e-3, "lora": 3e-3, "adapter": 3e-3, "adaptor": 2e-3, "head": 2e-3}


def finetune_train(strategy: str, **overrides) -> TrainConfig:
    """The validated training settings for ``strategy`` (``FINETUNE_TRAIN`` at its rate)."""
    return replace(FINETUNE_TRAIN, lr=STRATEGY_LR.get(strategy, FINETUNE_TRAIN.lr), **overrides)


@dataclass(frozen=True)
class FinetuneConfig:
    """A strategy plus its options. ``item_ids``: whether the target catalogue gets trainable id
    embeddings (None: only for ``full``, since they are as many parameters as items)."""

    strategy: str = "lora"
    optimizer: str = "adamw"
    lora_rank: int = LORA_RANK
    lora_alpha: float = LORA_ALPHA
    # fnmatch patterns over module names (only nn.Linear is wrapped); () means the model's
    # declared LoRA surfaces (encoder projections and the item-text adaptor)
    lora_targets: tuple[str, ...] = ()
    adapter_hidden: int = 16
    # None: the strategy's default (full: the whole table trains; lora: a low-rank LoRA of it)
    item_ids: bool | None = None
    restart_adaptor: bool = True  # new catalogue: start the adaptor at its text's principal axes
    # lora with item ids: 0 trains the whole id table; r > 0 a rank-r LoRA on it instead
    # (r * (items + dim) parameters rather than items * dim); None: ID_RANK under lora with ids
    id_rank: int | None = None
    # with item ids, where the id vectors start: "zero" (as they are after a move to a new
    # catalogue: the items score from their text alone), or "cooccurrence": the PPMI SVD of the
    # target's own training sequences (training/cooccurrence.py; no gradient, so under LoRA the
    # table stays frozen at it and costs no trainable parameter); None: "cooccurrence" under
    # lora with ids, else "zero"
    id_init: str | None = None
    # a learned scalar, trainable under every strategy, that adds that much of the last item's
    # vector to the user vector (models.seqrec.add_last_item_gate); it has its own AdamW rate,
    # since it has to travel from 0 to values of order 1 within a few epochs
    last_item_gate: bool = True
    gate_lr: float = GATE_LR
    # fuse the scores with the raw text similarity of the last item, at a weight picked on the
    # validation rows after training (models.seqrec.add_text_fusion, training.fusion); None: when
    # the model reads item text
    text_fusion: bool | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {tuple(STRATEGIES)}, got {self.strategy!r}")
        lora_ids = self.strategy == "lora" and self.uses_item_ids
        if self.id_rank is None:
            object.__setattr__(self, "id_rank", ID_RANK if lora_ids else 0)
        if self.id_init is None:
            object.__setattr__(self, "id_init", "cooccurrence" if lora_ids else "zero")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("lora_rank", "adapter_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.id_rank, bool) or not isinstance(self.id_rank, int) or self.id_rank < 0:
            raise ValueError(f"id_rank must be a non-negative integer, got {self.id_rank!r}")
        if self.id_rank and (self.strategy != "lora" or not self.uses_item_ids):
            raise ValueError(
                "id_rank (a LoRA on the item id table) needs strategy 'lora' with item_ids=True, "
                f"got strategy {self.strategy!r}, item_ids={self.item_ids!r}"
            )
        if self.id_init not in ID_STARTS:
            raise ValueError(f"id_init must be one of {ID_STARTS}, got {self.id_init!r}")
        if self.id_init != "zero" and not self.uses_item_ids:
            raise ValueError(
                f"id_init={self.id_init!r} needs item ids (item_ids=True, or strategy 'full')"
            )
        if not isinstance(self.lora_targets, tuple):
            raise ValueError(f"lora_targets must be a tuple, got {self.lora_targets!r}")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not self.gate_lr > 0:
            raise ValueError(f"gate_lr must be > 0, got {self.gate_lr}")

    @classmethod
    def bare(cls, strategy: str = "lora", **options) -> FinetuneConfig:
        """The strategy alone, none of the validated extras: no last-item gate, no text
        fusion, no adaptor restart, item ids only where the strategy trains them itself (full)
        and then from zero. For ablations and for tests of one mechanism."""
        plain = {
            "item_ids": strategy == "full",
            "id_rank": 0,
            "id_init": "zero",
            "last_item_gate": False,
            "text_fusion": False,
            "restart_adaptor": False,
        }
        return cls(strategy=strategy, **{**plain, **options})

    @property
    def uses_item_ids(self) -> bool:
        default = self.strategy in ("full", "lora")
        return default if self.item_ids is None else self.item_ids

    def fuses_text(self, model: SeqRec) -> bool:
        """Whether fine-tuning ``model`` fits a text-fusion weight (None: when it reads text)."""
        if self.text_fusion is None:
            return model.config.item_repr != "id"
        return self.text_fusion

    def to_dict(self) -> dict:
        return asdict(self)


def prepare(model: SeqRec, config: FinetuneConfig) -> list[str]:
    """Apply ``config.strategy`` to ``model`` in place; the names of the trainable tensors.

    Everything else is frozen (``requires_grad=False``)."""
    STRATEGIES[config.strategy](model, config)
    if getattr(model.items, "domain_embedding", None) is not None:
        model.items.domain_embedding.requires_grad_(True)
    if config.last_item_gate:
        add_last_item_gate(model)
    if model.config.last_item_gate:
        getattr(model, LAST_ITEM_GATE).requires_grad_(True)
    if config.fuses_text(model):
        try:
            add_text_fusion(model)
        except ValueError as e:
            raise ConfigError(str(e)) from e
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ConfigError(f"strategy {config.strategy!r} leaves no trainable parameter")
    return names


def stored_tensors(model: SeqRec, config: FinetuneConfig, trainable: list[str]) -> list[str]:
    """What an adapter checkpoint holds: the trained tensors, the fitted text-fusion weight when
    the model has one, plus the id table when it started from the target's data (``id_init``
    not "zero") and stayed frozen: the base cannot reproduce it."""
    stored = [*trainable, FUSION_WEIGHT] if model.config.text_fusion else list(trainable)
    id_table = surfaces(model).id_table
    if config.id_init == "zero" or id_table is None:
        return stored
    table = [  # the plain table, or the base layer LoRA wraps
        n for n, _ in model.named_parameters() if n.startswith(f"{id_table}.") and "lora_" not in n
    ]
    return stored + [n for n in table if n not in stored]


def _train_only(model: nn.Module, names: list[str]) -> None:
    keep = set(names)
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)


def _full(model: SeqRec, config: FinetuneConfig) -> None:
    _train_only(model, [n for n, _ in model.named_parameters()])


def _head(model: SeqRec, config: FinetuneConfig) -> None:
    _train_only(model, list(make_policy(PolicyConfig("head"), model).touched))  # the head policy


def _adaptor(model: SeqRec, config: FinetuneConfig) -> None:
    """The item-text adaptor and the item id table, when the model has them."""
    declared = surfaces(model)
    prefixes = tuple(f"{m}." for m in (declared.text_adaptor, declared.id_table) if m)
    _train_only(model, [n for n, _ in model.named_parameters() if n.startswith(prefixes)])


def _adapter(model: SeqRec, config: FinetuneConfig) -> None:
    model.requires_grad_(False)
    attach_adapters(model, config.adapter_hidden)


def lora_layers(model: SeqRec, config: FinetuneConfig) -> list[str]:
    """Names of the nn.Linear modules the LoRA strategy wraps."""
    declared = surfaces(model)
    targets = config.lora_targets or (declared.lora + declared.item_lora)
    policy = PolicyConfig("lora", rank=config.lora_rank, targets=targets)
    try:
        return list(LoraPolicy(policy, model).layers)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _inject_lora(model: SeqRec, config: FinetuneConfig) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_layers(model, config)  # full names: peft matches them exactly
    id_table = surfaces(model).id_table
    low_rank_ids = bool(config.id_rank) and id_table is not None
    if low_rank_ids:
        targets.append(id_table)
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        target_modules=targets,
        rank_pattern={id_table: config.id_rank} if low_rank_ids else {},
        lora_dropout=0.0,
        bias="none",
    )
    inject_adapter_in_model(lora, model)
    if id_table is None:
        return
    for name, p in model.named_parameters():  # peft freezes the base; the id table stays so
        if name.startswith(f"{id_table}.") and "lora_" not in name:
            p.requires_grad_(config.uses_item_ids and not low_rank_ids)


def merge_lora(model: SeqRec) -> SeqRec:
    """A plain SeqRec whose weights are ``W + (alpha / r) B A`` of ``model``'s LoRA layers."""
    from peft.tuners.lora import LoraLayer

    work = copy.deepcopy(model)
    merged = {}
    for name, module in work.named_modules():
        if isinstance(module, LoraLayer):
            module.merge()
            base = module.get_base_layer()
            merged[f"{name}.weight"] = base.weight.detach()
            if getattr(base, "bias", None) is not None:
                merged[f"{name}.bias"] = base.bias.detach()
    plain = SeqRec(model.config)
    state = {
        k: v for k, v in work.state_dict().items() if ".base_layer." not in k and "lora_" not in k
    }
    plain.load_state_dict({**state, **merged})
    return plain.train(model.training)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; total counts the base weights once (LoRA's frozen
    base layer included, its A and B excluded)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total - _added(model)


def _added(model: nn.Module) -> int:
    """Parameters a strategy added on top of the base model (LoRA matrices, adapters)."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n or ".adapter." in n)


def make_optimizer(
    model: nn.Module, config: FinetuneConfig, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The chosen optimizer over the trainable tensors, grouped by ``training.loop.param_groups``
    (no weight decay on 1-d tensors; the last-item gate at ``config.gate_lr``)."""
    groups = param_groups(model, weight_decay, config.gate_lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9)


# name -> a function that sets, in place, which tensors of the model train under the strategy;
# a new strategy is one function and one line here
STRATEGIES: dict[str, Callable[[SeqRec, FinetuneConfig], None]] = {
    "full": _full,
    "lora": _inject_lora,
    "adapter": _adapter,
    "adaptor": _adaptor,
    "head": _head,
}
