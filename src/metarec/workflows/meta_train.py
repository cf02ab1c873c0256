"""Meta-training as one call: pretrained checkpoint + cold-start fold -> meta checkpoint + report.

This is what ``metarec meta-train`` calls. It composes the fold split, the tasks, the learner,
the loop and the writers, and owns none of their logic. The fold's train users are split once
more (seeded) into meta-training users and held-out meta-validation users; the fold's cold users
are only evaluated, after meta-training: with no adaptation (the base model, the support set as
history) and adapted by the meta-trained learner, by the scorer coldstart-ml uses
(``meta.cold_users.score_users``).

With ``ChoiceConfig.choose`` (the default) the meta-validation users are halved
(``workflows.adapt_choice``): one half early-stops meta-training and picks plain fine-tuning's
rate, the other judges no adaptation, plain fine-tuning and the meta-learner, and the meta
checkpoint records the choice (``meta.choice``), which ``metarec adapt`` and the service then
follow. When a baseline is chosen, the checkpoint holds the base model's weights (what was
judged; meta-training changed the learner's copy). The cold users' table gains a fine-tuning
row: the choice measured on users that made no choice.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metarec.data.schema import Dataset, Interactions
from metarec.data.splits import cold_start_folds, fold_validation_users
from metarec.errors import CheckpointError, ConfigError, DataError
from metarec.evaluation.report import (
    ResultRow,
    plot_learning_curves,
    write_metrics_json,
    write_report_md,
)
from metarec.meta.checkpoint import META_CONFIG, MetaCheckpoint, save_meta_checkpoint
from metarec.meta.choice import FINETUNE, NO_ADAPT, Candidate, Choice, choose
from metarec.meta.cold_users import ColdUser, MethodScores, cold_users, score_users
from metarec.meta.inference import adapt_latency, adapt_user, recommend
from metarec.meta.learners import Learner, LearnerSpec, build_learner, live_meta_tensors
from metarec.meta.tasks import Task, check_task_sizes, next_item_tasks
from metarec.meta.train import MetaTrainConfig, MetaTrainResult, meta_train
from metarec.training.checkpoint import CONFIG, Checkpoint, load_checkpoint
from metarec.workflows.adapt_choice import ChoiceConfig, Judged, judge, split_validation

METRICS = ("NDCG@10", "Recall@10")


@dataclass(frozen=True)
class FoldTasks:
    """Which users make the tasks: cold-start fold ``fold`` of ``n_folds`` (seed ``fold_seed``),
    ``valid_fraction`` of its train users held out for meta-validation; K-shot support and up
    to ``n_query`` query items per user."""

    k: int = 5
    n_query: int = 20
    fold: int = 0
    n_folds: int = 5
    fold_seed: int = 0
    valid_fraction: float = 0.1

    def __post_init__(self) -> None:
        try:
            check_task_sizes(self.k, self.n_query, 1)
        except ConfigError as e:
            raise ValueError(str(e)) from e
        if not 0 <= self.fold < self.n_folds:
            raise ValueError(f"fold must be in [0, n_folds={self.n_folds}), got {self.fold}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")


@dataclass
class MetaRunResult:
    learner: Learner
    train: MetaTrainResult
    rows: list[ResultRow]
    notes: list[str] = field(default_factory=list)
    out: Path | None = None
    report: Path | None = None
    choice: Choice | None = None  # None: not judged (--no-choose)
    measured: Candidate | None = None  # the chosen method against no adaptation on cold users


@dataclass
class FoldUsers:
    """One fold's users as tasks and cold users. ``valid``: the meta-validation tasks that
    early-stop meta-training (with a choice, the selection half only); ``select`` / ``judge``:
    the selection and judging halves as cold users (empty without a choice)."""

    train: list[Task]
    valid: list[Task]
    test: list[ColdUser]
    select: list[ColdUser] = field(default_factory=list)
    judge: list[ColdUser] = field(default_factory=list)


def fold_users(dataset: Dataset, settings: FoldTasks, max_len: int, halves: bool) -> FoldUsers:
    """Meta-train and meta-validation next-item tasks and the cold users of one fold, drawn as
    coldstart-ml draws them (``meta.cold_users``); with ``halves``, the meta-validation users
    split into selection and judging halves (``adapt_choice.split_validation``)."""
    folds = cold_start_folds(dataset, settings.n_folds, settings.fold_seed)
    fold = folds[settings.fold]
    valid_users, train_users = fold_validation_users(
        fold, settings.fold_seed, settings.valid_fraction
    )
    seed = (settings.fold_seed, settings.fold)

    def part(users: np.ndarray) -> Interactions:
        return fold.train.take(np.isin(fold.train.user, users))

    def tasks(inter: Interactions) -> list[Task]:
        return next_item_tasks(inter, settings.k, settings.n_query, max_len)

    def cold(inter: Interactions) -> list[ColdUser]:
        return cold_users(inter, settings.k, settings.n_query, dataset.n_items, seed)

    test = cold(fold.test)
    if not halves:
        return FoldUsers(tasks(part(train_users)), tasks(part(valid_users)), test)
    select, judged = split_validation(valid_users)
    return FoldUsers(
        tasks(part(train_users)),
        tasks(part(select)),
        test,
        cold(part(select)),
        cold(part(judged)),
    )


def meta_train_fold(
    base: str | Path,
    dataset: Dataset,
    spec: LearnerSpec,
    settings: FoldTasks,
    config: MetaTrainConfig,
    out: Path | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    choice: ChoiceConfig | None = None,
) -> MetaRunResult:
    """Meta-train ``spec`` from checkpoint ``base`` on one fold and (``choice``, by default)
    choose how to adapt; with ``out``, write the meta checkpoint, metrics.json, report.md and
    the validation curve there."""
    choice = choice or ChoiceConfig()
    _check_out(out, overwrite)
    ckpt = _base_checkpoint(Path(base), dataset)
    model = ckpt.model.to(config.resolved_device()).eval()
    users = fold_users(dataset, settings, model.config.max_len, choice.choose)
    log(
        f"tasks: {len(users.train)} meta-train, {len(users.valid)} meta-validation, "
        f"{len(users.judge)} judging, {len(users.test)} cold users"
    )
    if not users.train or not users.test:
        raise ConfigError(f"no user of fold {settings.fold} has more than k={settings.k} items")
    try:
        learner = build_learner(model, spec)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    base_model = copy.deepcopy(model) if choice.choose else None  # meta-training moves weights
    no_adapt = score_users(model, None, users.test)
    res = meta_train(learner, users.train, users.valid, config)
    log(f"meta-training stopped: {res.stopped}")
    adapted = score_users(model, learner, users.test)
    supports = [cu.support.tolist() for cu in users.test[:50]]
    cost = {k: v for k, v in adapt_latency(model, learner, supports).items() if k != "users"}
    rows = _rows(spec, settings, no_adapt.ranking(), adapted.ranking(), res, cost)
    run = MetaRunResult(learner, res, rows, _notes(ckpt, settings, spec))
    judged = None
    if base_model is not None:
        judged = judge(
            base_model, learner, spec.algorithm, spec.policy, users.select, users.judge, choice
        )
        log(f"chosen: {judged.choice.summary()}")
        _measure(run, judged, base_model, spec, settings, users.test, no_adapt, adapted)
    if out is not None:
        info = {"tasks": asdict(settings), "meta_train": asdict(config), "result": res.summary()}
        info["choice_settings"] = asdict(choice)
        learned = {"algorithm": spec.algorithm, "policy": spec.policy.name, "k": settings.k}
        meta = {**ckpt.meta, "base_checkpoint": str(base), "meta_trained": learned}
        kept = _kept(learner, spec, base_model, judged)
        saved = Checkpoint(kept.model, ckpt.model_type, ckpt.users, ckpt.items, meta)
        text = list(dataset.items.text)
        save_meta_checkpoint(out, saved, kept, spec, info, text, run.choice)
        run.out, run.report = out, write_meta_report(run, dataset, spec, config, out)
    return run


def _kept(
    learner: Learner, spec: LearnerSpec, base: nn.Module | None, judged: Judged | None
) -> Learner:
    """The learner to write: ``learner`` itself, or where a baseline was chosen the same
    learner over the base weights (its own tensors kept as a record), so the folder's model
    is the one that was judged."""
    if judged is None or base is None or judged.choice.method == spec.algorithm:
        return learner
    record = build_learner(base, spec)
    with torch.no_grad():
        for name, tensor in live_meta_tensors(record).items():
            tensor.copy_(live_meta_tensors(learner)[name])
    return record


def _measure(
    run: MetaRunResult,
    judged: Judged,
    base: nn.Module,
    spec: LearnerSpec,
    settings: FoldTasks,
    test: list[ColdUser],
    no_adapt: MethodScores,
    adapted: MethodScores,
) -> None:
    """Record the choice in ``run`` and measure it on the cold users, who made no choice: a
    fine-tuning row in the table, the chosen method's paired gain over no adaptation."""
    run.choice = judged.choice
    finetuned = score_users(base, judged.finetune, test)
    run.rows.insert(1, _finetune_row(finetuned, judged, settings))
    tested = {NO_ADAPT: no_adapt.ndcg, FINETUNE: finetuned.ndcg, spec.algorithm: adapted.ndcg}
    run.measured = choose(tested).candidate(judged.choice.method)
    run.notes += _choice_notes(judged, run.measured, len(test))


def _finetune_row(scores: MethodScores, judged: Judged, settings: FoldTasks) -> ResultRow:
    """Plain fine-tuning (the judged rate) on the cold users."""
    policy = judged.choice.candidate(FINETUNE).settings["policy"]
    setting = {"K": settings.k, "policy": policy, "fold": settings.fold}
    setting |= {"lr": judged.finetune_lr, "steps": judged.finetune.steps}
    ranking = scores.ranking()
    return ResultRow(FINETUNE, setting, {k: ranking[k] for k in METRICS})


def _choice_notes(judged: Judged, measured: Candidate, n_test: int) -> list[str]:
    c = judged.choice
    lines = [
        f"Chosen adaptation: {c.summary()}. Judged on {c.n_users} meta-validation users that "
        "neither early-stopped meta-training nor picked fine-tuning's rate; paired "
        "t-interval over users; a method is kept only where its interval lies above 0.",
    ]
    for cand in c.candidates:
        lines.append(f"Judging users, {cand.method}: NDCG@10 {cand.mean:.4f}, {_gain(cand)}")
    lines.append(
        f"Measured on the fold's {n_test} cold users, who took no part in the choice: "
        f"{measured.method} {_gain(measured)} over no adaptation."
    )
    return lines


def _gain(c: Candidate) -> str:
    ci = "-" if c.ci95 is None else f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}]"
    return f"gain {c.gain:+.4f}, 95% CI {ci}"


def write_meta_report(
    run: MetaRunResult, dataset: Dataset, spec: LearnerSpec, config: MetaTrainConfig, out: Path
) -> Path:
    """metrics.json + report.md (with the meta-validation curve) in ``out``."""
    curve = plot_learning_curves(
        {spec.algorithm: run.train.curve}, out / "meta_validation.png", xlabel="meta step"
    )
    write_metrics_json(out, "meta-train", dataset.name, run.rows, [config.seed])
    r = run.train
    intro = (
        f"Meta-training {spec.algorithm} with the {spec.policy.name!r} policy on {dataset.name}. "
        f"Best meta-validation {config.select} {r.best_metric:.4f} at step {r.best_step} of "
        f"{r.step} ({r.stopped}). Test rows: the fold's cold-start users, query items ranked "
        "over the full catalogue minus the support items."
    )
    plots = [(f"Meta-validation {config.select}", curve)]
    return write_report_md(out, "metarec meta-train", intro, run.rows, plots, run.notes)


def _check_out(out: Path | None, overwrite: bool) -> None:
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} exists and is not a folder")
    if not overwrite and ((out / CONFIG).exists() or (out / META_CONFIG).exists()):
        raise CheckpointError(f"{out} already holds a checkpoint; use --overwrite to replace it")


def _base_checkpoint(base: Path, dataset: Dataset) -> Checkpoint:
    ckpt = load_checkpoint(base)
    if ckpt.model_type != "seqrec":
        raise CheckpointError(
            f"{base} holds a {ckpt.model_type} model; meta-training needs a seqrec checkpoint "
            "(metarec pretrain)"
        )
    if ckpt.items != dataset.items.ids:
        raise CheckpointError(
            f"checkpoint {base} was trained on another item catalogue than {dataset.name} "
            f"({len(ckpt.items)} vs {dataset.n_items} items)"
        )
    return ckpt


def _rows(spec, settings, no_adapt, adapted, res, cost) -> list[ResultRow]:
    setting = {"K": settings.k, "policy": spec.policy.name, "fold": settings.fold}
    pick = lambda m: {k: m[k] for k in METRICS}  # noqa: E731
    train_cost = {
        "train_seconds": res.wall_seconds,
        "meta_steps": res.step,
        "best_step": res.best_step,
        **cost,
    }
    return [
        ResultRow(NO_ADAPT, {**setting, "policy": "-"}, pick(no_adapt)),
        ResultRow(spec.algorithm, setting, pick(adapted), train_cost),
    ]


def _notes(ckpt: Checkpoint, settings: FoldTasks, spec: LearnerSpec) -> list[str]:
    notes = [
        f"Learner: `{json.dumps(spec.to_dict())}`",
        f"Fold {settings.fold} of {settings.n_folds} (seed {settings.fold_seed}); "
        f"{settings.valid_fraction:g} of its train users held out for meta-validation.",
    ]
    expected = {"fold": settings.fold, "n_folds": settings.n_folds, "seed": settings.fold_seed}
    mark = ckpt.meta.get("cold_start_fold") or {}
    if {k: mark.get(k) for k in expected} != expected:
        notes.append(
            "The base checkpoint records no pretraining on this fold's train users only "
            "(cold_start_fold in its config.json): the cold users may have been seen in "
            "pretraining, so the test rows can be optimistic."
        )
    elif mark.get("valid_fraction") != settings.valid_fraction:
        notes.append(
            "The base checkpoint was pretrained with this fold's meta-validation users "
            "(pretrain --cold-start-fold holds them out by default): early stopping on them "
            "can be optimistic."
        )
    return notes


def item_indices(raw_ids: list[str], catalogue: list[str]) -> list[int]:
    """Indices of raw item ids; DataError naming the first id the catalogue lacks."""
    index = {raw: i for i, raw in enumerate(catalogue)}
    for raw in raw_ids:
        if raw not in index:
            example = f", e.g. {catalogue[0]!r}" if catalogue else ""
            raise DataError(
                f"item id {raw!r} is not in the model's catalogue ({len(catalogue)} items{example})"
            )
    return [index[raw] for raw in raw_ids]


def before_after(
    mc: MetaCheckpoint, raw_ids: list[str], top: int = 10, steps: int | None = None
) -> str:
    """The top-``top`` items from ``raw_ids`` as history, before and after adapting to them as
    the checkpoint chose (``MetaCheckpoint.adapter``), side by side with item text, under a
    line naming the chosen method with its gain and interval (what ``metarec adapt`` prints).
    When no adaptation was chosen both columns are the base model's ranking."""
    if top < 1 or (steps is not None and steps < 0):
        raise ConfigError(f"--top must be >= 1 and --steps >= 0, got {top} and {steps}")
    items = item_indices(raw_ids, mc.checkpoint.items)
    model = mc.checkpoint.model
    adapter = mc.adapter()
    before, _ = recommend(model, None, items, top)
    after, _ = recommend(model, adapt_user(model, adapter, items, steps), items, top)
    text = mc.item_text or [""] * len(mc.checkpoint.items)

    def cell(i: int) -> str:
        label = f"{mc.checkpoint.items[i]}  {text[i]}".strip()
        return label if len(label) <= 44 else label[:43] + "…"

    method = mc.choice.method if mc.choice is not None else mc.spec.algorithm
    name = (
        f"after ({method}, {mc.spec.policy.name})" if adapter is not None else f"after ({method})"
    )
    lines = [f"{'rank':>4}  {'before (no adaptation)':<44}  {name}"]
    for rank in range(max(len(before), len(after))):
        left = cell(int(before[rank])) if rank < len(before) else ""
        right = cell(int(after[rank])) if rank < len(after) else ""
        lines.append(f"{rank + 1:>4}  {left:<44}  {right}")
    history = ", ".join(cell(i) for i in items[-5:])
    note = "" if len(items) >= 2 else " (fewer than 2 items: nothing to adapt on)"
    head = f"{mc.describe_choice()}\nhistory ({len(items)} items, last 5): {history}{note}\n"
    return head + "\n".join(lines)
