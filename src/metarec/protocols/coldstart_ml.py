"""PROTOCOLS.md coldstart-ml: new users with K interactions, every adaptation method in one run.

Per fold (users split into ``n_folds`` with a seed; each fold in turn is the cold-start set):

1. split the other users (seeded) into validation users (``valid_fraction``) and training users;
2. pretrain SeqRec on the training users only (leave-one-out inside them for early stopping):
   the validation users stay as unseen as the cold users, so selecting on them is honest;
3. fine-tuning baselines (``finetune-all``, ``finetune-head``, ``lora``): the learning rate is
   chosen from a grid on the validation users at K = ``select_k``;
4. meta-learners (``maml``, ``fomaml``, ``reptile``, ``meta-sgd``), each from a copy of the
   pretrained model, meta-trained on the meta-training users' tasks at every K >= 2 of the
   protocol, early-stopped on the validation users' tasks at the same K;
5. every method at every K on the cold users: NDCG@10 / Recall@10 of the query items over the
   full catalogue minus the support items, AUC / log-loss of the like/click logit on the query
   items against as many never-seen items, adaptation time of each user.

The figures are averaged over folds with a 95% t-interval; the meta-learners are also compared
with ``no-adapt`` and ``finetune-all`` fold by fold (paired differences with their interval).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from metarec.adapt.policies import PolicyConfig, make_policy
from metarec.data.loaders.registry import load_dataset
from metarec.data.schema import Dataset
from metarec.data.splits import (
    cold_start_folds,
)
from metarec.errors import ConfigError, DataError
from metarec.meta.cold_users import (
    ColdUser,
    cold_users,
    score_popularity,
    score_users,
)
from metarec.meta.inference import FINETUNE_LRS, FINETUNE_STEPS, PolicyBundle
from metarec.meta.inner_optim import adamw
from metarec.meta.learners import LearnerSpec, build_learner, default_config
from metarec.meta.tasks import next_item_tasks
from metarec.meta.train import MetaTrainConfig, meta_train
from metarec.protocols.cold_folds import FoldRun, pretrain_fold, with_options
from metarec.protocols.coldstart_names import FINETUNE, FINETUNE_POLICY, META, METHODS
from metarec.protocols.coldstart_report import write_coldstart
from metarec.protocols.resources import peak_rss_mb, reset_peak_rss
from metarec.training.loop import TrainConfig
from metarec.workflows.pretrain import ModelSpec, item_text_features

PROTOCOL = "coldstart-ml"


@dataclass(frozen=True)
class ColdstartConfig:
    data: str | None = None  # dataset name or path; None = bundled ml-latest-small
    out: Path = Path("metarec-runs/coldstart-ml")
    n_folds: int = 5
    folds: tuple[int, ...] | None = None  # which folds to run; None: all
    fold_seed: int = 0
    ks: tuple[int, ...] = (1, 3, 5, 10, 20)
    n_query: int = 20
    methods: tuple[str, ...] = METHODS
    # the model the meta-learners were validated on: an MLP text adaptor (256 wide) with id
    # dropout 0.2 and random starts, not the product's pretraining recipe (DEFAULT_SPEC), which
    # warm-ml tuned later; kept so that figures stay comparable across runs
    spec: ModelSpec = field(default_factory=lambda: ModelSpec(text_hidden=256, id_dropout=0.2))
    pretrain: TrainConfig = field(
        default_factory=lambda: TrainConfig(batch_size=32, lr=2e-3, time_budget_s=180)
    )
    meta: MetaTrainConfig = field(
        default_factory=lambda: MetaTrainConfig(
            meta_batch_size=16, max_steps=1000, eval_every=20, patience=5, time_budget_s=120
        )
    )
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # the product's (head)
    # the meta-learners run with the product's inner loop (meta.core.INNER_LR x INNER_STEPS,
    # AdamW outer rate OUTER_LR), which this protocol validated; a value here overrides it
    # visibly for this run (--outer-lr). With one tower pass per meta step a 120 s budget holds
    # ~300 steps at two threads; at 1e-3 the meta-validation curve peaked by step 60 and fell
    # after (fold 0), hence 3e-4.
    inner_lr: float | None = None  # SGD inner rate (Meta-SGD: the initial rate)
    inner_steps: int | None = None
    outer_lr: float | None = None  # maml, fomaml, meta-sgd (Reptile steps by its own size)
    finetune_steps: int = FINETUNE_STEPS
    finetune_lrs: tuple[float, ...] = FINETUNE_LRS  # AdamW, chosen on validation users
    select_k: int = 5
    valid_fraction: float = 0.1
    # > 0: every adapting method's support loss adds like_weight x the binary cross-entropy of
    # liked (rating > 3) / disliked support items (meta.tasks.feedback_support): what the
    # history encoder never sees; meta-training tasks carry it too. 0: next-item only.
    like_weight: float = 0.0
    progress: bool = True
    quick: bool = False  # smoke-test budgets: marked in metrics.json, never a reported result
    title: str = "coldstart-ml: new users with K interactions"

    def __post_init__(self) -> None:
        if unknown := [m for m in self.methods if m not in METHODS]:
            raise ConfigError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
        if not self.ks or any(isinstance(k, bool) or k < 1 for k in self.ks):
            raise ConfigError(f"every K must be a positive integer, got {self.ks}")
        if self.select_k < 2 or self.select_k not in self.ks:
            raise ConfigError(f"select_k={self.select_k} must be one of ks {self.ks} and >= 2")
        if self.folds is not None and not all(0 <= f < self.n_folds for f in self.folds):
            raise ConfigError(f"folds {self.folds} must lie in [0, n_folds={self.n_folds})")
        if self.outer_lr is not None and not self.outer_lr > 0:
            raise ConfigError(f"outer_lr must be positive, got {self.outer_lr}")
        if (self.inner_steps is not None and self.inner_steps < 1) or self.finetune_steps < 1:
            raise ConfigError("inner_steps and finetune_steps must be >= 1")
        if not self.finetune_lrs:
            raise ConfigError("finetune_lrs must name at least one rate")
        if isinstance(self.like_weight, bool) or not self.like_weight >= 0:
            raise ConfigError(f"like_weight must be >= 0, got {self.like_weight!r}")

    def fold_list(self) -> tuple[int, ...]:
        return tuple(range(self.n_folds)) if self.folds is None else self.folds

    def inner_loop(self) -> dict[str, float]:
        """The inner loop this run's meta-learners use (MAML's: rate, steps, outer rate)."""
        config = self.learner_spec("maml").config
        return {k: getattr(config, k) for k in ("inner_lr", "inner_steps", "outer_lr")}

    def learner_spec(self, method: str) -> LearnerSpec:
        """The meta-learner a META method names: the registry's default config, with this
        run's overrides of the inner loop (if any)."""
        if method not in META:
            raise ValueError(f"{method} is not a meta-learner")
        config = default_config(method)
        names = {f.name for f in fields(config)}
        rate = "alpha_init" if "alpha_init" in names else "inner_lr"
        given = {rate: self.inner_lr, "inner_steps": self.inner_steps, "outer_lr": self.outer_lr}
        overrides = {k: v for k, v in given.items() if v is not None and k in names}
        return LearnerSpec(method, self.policy, replace(config, **overrides))


def run_coldstart_ml(cfg: ColdstartConfig, log: Callable[[str], None] = print) -> dict:
    """Run the protocol; returns {"results", "metrics_json", "report", "comparisons"}."""

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(cfg.data)
    log(f"dataset {dataset.describe()}")
    if cfg.like_weight > 0 and dataset.interactions.rating is None:
        raise DataError(
            f"--like-weight needs ratings (liked / disliked support items); {dataset.name} has none"
        )
    text = item_text_features(dataset, cfg.spec, cfg.progress)
    log(f"item text: {text.info.get('text_encode', '')}")
    folds = cold_start_folds(dataset, cfg.n_folds, cfg.fold_seed)
    runs = []
    for index in cfg.fold_list():
        runs.append(run_fold(cfg, dataset, folds[index], text, log))
    return write_coldstart(cfg, dataset, runs, out)


def run_fold(cfg: ColdstartConfig, dataset: Dataset, fold, text, log) -> FoldRun:
    """Pretrain on the fold's train users, then every method on its cold users."""
    run = FoldRun(fold.index)
    say = lambda msg: log(f"[fold {fold.index}] {msg}")  # noqa: E731
    setup = pretrain_fold(cfg, dataset, fold, text, run)
    base, valid_inter, meta_inter = setup.base, setup.valid_inter, setup.train.interactions
    n_valid, train_users = len(setup.valid_users), setup.train_users
    say(
        f"pretrained on {len(train_users)} users: valid NDCG@10 "
        f"{run.pretrain['valid_NDCG@10']:.4f} in {run.pretrain['train_seconds']:.0f} s"
    )
    seed = (cfg.fold_seed, fold.index)
    valid_users = cold_users(valid_inter, cfg.select_k, cfg.n_query, dataset.n_items, seed)
    cold = {k: cold_users(fold.test, k, cfg.n_query, dataset.n_items, seed) for k in cfg.ks}
    say(f"{len(fold.test_users)} cold users; {n_valid} validation users")

    if "popularity" in cfg.methods:
        counts = np.bincount(fold.train.item, minlength=dataset.n_items)
        for k in cfg.ks:
            run.scores[("popularity", k)] = score_popularity(counts, cold[k])
    if "no-adapt" in cfg.methods:
        for k in cfg.ks:
            run.scores[("no-adapt", k)] = score_users(base, None, cold[k])
    for method in (m for m in FINETUNE if m in cfg.methods):
        reset_peak_rss()
        start = time.perf_counter()
        bundle, lr = _choose_finetune(cfg, base, FINETUNE_POLICY[method], valid_users)
        run.chosen_lr[method] = lr
        run.cost[method] = {"train_seconds": time.perf_counter() - start}
        _score_all(run, method, base, bundle, cold, cfg.like_weight)
        run.cost[method]["peak_rss_mb"] = peak_rss_mb()
        say(f"{method} (AdamW lr {lr:g}): {_brief(run, method, cfg.select_k)}")
    meta_tasks = _meta_tasks(cfg, meta_inter)
    valid_tasks = _meta_tasks(cfg, valid_inter)  # every K >= 2: less noise than one K
    for method in (m for m in META if m in cfg.methods):
        reset_peak_rss()
        model = copy.deepcopy(base)
        learner = build_learner(model, cfg.learner_spec(method))
        meta_cfg = replace(cfg.meta, progress=cfg.progress, seed=cfg.fold_seed + fold.index)
        res = meta_train(learner, meta_tasks, valid_tasks, meta_cfg)
        run.curves[method] = res.curve
        run.cost[method] = {
            "train_seconds": res.wall_seconds,
            "seconds_to_best": res.seconds_to_best,
            "meta_steps": float(res.step),
            "best_step": float(res.best_step),
        }
        _score_all(run, method, model.eval(), learner, cold, cfg.like_weight)
        run.cost[method]["peak_rss_mb"] = peak_rss_mb()
        say(f"{method}: {res.stopped}; {_brief(run, method, cfg.select_k)}")
    return run


def _meta_tasks(cfg: ColdstartConfig, inter) -> list:
    """Next-item tasks of every user at every K >= 2 of the protocol."""
    tasks = []
    for k in (k for k in cfg.ks if k >= 2):
        tasks += next_item_tasks(inter, k, cfg.n_query, cfg.spec.max_len, cfg.like_weight)
    if not tasks:
        raise ConfigError("no meta-training user has more than the smallest K interactions")
    return tasks


def _choose_finetune(
    cfg: ColdstartConfig, base, policy_name: str, valid_users: list[ColdUser]
) -> tuple[PolicyBundle, float]:
    """The fine-tuning bundle whose AdamW learning rate scores best on the validation users."""
    policy = make_policy(PolicyConfig(policy_name), base)  # each policy's defaults
    best: tuple[float, PolicyBundle | None, float] = (-1.0, None, 0.0)
    for lr in cfg.finetune_lrs:
        bundle = PolicyBundle(policy, adamw(lr), cfg.finetune_steps)
        scores = score_users(base, bundle, valid_users, like_weight=cfg.like_weight)
        ndcg = float(np.mean(scores.ndcg))
        if ndcg > best[0]:
            best = (ndcg, bundle, lr)
    assert best[1] is not None
    return best[1], best[2]


def _score_all(
    run: FoldRun,
    method: str,
    model,
    adapter,
    cold: dict[int, list[ColdUser]],
    like_weight: float = 0.0,
):
    """Every K; at K = 1 there is no transition to adapt on and the adapter's start is used
    (a meta-learned initialisation still counts there)."""
    for k, users in cold.items():
        run.scores[(method, k)] = score_users(model, adapter, users, like_weight=like_weight)


def _brief(run: FoldRun, method: str, k: int) -> str:
    s = run.scores.get((method, k))
    return "" if s is None else f"NDCG@10 at K={k}: {np.mean(s.ndcg):.4f}"


def quick_config(cfg: ColdstartConfig) -> ColdstartConfig:
    """coldstart-ml smoke-test budgets: two pretraining epochs, four meta steps, one fine-tuning
    learning rate. Never the configuration that is reported."""
    return replace(
        cfg,
        quick=True,
        title=cfg.title + " (quick smoke test: not a reported result)",
        pretrain=replace(cfg.pretrain, max_epochs=2, time_budget_s=None),
        meta=replace(cfg.meta, max_steps=4, eval_every=2, time_budget_s=None),
        finetune_lrs=cfg.finetune_lrs[1:2] or cfg.finetune_lrs,
    )


def config_from_options(
    out: Path,
    data: str | None,
    options: dict,
    pretrain_budget: float,
    meta_budget: float,
    quick: bool,
) -> ColdstartConfig:
    """What ``metarec bench coldstart-ml`` runs: flags left at None keep the protocol's value.
    ``options``: n_folds, fold_seed, folds, ks, methods, policy (a name), outer_lr,
    like_weight."""
    try:
        cfg = ColdstartConfig(
            data=data, out=out, n_folds=options["n_folds"], fold_seed=options["fold_seed"]
        )
        cfg = replace(
            with_options(cfg, options, pretrain_budget, meta_budget),
            outer_lr=options["outer_lr"],
            like_weight=options.get("like_weight") or 0.0,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return quick_config(cfg) if quick else cfg
