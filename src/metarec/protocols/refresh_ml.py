"""refresh-ml: drift and periodic re-training, every update method in one run.

The dataset is cut by global time into ``n_updates + 2`` periods of equal interaction count
(``data.periods``). A base SeqRec is trained on period 0; at each period t = 1..P the model of
period t - 1 is updated with period t's data by every method and tested on period t + 1. Only
rows up to period t ever reach the period-t model (weights, co-occurrence start, selection,
mixing coefficients).

Inside every update period the most recent ``valid_frac`` of its rows (global time) is the
validation window: up to ``n_test`` interactions there of each user with earlier rows (each
predicted from everything before it, as the test) pick the epoch, and those rows are not
training targets. Test: up to ``n_test`` interactions of period t + 1 per
user seen before, each predicted from everything before it (the period-t model, never updated
on period t + 1; histories include the earlier test-period items, as a deployed model's would),
ranked over the full catalogue minus the user's whole earlier history; a user's figure is the
mean over its targets, a period's the mean over users with a 95% t-interval over users.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from metarec.data.loaders.registry import load_dataset
from metarec.data.periods import concat_all, dataset_periods, global_time_order, target_windows
from metarec.data.schema import Dataset, Interactions
from metarec.data.sequences import group_positions, in_time_order
from metarec.data.windows import trim_padding
from metarec.errors import ConfigError
from metarec.evaluation.metrics import metrics_from_ranks
from metarec.evaluation.next_item import (
    EvalSet,
    build_eval_set,
    concat_eval_sets,
    model_device,
    rank_targets,
)
from metarec.meta.mixing import (
    MixingConfig,
    apply_mixing,
    coefficients,
    fit_logits,
    initial_logits,
    parameter_names,
)
from metarec.models import SeqBatch, SeqRec
from metarec.protocols.refresh_ml_report import write_refresh_ml
from metarec.training.loop import TrainConfig, make_optimizer
from metarec.training.pretrain import NextItemData, train_seqrec
from metarec.workflows.pretrain import ModelSpec, TextFeatures, pretrain_seqrec

PROTOCOL = "refresh-ml"
METHODS = ("no-update", "full-retrain", "finetune-new", "finetune-replay", "meta-update")
COMPARE = (("meta-update", "full-retrain"), ("meta-update", "finetune-new"))


@dataclass(frozen=True)
class RefreshMLConfig:
    data: str | None = None  # dataset name or path; None = bundled ml-latest-small
    out: Path = Path("metarec-runs/refresh-ml")
    seed: int = 0
    n_updates: int = 4  # P: update periods after the base period (P + 2 periods in all)
    methods: tuple[str, ...] = METHODS
    # id-only SeqRec with the product's co-occurrence start (dim 64, 2 layers): every method
    # retrains or fine-tunes it several times, so no text encoder; the catalogue is the whole
    # dataset's (items first seen later keep their untrained vectors until they appear)
    spec: ModelSpec = field(
        default_factory=lambda: ModelSpec(item_repr="id", id_init="cooccurrence")
    )
    # base and full-retrain: the same settings, from scratch (cosine decay, capped epochs)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            batch_size=32, lr=2e-3, schedule="cosine", max_epochs=6, time_budget_s=60
        )
    )
    # finetune-new, finetune-replay and the fine-tuning inside meta-update: refresh's rate, the
    # best of the trained epochs (not the start: on ml-latest-small the validation window holds
    # a handful of users, its NDCG@10 is often 0 at every epoch, and a validated start then won
    # every tie, so an update changed nothing)
    finetune: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            batch_size=32, lr=5e-4, max_epochs=4, patience=2, time_budget_s=30
        )
    )
    mixing: MixingConfig = field(default_factory=MixingConfig)
    mix_batch: int = 128  # windows per mixing step
    valid_frac: float = 0.1  # the latest fraction of each update period: validation window
    replay_ratio: float = 1.0  # finetune-replay: older targets drawn per new target
    n_test: int = 10  # test targets per user in the next period
    max_users: int | None = None  # a seeded sample of users (a small slice for smoke tests)
    progress: bool = False
    quick: bool = False  # smoke-test budgets: marked in metrics.json, never a reported result
    title: str = "refresh-ml: drift and periodic re-training"

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
        if self.n_updates < 1:
            raise ConfigError(f"n_updates must be >= 1, got {self.n_updates}")
        if not 0 < self.valid_frac < 1:
            raise ConfigError(f"valid_frac must be in (0, 1), got {self.valid_frac}")
        if self.replay_ratio < 0 or self.n_test < 1 or self.mix_batch < 1:
            raise ConfigError("replay_ratio must be >= 0, n_test and mix_batch >= 1")


@dataclass(frozen=True, eq=False)
class Period:
    """One period's rows: ``fit`` (training targets) then ``valid`` (its latest rows)."""

    fit: Interactions
    valid: Interactions

    @property
    def rows(self) -> Interactions:
        return self.fit.concat(self.valid)


@dataclass
class PeriodScore:
    """Per-user NDCG@10 / HR@10 of one model on one test period (users in ascending order)."""

    users: np.ndarray
    ndcg: np.ndarray
    hr: np.ndarray
    update_seconds: float


def split_period(rows: Interactions, valid_frac: float) -> Period:
    """The latest ``ceil(valid_frac * n)`` rows in global time are the validation window."""
    order = global_time_order(rows)
    n_valid = min(len(rows) - 1, math.ceil(valid_frac * len(rows)))
    is_valid = np.zeros(len(rows), dtype=bool)
    is_valid[order[len(rows) - n_valid :]] = True
    return Period(rows.take(~is_valid), rows.take(is_valid))


def first_rows(rows: Interactions, known: Interactions) -> Interactions:
    """Each user's first row in ``rows`` (time order), for users who have rows in ``known``."""
    rows = in_time_order(rows.take(np.isin(rows.user, np.unique(known.user))))
    return rows.take(group_positions(rows.user) == 0)


def update_data(
    history: Interactions,
    is_target: np.ndarray,
    valid: Interactions,
    ds: Dataset,
    max_len: int,
    n_valid: int,
) -> NextItemData:
    """Training windows over ``history`` with only ``is_target`` rows as targets; validation on
    up to ``n_valid`` rows of ``valid`` per user known in ``history``, each predicted from
    everything before it (as the test; ``test`` repeats it: unused)."""
    users, inputs, targets = target_windows(history, is_target, ds.n_users, max_len)
    sets = next_period_sets(history, valid, ds.n_users, max_len, n_valid)
    es = (
        concat_eval_sets(sets)
        if sets
        else build_eval_set(history, first_rows(valid, history), ds.n_users, max_len)
    )
    return NextItemData(
        ds.n_users, ds.n_items, max_len, history.take(is_target), users, inputs, targets, es, es
    )


def next_period_sets(
    past: Interactions, future: Interactions, n_users: int, max_len: int, n_test: int
) -> list[EvalSet]:
    """Eval set j (j < n_test): each known user's j-th row of ``future``, history = ``past``
    plus that user's earlier ``future`` rows."""
    fut = in_time_order(future.take(np.isin(future.user, np.unique(past.user))))
    pos = group_positions(fut.user)
    sets = []
    for j in range(n_test):
        target = fut.take(pos == j)
        if len(target) == 0:
            break
        sets.append(build_eval_set(past.concat(fut.take(pos < j)), target, n_users, max_len))
    return sets


def score_period(model: torch.nn.Module, sets: list[EvalSet], n_items: int) -> PeriodScore:
    """Per-user mean NDCG@10 and HR@10 over the user's test targets."""
    device = model_device(model)
    was = model.training
    model.eval()
    users, ndcg, hr = [], [], []
    try:
        for es in sets:
            per_row = metrics_from_ranks(
                torch.from_numpy(rank_targets(model.score, es, n_items, device=device))
            )
            users.append(es.users)
            ndcg.append(per_row["NDCG@10"].numpy())
            hr.append(per_row["HR@10"].numpy())
    finally:
        model.train(was)
    u = np.concatenate(users)
    uniq, inv = np.unique(u, return_inverse=True)
    counts = np.bincount(inv)

    def per_user(v: list[np.ndarray]) -> np.ndarray:
        return np.bincount(inv, weights=np.concatenate(v)) / counts

    return PeriodScore(uniq, per_user(ndcg), per_user(hr), 0.0)


class Updater:
    """Trains, fine-tunes and mixes models of one run; holds the data every method shares."""

    def __init__(self, cfg: RefreshMLConfig, ds: Dataset, periods: list[Period]):
        self.cfg, self.ds, self.periods = cfg, ds, periods
        self.max_len = cfg.spec.max_len

    def past(self, t: int) -> Interactions:
        """Every row of periods 0..t-1."""
        return concat_all([p.rows for p in self.periods[:t]])

    def update_rows(
        self, t: int, new_only: bool, replay: float = 0.0
    ) -> tuple[Interactions, np.ndarray]:
        """(history, is_target) of the update at period t: every row of periods 0..t-1 and
        period t's fit rows; targets all of them, or (``new_only``) period t's fit rows plus
        ``replay`` x as many older rows drawn uniformly (seeded by (seed, t))."""
        p = self.periods[t]
        history = p.fit if t == 0 else self.past(t).concat(p.fit)
        if not new_only:
            return history, np.ones(len(history), bool)
        is_target = np.r_[np.zeros(len(history) - len(p.fit), bool), np.ones(len(p.fit), bool)]
        n_replay = min(len(history) - len(p.fit), round(replay * len(p.fit)))
        if n_replay:
            rng = np.random.default_rng([self.cfg.seed, t])
            is_target[rng.choice(len(history) - len(p.fit), n_replay, replace=False)] = True
        return history, is_target

    def future_rows(self, t: int) -> tuple[Interactions, np.ndarray]:
        """(history, is_target) the mixing coefficients are fitted on at update t: period 1's
        validation window at t = 1 (its held-out split), every row of period t at t >= 2 (the
        future of the transition t-2 -> t-1); histories are every row before."""
        p = self.periods[t]
        future = p.valid if t == 1 else p.rows
        history = self.past(t).concat(p.fit).concat(p.valid)  # the rows of periods 0..t
        flags = np.r_[np.zeros(len(history) - len(future), bool), np.ones(len(future), bool)]
        return history, flags

    def from_scratch(self, t: int) -> SeqRec:
        """Trained from scratch on every row before period t's validation window."""
        history, is_target = self.update_rows(t, new_only=False)
        data = update_data(
            history, is_target, self.periods[t].valid, self.ds, self.max_len, self.cfg.n_test
        )
        train = replace(self.cfg.train, seed=self.cfg.seed, progress=self.cfg.progress)
        text = TextFeatures(None, {"text_model": None})
        return pretrain_seqrec(self.ds, data, self.cfg.spec, train, text=text).model

    def finetune(self, model: SeqRec, t: int, replay: float = 0.0) -> SeqRec:
        """A copy of ``model`` fine-tuned on period t's fit rows (plus ``replay`` x as many
        older rows), histories over everything before."""
        history, is_target = self.update_rows(t, new_only=True, replay=replay)
        data = update_data(
            history, is_target, self.periods[t].valid, self.ds, self.max_len, self.cfg.n_test
        )
        model = copy.deepcopy(model)
        config = replace(self.cfg.finetune, seed=self.cfg.seed + t, progress=self.cfg.progress)
        _, best = train_seqrec(model, data, config, optimizer=make_optimizer(model, config))
        model.load_state_dict(best)
        return model.eval()

    def mixing_batches(self, history: Interactions, is_target: np.ndarray, t: int) -> Callable:
        """Step -> a SeqBatch of ``mix_batch`` windows whose targets are the flagged rows."""
        users, inputs, targets = target_windows(history, is_target, self.ds.n_users, self.max_len)
        if len(users) == 0:
            raise ConfigError(f"period {t} has no target to fit the mixing coefficients on")

        def batch_at(step: int) -> SeqBatch:
            rng = np.random.default_rng([self.cfg.seed, t, step])
            idx = rng.choice(len(users), min(self.cfg.mix_batch, len(users)), replace=False)
            x, y = trim_padding(inputs[idx], targets[idx])
            return SeqBatch(torch.from_numpy(users[idx]), torch.from_numpy(x), torch.from_numpy(y))

        return batch_at

    def future_batches(self, t: int) -> Callable:
        return self.mixing_batches(*self.future_rows(t), t)


@dataclass
class MetaState:
    """meta-update's memory between updates: the last transition (old -> fine-tuned weights)
    and the mixing logits fitted so far."""

    logits: dict[str, torch.Tensor]
    old: dict[str, torch.Tensor] | None = None
    ft: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def meta_update(upd: Updater, model: SeqRec, t: int, state: MetaState) -> SeqRec:
    """theta_t = theta_{t-1} + a (ft_t - theta_{t-1}); a fitted on the previous transition
    (theta_{t-2} -> ft_{t-1}) against period t, or at t = 1 on (base -> ft_1) against period 1's
    validation window, starting from the logits of the update before."""
    ft = upd.finetune(model, t)
    old_w = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ft_w = {k: v.detach().clone() for k, v in ft.state_dict().items()}
    fit_old, fit_ft = (old_w, ft_w) if t == 1 else (state.old, state.ft)
    state.logits, _ = fit_logits(
        model, fit_old, fit_ft, state.logits, upd.future_batches(t), upd.cfg.mixing
    )
    state.old, state.ft = old_w, ft_w
    state.history.append(coefficients(state.logits))
    return apply_mixing(copy.deepcopy(model), old_w, ft_w, state.logits).eval()


def run_refresh_ml(cfg: RefreshMLConfig, log: Callable[[str], None] = print) -> dict:
    """Run the protocol; returns {"results", "comparisons", "metrics_json", "report", "plots"}."""
    torch.manual_seed(cfg.seed)
    ds = _slice(load_dataset(cfg.data), cfg.max_users, cfg.seed)
    log(f"dataset {ds.describe()}")
    parts = dataset_periods(ds, cfg.n_updates + 2)
    periods = [split_period(p, cfg.valid_frac) for p in parts]
    upd = Updater(cfg, ds, periods)
    start = time.perf_counter()
    base = upd.from_scratch(0).eval()
    base_seconds = time.perf_counter() - start
    log(f"base trained on period 0 in {base_seconds:.0f} s")
    models = {m: base for m in cfg.methods}
    meta = MetaState(initial_logits(parameter_names(base), cfg.mixing.init_logit))
    scores: dict[str, list[PeriodScore]] = {m: [] for m in cfg.methods}
    for t in range(1, cfg.n_updates + 1):
        sets = next_period_sets(upd.past(t + 1), parts[t + 1], ds.n_users, upd.max_len, cfg.n_test)
        for method in cfg.methods:
            start = time.perf_counter()
            models[method] = _update(method, upd, models[method], t, meta)
            seconds = time.perf_counter() - start
            score = score_period(models[method], sets, ds.n_items)
            score.update_seconds = seconds
            scores[method].append(score)
            log(
                f"period {t}: {method} NDCG@10 {score.ndcg.mean():.4f} over "
                f"{len(score.users)} users, update {seconds:.1f} s"
            )
    info = {
        "periods": [len(p) for p in parts],
        "base_seconds": base_seconds,
        "mixing_coefficients": meta.history,
    }
    return write_refresh_ml(cfg, ds, scores, info, COMPARE)


def _update(method: str, upd: Updater, model: SeqRec, t: int, meta: MetaState) -> SeqRec:
    if method == "no-update":
        return model
    if method == "full-retrain":
        return upd.from_scratch(t).eval()
    if method == "finetune-new":
        return upd.finetune(model, t)
    if method == "finetune-replay":
        return upd.finetune(model, t, replay=upd.cfg.replay_ratio)
    return meta_update(upd, model, t, meta)


def _slice(ds: Dataset, max_users: int | None, seed: int) -> Dataset:
    """``ds`` with a seeded sample of ``max_users`` users (all their rows), or unchanged."""
    users = np.unique(ds.interactions.user)
    if max_users is None or max_users >= len(users):
        return ds
    kept = np.random.default_rng(seed).choice(users, max_users, replace=False)
    return ds.with_interactions(ds.interactions.take(np.isin(ds.interactions.user, kept)))


def quick_config(cfg: RefreshMLConfig) -> RefreshMLConfig:
    """Smoke-test budgets on a slice of 120 users. Never the configuration that is reported."""
    return replace(
        cfg,
        quick=True,
        title=cfg.title + " (quick smoke test: not a reported result)",
        max_users=120,
        spec=replace(cfg.spec, dim=16, n_heads=1, n_layers=1),
        train=replace(cfg.train, batch_size=256, max_epochs=1, time_budget_s=None),
        finetune=replace(cfg.finetune, batch_size=256, max_epochs=1, time_budget_s=None),
        mixing=replace(cfg.mixing, steps=3),
        n_test=3,
    )


def config_from_options(
    out: Path, data: str | None, seed: int, n_updates: int, quick: bool
) -> RefreshMLConfig:
    """What ``metarec bench refresh-ml`` runs, from its flags."""
    cfg = RefreshMLConfig(data=data, out=out, seed=seed, n_updates=n_updates)
    return quick_config(cfg) if quick else cfg
