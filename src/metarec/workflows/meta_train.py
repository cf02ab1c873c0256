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
from collections.abc import Callable, Sequence
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
from metarec.meta.choice import FINETUNE, NO_ADAPT, Candidate, Choice, gain_of
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
    trained: dict[str, MetaTrainResult] = field(default_factory=dict)  # every learner's run


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


@dataclass
class Trained:
    """One meta-learner after meta-training: its spec, learner, run and cold-user scores."""

    spec: LearnerSpec
    learner: Learner
    result: MetaTrainResult
    scores: MethodScores


def meta_train_fold(
    base: str | Path,
    dataset: Dataset,
    spec: LearnerSpec | Sequence[LearnerSpec],
    settings: FoldTasks,
    config: MetaTrainConfig,
    out: Path | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    choice: ChoiceConfig | None = None,
) -> MetaRunResult:
    """Meta-train ``spec`` (or each of several specs, each from the pretrained weights with
    ``config``'s budget) from checkpoint ``base`` on one fold and (``choice``, by default)
    choose how to adapt among no adaptation, fine-tuning (over the first spec's policy) and
    every meta-learner trained; with ``out``, write the meta checkpoint (the chosen learner),
    metrics.json, report.md and the validation curves there."""
    choice = choice or ChoiceConfig()
    specs = _specs(spec)
    if len(specs) > 1 and not choice.choose:
        names = ", ".join(s.algorithm for s in specs)
        raise ConfigError(f"several algorithms ({names}) need the choice: drop --no-choose")
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
    base_model = model  # each learner meta-trains a copy of it (_train_one)
    no_adapt = score_users(base_model, None, users.test)
    trained = [_train_one(base_model, s, users, config, log) for s in specs]
    run = MetaRunResult(trained[0].learner, trained[0].result, [], _notes(ckpt, settings, specs))
    run.trained = {t.spec.algorithm: t.result for t in trained}
    run.rows = _rows(settings, no_adapt.ranking(), trained, users.test)
    judged = None
    if choice.choose:
        learners = {t.spec.algorithm: t.learner for t in trained}
        judged = judge(base_model, learners, specs[0].policy, users.select, users.judge, choice)
        log(f"chosen: {judged.choice.summary()}")
        _measure(run, judged, base_model, settings, users.test, no_adapt, trained)
    kept = _kept(trained, base_model, judged)
    run.learner, run.train = kept.learner, kept.result
    if out is not None:
        info = {
            "tasks": asdict(settings),
            "meta_train": asdict(config),
            "result": kept.result.summary(),
        }
        info["choice_settings"] = asdict(choice)
        if len(trained) > 1:
            info["trained"] = {t.spec.algorithm: t.result.summary() for t in trained}
        learned = {
            "algorithm": kept.spec.algorithm,
            "policy": kept.spec.policy.name,
            "k": settings.k,
        }
        meta = {**ckpt.meta, "base_checkpoint": str(base), "meta_trained": learned}
        saved = Checkpoint(kept.learner.model, ckpt.model_type, ckpt.users, ckpt.items, meta)
        text = list(dataset.items.text)
        save_meta_checkpoint(out, saved, kept.learner, kept.spec, info, text, run.choice)
        run.out, run.report = out, write_meta_report(run, dataset, trained, config, out)
    return run


def _specs(spec: LearnerSpec | Sequence[LearnerSpec]) -> tuple[LearnerSpec, ...]:
    specs = (spec,) if isinstance(spec, LearnerSpec) else tuple(spec)
    if not specs:
        raise ConfigError("meta-train needs at least one algorithm")
    names = [s.algorithm for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"each algorithm may be meta-trained once, got {names}")
    return specs


def _train_one(
    base: nn.Module,
    spec: LearnerSpec,
    users: FoldUsers,
    config: MetaTrainConfig,
    log: Callable[[str], None],
) -> Trained:
    """Meta-train ``spec`` on a copy of ``base`` and score it on the cold users."""
    try:
        learner = build_learner(copy.deepcopy(base), spec)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    log(f"meta-training {spec.algorithm} ({spec.policy.name} policy)")
    res = meta_train(learner, users.train, users.valid, config)
    log(f"{spec.algorithm}: meta-training stopped: {res.stopped}")
    return Trained(spec, learner, res, score_users(learner.model, learner, users.test))


def _kept(trained: list[Trained], base: nn.Module, judged: Judged | None) -> Trained:
    """The meta-learner to write: the chosen one; unjudged, the only (or first) one; where a
    baseline was chosen, the meta-learner with the largest judged gain over the base weights
    (its own tensors kept as a record), so the folder's model is the one that was judged."""
    if judged is None:
        return trained[0]
    by_name = {t.spec.algorithm: t for t in trained}
    if judged.choice.method in by_name:
        return by_name[judged.choice.method]
    best = max((judged.choice.candidate(name) for name in by_name), key=lambda c: c.gain).method
    t = by_name[best]
    record = build_learner(copy.deepcopy(base), t.spec)
    with torch.no_grad():
        for name, tensor in live_meta_tensors(record).items():
            tensor.copy_(live_meta_tensors(t.learner)[name])
    return Trained(t.spec, record, t.result, t.scores)


def _measure(
    run: MetaRunResult,
    judged: Judged,
    base: nn.Module,
    settings: FoldTasks,
    test: list[ColdUser],
    no_adapt: MethodScores,
    trained: list[Trained],
) -> None:
    """Record the choice in ``run`` and measure it on the cold users, who made no choice: a
    fine-tuning row in the table, the chosen method's paired gain over no adaptation (a plain
    95% interval: one method, chosen before)."""
    run.choice = judged.choice
    finetuned = score_users(base, judged.finetune, test)
    run.rows.insert(1, _finetune_row(finetuned, judged, settings))
    tested = {NO_ADAPT: no_adapt.ndcg, FINETUNE: finetuned.ndcg}
    tested |= {t.spec.algorithm: t.scores.ndcg for t in trained}
    method = judged.choice.method
    run.measured = gain_of(method, tested[method], no_adapt.ndcg)
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
    run: MetaRunResult,
    dataset: Dataset,
    trained: Sequence[Trained],
    config: MetaTrainConfig,
    out: Path,
) -> Path:
    """metrics.json + report.md (with every learner's meta-validation curve) in ``out``."""
    curve = plot_learning_curves(
        {t.spec.algorithm: t.result.curve for t in trained},
        out / "meta_validation.png",
        xlabel="meta step",
    )
    write_metrics_json(out, "meta-train", dataset.name, run.rows, [config.seed])
    lines = [
        f"{t.spec.algorithm} ({t.spec.policy.name!r} policy): best meta-validation "
        f"{config.select} {t.result.best_metric:.4f} at step {t.result.best_step} of "
        f"{t.result.step} ({t.result.stopped})."
        for t in trained
    ]
    intro = (
        f"Meta-training on {dataset.name}. {' '.join(lines)} Test rows: the fold's cold-start "
        "users, query items ranked over the full catalogue minus the support items."
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


def _rows(
    settings: FoldTasks, no_adapt: dict, trained: list[Trained], test: list[ColdUser]
) -> list[ResultRow]:
    """No adaptation, then each meta-learner with its meta-training and adaptation cost."""
    setting = {"K": settings.k, "fold": settings.fold}
    pick = lambda m: {k: m[k] for k in METRICS}  # noqa: E731
    supports = [cu.support.tolist() for cu in test[:50]]
    rows = [ResultRow(NO_ADAPT, {**setting, "policy": "-"}, pick(no_adapt))]
    for t in trained:
        latency = adapt_latency(t.learner.model, t.learner, supports)
        cost = {
            "train_seconds": t.result.wall_seconds,
            "meta_steps": t.result.step,
            "best_step": t.result.best_step,
            **{k: v for k, v in latency.items() if k != "users"},
        }
        row_setting = {**setting, "policy": t.spec.policy.name}
        rows.append(ResultRow(t.spec.algorithm, row_setting, pick(t.scores.ranking()), cost))
    return rows


def _notes(ckpt: Checkpoint, settings: FoldTasks, specs: Sequence[LearnerSpec]) -> list[str]:
    notes = [f"Learner: `{json.dumps(spec.to_dict())}`" for spec in specs]
    if len(specs) > 1:
        notes.append(
            f"{len(specs)} meta-learners, each meta-trained from the pretrained weights with "
            "its own budget; the table shows every one on the cold users."
        )
    notes += [
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
