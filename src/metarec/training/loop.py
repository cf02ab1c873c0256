"""The one training loop: AdamW, early stopping on a validation metric, progress, resume.

Models bring ``loss(batch)``; the caller brings a batch factory and a validation function, so the
loop knows nothing about any particular model or dataset.

Under torchrun (``training.distributed``) the same loop is data-parallel: the model runs inside
DistributedDataParallel, every rank draws the same global batches and keeps its own disjoint
rows of each (the caller's ``split``), rank 0 validates and broadcasts the metric and its clock
(so every rank stops at the same epoch), and only rank 0 shows progress and runs ``on_epoch``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from metarec.errors import ConfigError
from metarec.models.seqrec import GATE_LR
from metarec.training import distributed
from metarec.training.devices import check_device_name, resolve_device
from metarec.training.distributed import Shard
from metarec.training.seeding import epoch_rng

SCHEDULES = ("constant", "cosine", "linear")


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 10  # epochs without validation improvement before stopping
    grad_clip: float = 1.0
    seed: int = 0
    time_budget_s: float | None = None  # stop after this much training time
    progress: bool = True
    device: str = "auto"  # "auto": CUDA when available, else CPU
    # validate the weights before the first epoch too, so that they are kept (best epoch 0) when
    # no epoch improves on them: fine-tuning a pretrained model must never end below its start
    validate_start: bool = False
    # learning rate over the run: "constant", or "cosine" / "linear" decay from lr towards 0 at
    # max_epochs (set per epoch, at its midpoint, so the last epoch still learns); the first
    # warmup_steps optimizer steps ramp linearly up to it
    schedule: str = "constant"
    warmup_steps: int = 0

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"invalid learning rate: {self.lr}")
        if self.max_epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("max_epochs, batch_size and patience must be positive")
        if self.weight_decay < 0:
            raise ValueError(f"invalid weight decay: {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check_device_name(self.device)

    def epoch_lr_scale(self, epoch: int) -> float:
        """Multiplier of ``lr`` during epoch ``epoch`` (0-based), before warm-up."""
        if self.schedule == "constant":
            return 1.0
        progress = min((epoch + 0.5) / self.max_epochs, 1.0)
        if self.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainState:
    """What a resumed run needs besides weights and optimizer state."""

    epoch: int = 0  # epochs completed
    steps: int = 0  # optimizer steps taken
    best_epoch: int = 0
    best_metric: float = float("-inf")
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, validation metric)
    train_seconds: float = 0.0
    seconds_to_best: float = 0.0
    stopped: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def cost(self) -> dict[str, float]:
        """The training-cost figures every report shows (metrics.json ``cost``)."""
        return {
            "train_seconds": self.train_seconds,
            "seconds_to_best": self.seconds_to_best,
            "epochs": self.epoch,
            "best_epoch": self.best_epoch,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        d = dict(d)
        d["curve"] = [tuple(p) for p in d.get("curve", [])]
        return cls(**d)


BatchFactory = Callable[[int, np.random.Generator], Iterable]
Validate = Callable[[nn.Module], float]
# (global batch, rank, world) -> that rank's Shard of it (training.distributed.Shard)
BatchSplit = Callable[[object, int, int], Shard]


def param_groups(model: nn.Module, weight_decay: float, gate_lr: float = GATE_LR) -> list[dict]:
    """Optimizer groups over the trainable tensors: weight decay on matrices only (not on
    biases, norms or other 1-d tensors), and a last-item gate (SeqRecConfig.last_item_gate) at
    its own rate ``gate_lr``, without decay. Empty groups are left out."""
    gate = getattr(model, "last_item_gate", None)
    params = [p for p in model.parameters() if p.requires_grad and p is not gate]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    if isinstance(gate, nn.Parameter) and gate.requires_grad:
        groups.append({"params": [gate], "weight_decay": 0.0, "lr": gate_lr})
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over ``param_groups``."""
    return torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)


def train_epoch(
    model,
    optimizer,
    batches: Iterable,
    grad_clip: float,
    device,
    lr_at: Callable[[int], float] | None = None,
    loss_fn: Callable | None = None,
) -> tuple[float, int]:
    """One pass over ``batches`` (loss, backward, clipping, step); the mean loss and the steps.

    ``lr_at(i)``, when given, is the learning rate of the epoch's i-th step (every group).
    ``loss_fn`` (default ``model.loss``) is the DDP-wrapped loss under torchrun; a ``Shard``
    batch has its loss multiplied by its scale.
    """
    model.train()
    loss_fn = loss_fn or model.loss
    total, n = 0.0, 0
    for batch in batches:
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(n)
        if isinstance(batch, Shard):
            loss = loss_fn(batch.batch.to(device)) * batch.scale
        else:
            loss = loss_fn(batch.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total, n = total + loss.item(), n + 1
    return total / max(n, 1), n


def step_lr(config: TrainConfig, epoch: int, first_step: int) -> Callable[[int], float] | None:
    """The learning rate of epoch ``epoch``'s i-th step under ``config``'s schedule and warm-up
    (``first_step``: steps taken before the epoch); None when it is simply ``config.lr``."""
    if config.schedule == "constant" and not config.warmup_steps:
        return None
    scale = config.lr * config.epoch_lr_scale(epoch)
    warmup = config.warmup_steps

    def lr_at(i: int) -> float:
        return scale * (min(1.0, (first_step + i + 1) / warmup) if warmup else 1.0)

    return lr_at


def fit(
    model: nn.Module,
    batches: BatchFactory,
    validate: Validate,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer | None = None,
    state: TrainState | None = None,
    on_epoch: Callable[[TrainState, nn.Module, torch.optim.Optimizer], None] | None = None,
    desc: str = "training",
    best_weights: dict[str, torch.Tensor] | None = None,
    split: BatchSplit | None = None,
) -> tuple[TrainState, dict[str, torch.Tensor]]:
    """Train until patience or budget runs out; returns the state and the best weights.

    To resume, pass the saved ``optimizer``, ``state`` and ``best_weights`` with the model holding
    the last weights; epochs reseed from (seed, epoch), so the run continues as if never stopped.
    Under torchrun, ``split`` cuts each global batch into this rank's ``Shard`` (required there)
    and ``on_epoch`` runs on rank 0 only.
    """
    here = distributed.current()
    if here.enabled and split is None:
        raise ConfigError("distributed training needs a batch split for this trainer")
    device = here.device(config.resolved_device())
    model.to(device)
    optimizer = optimizer or make_optimizer(model, config)
    loss_fn = distributed.loss_function(model, device)
    state = state or TrainState()
    best = best_weights if best_weights is not None else copy.deepcopy(model.state_dict())
    if config.validate_start and state.epoch == 0 and not state.curve:
        state.best_metric = _validate(validate, model, here)
        state.curve.append((0, state.best_metric))
        best = copy.deepcopy(model.state_dict())
    show = config.progress and here.is_main()
    bar = tqdm(total=config.max_epochs, initial=state.epoch, desc=desc, disable=not show)
    while state.epoch < config.max_epochs and not state.stopped:
        start = time.perf_counter()
        rng = epoch_rng(config.seed, state.epoch)
        lr_at = step_lr(config, state.epoch, state.steps)
        epoch = batches(state.epoch, rng)
        if here.enabled:
            epoch = (split(b, here.rank, here.world) for b in epoch)
        loss, steps = train_epoch(model, optimizer, epoch, config.grad_clip, device, lr_at, loss_fn)
        loss = distributed.mean_over_ranks(loss)
        state.train_seconds += time.perf_counter() - start
        state.epoch += 1
        state.steps += steps
        metric = _validate(validate, model, here)
        (state.train_seconds,) = distributed.from_main(state.train_seconds)
        state.curve.append((state.epoch, metric))
        if metric > state.best_metric:
            state.best_metric, state.best_epoch = metric, state.epoch
            state.seconds_to_best = state.train_seconds
            best = copy.deepcopy(model.state_dict())
        if state.epoch - state.best_epoch >= config.patience:
            state.stopped = f"no improvement for {config.patience} epochs"
        elif config.time_budget_s is not None and state.train_seconds >= config.time_budget_s:
            state.stopped = f"time budget of {config.time_budget_s:g}s reached"
        bar.set_postfix(loss=f"{loss:.4f}", val=f"{metric:.4f}", best=f"{state.best_metric:.4f}")
        bar.update(1)
        if on_epoch is not None and here.is_main():
            on_epoch(state, model, optimizer)
    bar.close()
    if not state.stopped:
        state.stopped = f"max_epochs={config.max_epochs} reached"
    return state, best


def _validate(validate: Validate, model: nn.Module, here: distributed.Dist) -> float:
    """``validate(model)`` on rank 0, its value on every rank (the weights are the same)."""
    metric = validate(model) if here.is_main() else 0.0
    return distributed.from_main(metric)[0]
