"""The meta-training loop: meta-batches of tasks, periodic meta-validation, early stopping.

``meta_train`` samples meta-batches (``TaskSampler``), calls the learner's ``meta_step`` and,
every ``eval_every`` steps (and at step 0, before any meta-training), adapts the learner to each
held-out task's support set and scores it (``evaluate_tasks``): for next-item and domain tasks
the mean NDCG@10 / Recall@10 of the query items over the full catalogue minus the support items
(``evaluation.metrics.topk_hits``), for like tasks AUC and log-loss of the query labels. It stops
after ``patience`` validations without improvement, at ``max_steps``, when the time budget is
spent or when the meta-loss stops being finite, and leaves the best validated state in the
learner.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from metarec.errors import ConfigError
from metarec.evaluation.metrics import auc, log_loss, ndcg_at_k, recall_at_k, topk_hits
from metarec.evaluation.next_item import model_device
from metarec.meta.functional import frozen_item_vectors, functional_score, like_logits
from metarec.meta.learners import Learner, learner_state, load_learner_state
from metarec.meta.tasks import Ranking, Task, TaskSampler
from metarec.training.devices import check_device_name, resolve_device

SELECT = ("NDCG@10", "Recall@10", "AUC")


@dataclass(frozen=True)
class MetaTrainConfig:
    meta_batch_size: int = 16
    max_steps: int = 1000
    eval_every: int = 50  # meta steps between validations
    patience: int = 5  # validations without improvement before stopping
    time_budget_s: float | None = 600.0  # wall time, meta steps and validations together
    seed: int = 0
    select: str = "NDCG@10"  # validation metric: NDCG@10 | Recall@10 (ranking tasks) | AUC (like)
    dropout: bool = False  # model in train mode (dropout on) during meta steps
    progress: bool = True
    device: str = "auto"  # where the workflow puts the model; meta_train runs where it is

    def __post_init__(self) -> None:
        positive = ("meta_batch_size", "max_steps", "eval_every", "patience")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0, got {self.time_budget_s}")
        if self.select not in SELECT:
            raise ValueError(f"select must be one of {SELECT}, got {self.select!r}")
        check_device_name(self.device)

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)


@dataclass
class MetaTrainResult:
    """The run: ``curve`` (meta step, validation metric) from step 0 (before meta-training),
    ``losses`` (meta step, meta-loss), and ``best_state`` (``learners.learner_state``)."""

    step: int = 0
    best_step: int = 0
    best_metric: float = -math.inf
    curve: list[tuple[int, float]] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    train_seconds: float = 0.0  # in meta steps
    wall_seconds: float = 0.0  # meta steps and validations
    seconds_to_best: float = 0.0
    stopped: str = ""
    best_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    since_best: int = 0  # validations since the best one

    def summary(self) -> dict:
        """Everything but the tensors, as plain JSON values."""
        return {k: v for k, v in asdict(self).items() if k not in ("best_state", "since_best")}


def meta_train(
    learner: Learner,
    train_tasks: Sequence[Task],
    valid_tasks: Sequence[Task],
    config: MetaTrainConfig,
) -> MetaTrainResult:
    """Meta-train ``learner`` in place; returns the run, with the best state loaded back."""
    if not valid_tasks:
        raise ConfigError("meta-validation needs at least one held-out task")
    torch.manual_seed(config.seed)
    batches = iter(TaskSampler(train_tasks, config.meta_batch_size, config.seed))
    res, start = MetaTrainResult(), time.perf_counter()
    _validate(learner, valid_tasks, config, res)
    mode = learner.model.training
    bar = tqdm(total=config.max_steps, desc="meta-training", disable=not config.progress)
    try:
        while not res.stopped:
            _step(learner, batches, config, res)
            res.wall_seconds = time.perf_counter() - start
            res.stopped = _stop_reason(config, res)
            if not res.stopped.startswith("meta-loss") and (
                res.stopped or res.step % config.eval_every == 0
            ):
                _validate(learner, valid_tasks, config, res)
                if not res.stopped and res.since_best >= config.patience:
                    res.stopped = f"no improvement for {config.patience} validations"
            bar.update(1)
            bar.set_postfix(loss=f"{res.losses[-1][1]:.4f}", best=f"{res.best_metric:.4f}")
    finally:
        learner.model.train(mode)
        bar.close()
    res.wall_seconds = time.perf_counter() - start
    load_learner_state(learner, res.best_state)
    return res


def evaluate_tasks(
    learner: Learner, tasks: Sequence[Task], steps: int | None = None, k: int = 10
) -> dict[str, float]:
    """Mean metrics after adapting to each task's support set (``steps=0``: no adaptation).

    Ranking tasks give ``NDCG@k`` and ``Recall@k`` (mean over ranking rows), like tasks ``AUC``
    and ``LogLoss`` over all their query samples pooled (AUC only where both labels occur).
    """
    model = learner.model
    device = model_device(model)
    rows: dict[str, list[torch.Tensor]] = {}
    labels, logits = [], []
    with eval_mode(model):
        vectors = frozen_item_vectors(model, learner.policy.touched)
        for task in tasks:
            fast = learner.adapt_task(task.support.to(device), steps)
            with torch.no_grad():
                params = learner.policy.effective_params(model, fast)
                if task.ranking is not None:
                    ranked = rank_metrics(model, params, task.ranking, k, vectors)
                    for name, v in ranked.items():
                        rows.setdefault(name, []).append(v.cpu())
                else:
                    query = task.query.to(device)
                    logits.append(like_logits(model, params, query, vectors).cpu())
                    labels.append(query.labels.cpu())
    out = {name: float(torch.cat(v).mean()) for name, v in rows.items()}
    if logits:
        y, z = torch.cat(labels), torch.cat(logits).double()
        if 0 < float(y.sum()) < len(y):
            out["AUC"] = auc(y, z)
        out["LogLoss"] = log_loss(y, torch.sigmoid(z))
    return out


def rank_metrics(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    ranking: Ranking,
    k: int = 10,
    item_vectors: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-row NDCG@k and Recall@k (R,) of ``ranking`` under ``params`` (full catalogue);
    ``item_vectors`` as in ``functional_score``."""
    history = ranking.history.to(model_device(model))
    scores = functional_score(model, params, history, None, item_vectors)  # (R, N)
    return rank_scores(scores, ranking.positives, ranking.exclude, k)


def rank_scores(
    scores: torch.Tensor,
    positives: Sequence[np.ndarray],
    exclude: Sequence[np.ndarray],
    k: int = 10,
) -> dict[str, torch.Tensor]:
    """Per-row NDCG@k and Recall@k (R,) of scores (R, N): row r's ``positives[r]`` ranked over
    the full catalogue minus ``exclude[r]``. The one ranking of held-out tasks and cold users
    (``meta.cold_users``), so meta-validation and the cold-start tables cannot drift apart."""
    device = scores.device
    relevant = torch.zeros_like(scores, dtype=torch.bool)
    excluded = torch.zeros_like(relevant)
    for row, (pos, seen) in enumerate(zip(positives, exclude, strict=True)):
        relevant[row, torch.as_tensor(pos, device=device)] = True
        excluded[row, torch.as_tensor(seen, device=device)] = True
    hits, n_relevant = topk_hits(scores, relevant, min(k, scores.shape[1]), excluded)
    return {
        f"NDCG@{k}": ndcg_at_k(hits, n_relevant, hits.shape[1]),
        f"Recall@{k}": recall_at_k(hits, n_relevant, hits.shape[1]),
    }


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` for the duration, then the mode it had."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _step(
    learner: Learner, batches: Iterator[list[Task]], config: MetaTrainConfig, res: MetaTrainResult
) -> None:
    device = model_device(learner.model)
    tasks = [(t.support.to(device), t.query.to(device)) for t in next(batches)]
    learner.model.train(config.dropout)
    start = time.perf_counter()
    stats = learner.meta_step(tasks)
    res.train_seconds += time.perf_counter() - start
    res.step += 1
    res.losses.append((res.step, float(stats["loss"])))


def _stop_reason(config: MetaTrainConfig, res: MetaTrainResult) -> str:
    if not math.isfinite(res.losses[-1][1]):
        return f"meta-loss not finite at step {res.step}; kept the best validated state"
    if res.step >= config.max_steps:
        return f"max_steps={config.max_steps} reached"
    if config.time_budget_s is not None and res.wall_seconds >= config.time_budget_s:
        return f"time budget of {config.time_budget_s:g}s reached"
    return ""


def _validate(
    learner: Learner, tasks: Sequence[Task], config: MetaTrainConfig, res: MetaTrainResult
) -> None:
    metrics = evaluate_tasks(learner, tasks)
    if config.select not in metrics:
        raise ConfigError(
            f"validation metric {config.select} is not defined for these tasks "
            f"(they give {', '.join(sorted(metrics)) or 'nothing'}); set select accordingly"
        )
    metric = metrics[config.select]
    res.curve.append((res.step, metric))
    if metric > res.best_metric or not res.best_state:  # (a NaN first metric still counts)
        res.best_metric, res.best_step, res.since_best = metric, res.step, 0
        res.seconds_to_best = res.wall_seconds
        res.best_state = learner_state(learner)
    else:
        res.since_best += 1
