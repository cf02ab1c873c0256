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
package provides it for torch 2.13.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from metarec.adapt.adapters import attach_adapters
from metarec.adapt.policies import LoraPolicy, PolicyConfig, make_policy
from metarec.errors import ConfigError
from metarec.models.seqrec import GATE_LR, SeqRec, add_last_item_gate, add_text_fusion
from metarec.training.loop import param_groups

STRATEGIES = ("full", "lora", "adapter", "adaptor", "head")
ID_STARTS = ("zero", "cooccurrence")
_ID_TABLE = "items.id_embedding"
FUSION_WEIGHT = "text_fusion_weight"  # a buffer: fitted after training, not trained
OPTIMIZERS = ("adamw", "adagrad", "sgd")
# fnmatch patterns over module names (as the ``lora`` policy's targets); only nn.Linear is wrapped
LORA_TARGETS = (
    "blocks.*.attn.qkv",
    "blocks.*.attn.out",
    "blocks.*.ff.0",
    "blocks.*.ff.3",
    "items.text_proj*",
)


@dataclass(frozen=True)
class FinetuneConfig:
    """A strategy plus its options. ``item_ids``: whether the target catalogue gets trainable id
    embeddings (None: only for ``full``, since they are as many parameters as items)."""

    strategy: str = "lora"
    optimizer: str = "adamw"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    adapter_hidden: int = 16
    item_ids: bool | None = None
    restart_adaptor: bool = False  # new catalogue: start the adaptor at its text's principal axes
    # lora with item ids: 0 trains the whole id table; r > 0 a rank-r LoRA on it instead
    # (r * (items + dim) parameters rather than items * dim)
    id_rank: int = 0
    # with item ids, where the id vectors start: "zero" (as they are after a move to a new
    # catalogue: the items score from their text alone), or "cooccurrence": the PPMI SVD of the
    # target's own training sequences (training/cooccurrence.py; no gradient, so under LoRA the
    # table stays frozen at it and costs no trainable parameter)
    id_init: str = "zero"
    # a learned scalar, trainable under every strategy, that adds that much of the last item's
    # vector to the user vector (models.seqrec.add_last_item_gate); it has its own AdamW rate,
    # since it has to travel from 0 to values of order 1 within a few epochs
    last_item_gate: bool = False
    gate_lr: float = GATE_LR
    # fuse the scores with the raw text similarity of the last item, at a weight picked on the
    # validation rows after training (models.seqrec.add_text_fusion, training.fusion)
    text_fusion: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
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
        if not isinstance(self.lora_targets, tuple) or not self.lora_targets:
            raise ValueError(f"lora_targets must be a non-empty tuple, got {self.lora_targets!r}")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not self.gate_lr > 0:
            raise ValueError(f"gate_lr must be > 0, got {self.gate_lr}")

    @property
    def uses_item_ids(self) -> bool:
        return self.strategy == "full" if self.item_ids is None else self.item_ids

    def to_dict(self) -> dict:
        return asdict(self)


def prepare(model: SeqRec, config: FinetuneConfig) -> list[str]:
    """Apply ``config.strategy`` to ``model`` in place; the names of the trainable tensors.

    Everything else is frozen (``requires_grad=False``)."""
    if config.strategy == "lora":
        _inject_lora(model, config)
    elif config.strategy == "adapter":
        model.requires_grad_(False)
        attach_adapters(model, config.adapter_hidden)
    else:
        keep = set(_subset(model, config.strategy))
        for name, p in model.named_parameters():
            p.requires_grad_(name in keep)
    if getattr(model.items, "domain_embedding", None) is not None:
        model.items.domain_embedding.requires_grad_(True)
    if config.last_item_gate:
        add_last_item_gate(model)
    if model.config.last_item_gate:
        model.last_item_gate.requires_grad_(True)
    if config.text_fusion:
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
    if config.id_init == "zero":
        return stored
    table = [  # the plain table, or the base layer LoRA wraps
        n for n, _ in model.named_parameters() if n.startswith(f"{_ID_TABLE}.") and "lora_" not in n
    ]
    return stored + [n for n in table if n not in stored]


def _subset(model: SeqRec, strategy: str) -> list[str]:
    names = [n for n, _ in model.named_parameters()]
    if strategy == "full":
        return names
    if strategy == "head":
        return list(make_policy(PolicyConfig("head"), model).touched)
    return [n for n in names if n.startswith(("items.text_proj.", "items.id_embedding."))]


def lora_layers(model: SeqRec, config: FinetuneConfig) -> list[str]:
    """Names of the nn.Linear modules the LoRA strategy wraps."""
    policy = PolicyConfig("lora", rank=config.lora_rank, targets=config.lora_targets)
    try:
        return list(LoraPolicy(policy, model).layers)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _inject_lora(model: SeqRec, config: FinetuneConfig) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_layers(model, config)  # full names: peft matches them exactly
    low_rank_ids = bool(config.id_rank) and hasattr(model.items, "id_embedding")
    if low_rank_ids:
        targets.append(_ID_TABLE)
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        target_modules=targets,
        rank_pattern={_ID_TABLE: config.id_rank} if low_rank_ids else {},
        lora_dropout=0.0,
        bias="none",
    )
    inject_adapter_in_model(lora, model)
    for name, p in model.named_parameters():  # peft freezes the base; the id table stays so
        if name.startswith("items.id_embedding.") and "lora_" not in name:
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
