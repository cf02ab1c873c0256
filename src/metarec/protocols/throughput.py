"""PROTOCOLS.md train-throughput: what learning costs on this machine, and how it grows.

- **Peak**: the float32 matrix-multiply rate of this machine, measured here (square ``torch.mm``).
- **Pretraining**: sequences (training windows) per second of SeqRec's training step (forward,
  backward, AdamW), and its achieved FLOP/s, counted by ``torch.utils.flop_counter`` on one step,
  against the peak.
- **Meta-training**: tasks per second of second-order MAML meta-steps (head policy, meta-batch 16).
- **Scaling**: the data resampled at 1x / 2x / 4x / 8x users (each copy of a user is a new user
  with the same sequence) and 1x / 2x / 4x / 8x items (each copy of the data on its own copy of
  the catalogue): preparation, one training epoch and full-ranking evaluation of every user,
  timed, with peak memory; the growth exponent is the slope of the log-log fit of epoch time.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from metarec.data.loaders.registry import load_dataset
from metarec.data.schema import Dataset, Interactions, ItemCatalog
from metarec.data.splits import leave_one_out
from metarec.evaluation.next_item import evaluate_next_item, model_device
from metarec.evaluation.plots import plot_scaling
from metarec.evaluation.report import ResultRow
from metarec.meta.learners import LearnerSpec, build_learner
from metarec.meta.tasks import TaskSampler, next_item_tasks
from metarec.protocols.experiment import Experiment, Plot
from metarec.protocols.resources import peak_rss_mb, reset_peak_rss
from metarec.training.loop import TrainConfig, make_optimizer, train_epoch
from metarec.training.pretrain import prepare_next_item, seqrec_batches
from metarec.workflows.pretrain import ModelSpec, TextFeatures, build_seqrec, item_text_features

PROTOCOL = "train-throughput"


@dataclass(frozen=True)
class ThroughputConfig:
    data: str | None = None
    out: Path = Path("metarec-runs/train-throughput")
    # the model the 2026-11-30 throughput figures were measured on (MLP text adaptor, 256 wide)
    spec: ModelSpec = field(default_factory=lambda: ModelSpec(text_hidden=256, id_dropout=0.2))
    batch_size: int = 32  # as warm-ml's SeqRec
    steps: int = 100  # timed pretraining steps (after 5 warm-up steps)
    meta_steps: int = 10
    scales: tuple[int, ...] = (1, 2, 4, 8)
    scale_items: bool = True  # also scale the catalogue (block copies)
    progress: bool = True


def config_from_options(
    out: Path, data: str | None, scales: list[int] | None, steps: int
) -> ThroughputConfig:
    """What ``metarec bench train-throughput`` runs (scales 1, 2, 4, 8 unless given)."""
    return ThroughputConfig(data=data, out=out, steps=steps, scales=tuple(scales or (1, 2, 4, 8)))


def matmul_peak(n: int = 1024, seconds: float = 2.0) -> float:
    """Float32 FLOP/s of square matrix multiplies on this machine (best of several runs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - start))
    return best


def pretrain_rate(model, data, batch_size: int, steps: int) -> dict[str, float]:
    """Sequences/s and FLOP/s of SeqRec training steps (AdamW, gradient clipping as fit)."""
    optimizer = make_optimizer(model, TrainConfig(batch_size=batch_size))
    make = seqrec_batches(data, batch_size)
    rng = np.random.default_rng(0)
    batches = (b for epoch in itertools.count() for b in make(epoch, rng))  # epoch after epoch
    device = model_device(model)

    def step(batch) -> None:  # fit's own step: loss, backward, clipping at 1.0, AdamW
        train_epoch(model, optimizer, [batch], 1.0, device)

    for _ in range(5):
        step(next(batches))
    counter = FlopCounterMode(display=False)
    probe = next(batches)
    with counter:
        step(probe)
    flops_per_sequence = counter.get_total_flops() / len(probe.items)
    sequences, start = 0, time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        step(batch)
        sequences += len(batch.items)
    seconds = time.perf_counter() - start
    rate = sequences / seconds
    return {
        "sequences_per_s": rate,
        "flops_per_s": rate * flops_per_sequence,
        "flops_per_sequence": flops_per_sequence,
    }


def meta_rate(model, dataset: Dataset, meta_steps: int, max_len: int) -> float:
    """Tasks/s of second-order MAML (head policy, one inner step, meta-batch 16)."""
    tasks = next_item_tasks(dataset.interactions, 5, 20, max_len)
    spec = LearnerSpec("maml")  # the product defaults: head policy, the validated inner loop
    learner = build_learner(model, spec)
    batches = iter(TaskSampler(tasks, 16, 0))
    learner.meta_step([t.pair for t in next(batches)])  # warm-up
    start = time.perf_counter()
    for _ in range(meta_steps):
        learner.meta_step([t.pair for t in next(batches)])
    return 16 * meta_steps / (time.perf_counter() - start)


def more_users(ds: Dataset, k: int) -> Dataset:
    """``k`` copies of every user (new users with the same sequences); the catalogue as is."""
    inter = ds.interactions
    big = Interactions(
        np.concatenate([inter.user + c * ds.n_users for c in range(k)]),
        np.tile(inter.item, k),
        np.tile(inter.timestamp, k),
    )
    users = [f"{u}#{c}" for c in range(k) for u in ds.users]
    return Dataset(f"{ds.name}-x{k}-users", big.sort_by_user_time(), users, ds.items)


def more_items(ds: Dataset, k: int) -> Dataset:
    """The same users on a catalogue ``k`` times larger: item i of user u becomes copy
    ``u % k`` of item i, so every copy is used and each sequence keeps its length."""
    inter = ds.interactions
    block = inter.user % k
    big = Interactions(inter.user.copy(), inter.item + block * ds.n_items, inter.timestamp.copy())
    catalog = ItemCatalog(
        [f"{i}#{c}" for c in range(k) for i in ds.items.ids], list(ds.items.text) * k
    )
    return Dataset(f"{ds.name}-x{k}-items", big.sort_by_user_time(), list(ds.users), catalog)


def scaling_point(ds: Dataset, spec: ModelSpec, text: TextFeatures, batch_size: int) -> dict:
    reset_peak_rss()
    start = time.perf_counter()
    data = prepare_next_item(leave_one_out(ds), ds.n_users, ds.n_items, spec.max_len)
    prep = time.perf_counter() - start
    torch.manual_seed(0)
    model = build_seqrec(spec, ds, text)
    optimizer = make_optimizer(model, TrainConfig(batch_size=batch_size))
    start = time.perf_counter()
    batches = seqrec_batches(data, batch_size)(0, np.random.default_rng(0))
    train_epoch(model, optimizer, batches, 0.0, model_device(model))
    epoch = time.perf_counter() - start
    start = time.perf_counter()
    evaluate_next_item(model, data.test, data.n_items)
    evaluation = time.perf_counter() - start
    return {
        "users": float(ds.n_users),
        "items": float(ds.n_items),
        "windows": float(len(data.window_users)),
        "prep_seconds": prep,
        "epoch_seconds": epoch,
        "eval_seconds": evaluation,
        "peak_rss_mb": peak_rss_mb(),
    }


def growth_exponent(x: list[float], y: list[float]) -> float:
    """Slope of log(y) against log(x): 1 is linear growth."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def run_throughput(cfg: ThroughputConfig, log: Callable[[str], None] = print) -> dict:
    ds = load_dataset(cfg.data)
    exp = Experiment(PROTOCOL, ds.name, [0], cfg.out, "train-throughput", log=log)
    text = item_text_features(ds, cfg.spec, cfg.progress)
    peak = matmul_peak()
    log(
        f"matrix-multiply peak: {peak / 1e9:.1f} GFLOP/s "
        f"(float32, {torch.get_num_threads()} threads)"
    )
    data = prepare_next_item(leave_one_out(ds), ds.n_users, ds.n_items, cfg.spec.max_len)
    torch.manual_seed(0)
    model = build_seqrec(cfg.spec, ds, text)
    pre = pretrain_rate(model, data, cfg.batch_size, cfg.steps)
    share = pre["flops_per_s"] / peak
    log(
        f"pretraining: {pre['sequences_per_s']:.0f} sequences/s, "
        f"{pre['flops_per_s'] / 1e9:.1f} GFLOP/s = {share:.0%} of the peak"
    )
    tasks_per_s = meta_rate(model, ds, cfg.meta_steps, cfg.spec.max_len)
    log(f"meta-training (2nd-order MAML, head, meta-batch 16): {tasks_per_s:.1f} tasks/s")
    exp.add(
        ResultRow("metarec", {"phase": "matmul-peak"}, {}, {"flops_per_s": peak}),
        ResultRow(
            "metarec",
            {"phase": "pretrain", "batch": cfg.batch_size},
            {},
            {**pre, "fraction_of_peak": share},
        ),
        ResultRow(
            "metarec",
            {"phase": "meta-train", "algorithm": "maml"},
            {},
            {"tasks_per_s": tasks_per_s},
        ),
    )
    series = _scaling(cfg, ds, text, exp)
    exponents = {}
    for axis, points in series.items():
        if len(points) >= 2:
            x = [p[axis] for p in points]
            exponents[axis] = growth_exponent(x, [p["epoch_seconds"] for p in points])
    curves = {a: [(p[a], p["epoch_seconds"]) for p in pts] for a, pts in series.items()}
    draw = partial(plot_scaling, curves, xlabel=_XLABEL, ylabel="seconds per training epoch")
    extra = {"growth_exponent": exponents, "matmul_peak_flops_per_s": peak}
    intro = (
        f"Matrix-multiply peak {peak / 1e9:.1f} GFLOP/s; pretraining {pre['sequences_per_s']:.0f} "
        f"sequences/s at {pre['flops_per_s'] / 1e9:.1f} GFLOP/s ({share:.0%} of the peak); "
        f"second-order MAML {tasks_per_s:.1f} tasks/s. Epoch-time growth exponents (log-log "
        f"slope): " + ", ".join(f"{a} {e:.2f}" for a, e in exponents.items()) + "."
    )
    plots = [Plot("Epoch time against scale", "scaling.png", draw)]
    return {**exp.finish(intro, plots=plots, extra=extra), "exponents": exponents}


_XLABEL = "users or items in the data"


def _scaling(cfg: ThroughputConfig, ds: Dataset, text: TextFeatures, exp: Experiment) -> dict:
    """Epoch time, evaluation time and memory at every scale of users (and items): a row each."""
    series: dict[str, list[dict]] = {"users": []}
    if cfg.scale_items:
        series["items"] = []
    for k in cfg.scales:
        for axis in series:
            big = more_users(ds, k) if axis == "users" else more_items(ds, k)
            big_text = text
            if axis == "items" and text.embeddings is not None:
                big_text = replace(text, embeddings=text.embeddings.repeat(k, 1))
            point = scaling_point(big, cfg.spec, big_text, cfg.batch_size)
            series[axis].append(point)
            exp.log(
                f"x{k} {axis}: {int(point['users']):,} users, {int(point['items']):,} items: "
                f"epoch {point['epoch_seconds']:.1f} s, evaluation {point['eval_seconds']:.2f} s, "
                f"{point['peak_rss_mb']:.0f} MB"
            )
            exp.add(ResultRow("metarec", {"phase": "scale", "axis": axis, "factor": k}, {}, point))
    return series
