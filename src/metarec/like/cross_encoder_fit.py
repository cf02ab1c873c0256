"""LoRA fine-tuning of the cross-encoder like scorer, through ``peft``.

``add_lora`` injects LoRA layers (B = 0 at start, so the output is unchanged) into the encoder of
a ``CrossEncoder`` with ``peft.inject_adapter_in_model`` and freezes every other encoder weight;
the heads stay trainable. ``fit_cross_encoder`` runs mini-batch AdamW over tokenised prompts;
``predict_cross_encoder`` scores in batches without gradients.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metarec.like.cross_encoder import CrossEncoder


@dataclass(frozen=True)
class LoraFitConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("query", "value")  # module names inside the encoder
    layers: tuple[int, ...] | None = (4, 5)  # transformer layers adapted; None: all
    lr: float = 1e-3
    epochs: int = 3
    min_steps: int = 10  # small budgets get at least this many steps
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0 or not self.lr > 0:
            raise ValueError(f"alpha and lr must be > 0, got {self.alpha}, {self.lr}")
        if self.epochs < 0 or self.batch_size < 1 or self.min_steps < 0:
            raise ValueError("epochs, min_steps must be >= 0 and batch_size >= 1")
        if not self.targets:
            raise ValueError("targets must name at least one module")
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise ValueError(f"layers must be None or non-negative indices, got {self.layers}")


def add_lora(model: CrossEncoder, cfg: LoraFitConfig) -> CrossEncoder:
    """Inject LoRA adapters into ``model.encoder`` (in place) and freeze its other weights."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.targets),
        bias="none",
        layers_to_transform=None if cfg.layers is None else list(cfg.layers),
        layers_pattern=None if cfg.layers is None else "layer",
    )
    torch.manual_seed(cfg.seed)  # A's random start
    inject_adapter_in_model(lora, model.encoder)
    for name, p in model.encoder.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def tokenize(tokenizer, prompts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask (S, T); the oldest history is cut first when too long."""
    tokenizer.truncation_side = "left"
    enc = tokenizer(
        prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _rows(tokens: dict[str, torch.Tensor], numeric: torch.Tensor, idx: torch.Tensor):
    mask = tokens["attention_mask"][idx]
    width = int(mask.sum(1).max())  # right padding: drop the all-pad columns of this batch
    return tokens["input_ids"][idx, :width], mask[:, :width], numeric[idx]


def fit_cross_encoder(
    model: CrossEncoder,
    tokens: dict[str, torch.Tensor],
    numeric: torch.Tensor,
    labels: torch.Tensor,
    cfg: LoraFitConfig,
) -> dict[str, float | list[float]]:
    """Mini-batch AdamW on the trainable parameters; returns losses and seconds."""
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    n = len(labels)
    per_epoch = -(-n // cfg.batch_size)
    steps = max(cfg.epochs * per_epoch, cfg.min_steps if cfg.epochs else 0)
    losses, start = [], time.perf_counter()
    model.train()
    order = torch.randperm(n, generator=gen)
    for step in range(steps):
        pos = (step % per_epoch) * cfg.batch_size
        if step and pos == 0:
            order = torch.randperm(n, generator=gen)
        idx = order[pos : pos + cfg.batch_size]
        opt.zero_grad(set_to_none=True)
        loss = model.loss(*_rows(tokens, numeric, idx), labels[idx])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return {"losses": losses, "train_seconds": time.perf_counter() - start, "steps": steps}


def predict_cross_encoder(
    model: nn.Module, tokens: dict[str, torch.Tensor], numeric: torch.Tensor, batch: int = 128
) -> np.ndarray:
    """(S,) logits, batched, in inference mode."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(numeric), batch):
            idx = torch.arange(start, min(start + batch, len(numeric)))
            out.append(model.score(*_rows(tokens, numeric, idx)).float().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)
