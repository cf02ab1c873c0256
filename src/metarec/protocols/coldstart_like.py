"""coldstart-like (docs/protocols.md): a new user's first K rated items; predict like on the next.

Per fold (the users split into ``n_folds``, seeded, as coldstart-ml; each fold in turn is cold):

1. the other users split (seeded) into validation users and training users, as coldstart-ml;
2. SeqRec pretrained (next item, implicit: no rating) on the training users only, then frozen:
   it gives every item a vector and every history a user vector (``like.cold_start``);
3. a ``LikeNet`` (MeLU-shaped MLP over [h, v, h * v, popularity]) fitted on every labelled row
   of the training users' tasks at every K: the ``no-adapt`` like model and the start of every
   adapted one; the item-only view (MeLU's input: no history vector) is fitted the same way;
4. fine-tuning (``finetune-all``, ``finetune-head``: AdamW, ``finetune_steps`` steps on the
   support rows, the rate chosen from a grid on the validation users at ``select_k``;
   ``finetune-head-sgd``: the product's plain inner loop, SGD 0.05 x 3 on the head, which is
   every meta-learner's starting point);
   meta-learners (every one of the registry, over the net's head = MeLU's decision and output
   layers; ``melu``: MAML over the item-only net, MeLU's setting) meta-trained on the training
   users' like tasks at every K, early-stopped on the validation users' pooled AUC;
5. every method at every K on the cold users: AUC (pooled), within-user AUC and log-loss of the
   query items' like labels, NDCG@10 of the liked query items over the full catalogue minus the
   support items (ranked by log P(next item) + log P(like)); baselines ``history-mean`` (the
   mean support rating), ``item-mean`` (the item's shrunk mean rating among training users),
   ``next-item`` (the frozen SeqRec alone).

Figures are means over folds with 95% t-intervals; every adapted method is compared with
``no-adapt``, the fine-tuning baselines and ``history-mean`` fold by fold (paired intervals).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from metarec.adapt.policies import PolicyConfig, make_policy
from metarec.data.loaders.registry import load_dataset
from metarec.data.schema import Dataset, Interactions
from metarec.data.splits import (
    cold_start_folds,
)
from metarec.errors import ConfigError, DataError
from metarec.like.cold_start import (
    FeatureSpace,
    LikeUser,
    feature_space,
    item_quality,
    like_users,
    score_constant,
    score_like_users,
    score_next_item,
)
from metarec.like.like_net_fit import LikeNetFitConfig, fit_like_net
from metarec.meta.core import INNER_LR
from metarec.meta.inference import PolicyBundle, default_bundle
from metarec.meta.inner_optim import adamw
from metarec.meta.learners import (
    LearnerSpec,
    accepted_policy,
    build_learner,
    default_config,
)
from metarec.meta.train import MetaTrainConfig, meta_train
from metarec.models.like_net import LikeNet, LikeNetConfig
from metarec.protocols.cold_folds import FoldRun, pretrain_fold, with_options
from metarec.protocols.coldstart_like_report import (
    FINETUNE,
    META,
    METHODS,
    write_coldstart_like,
)
from metarec.protocols.resources import peak_rss_mb, reset_peak_rss
from metarec.training.loop import TrainConfig
from metarec.workflows.pretrain import ModelSpec, item_text_features

PROTOCOL = "coldstart-like"
HYPER_ONLY = ("meta-sgd", "learned-optim")


@dataclass(frozen=True)
class ColdstartLikeConfig:
    data: str | None = None  # dataset name or path (needs ratings); None: ml-latest-small
    out: Path = Path("metarec-runs/coldstart-like")
    n_folds: int = 5
    folds: tuple[int, ...] | None = None
    fold_seed: int = 0
    ks: tuple[int, ...] = (1, 3, 5, 10, 20)
    n_query: int = 20
    threshold: float = 3.0  # like = rating > threshold
    methods: tuple[str, ...] = METHODS
    spec: ModelSpec = field(default_factory=lambda: ModelSpec(text_hidden=256, id_dropout=0.2))
    pretrain: TrainConfig = field(
        default_factory=lambda: TrainConfig(batch_size=32, lr=2e-3, time_budget_s=120)
    )
    # in_dim comes from the data; dropout 0.3 and weight decay 1e-2 were chosen on fold 0's
    # validation users (valid AUC 0.7385 against 0.7359 at 0.1 / 1e-4)
    net: LikeNetConfig = field(default_factory=lambda: LikeNetConfig(in_dim=1, dropout=0.3))
    fit: LikeNetFitConfig = field(default_factory=lambda: LikeNetFitConfig(weight_decay=1e-2))
    # a meta step of 16 tasks over the small net takes ~0.25 s at one busy core: validating
    # every 10 steps lets early stopping act inside the budget
    meta: MetaTrainConfig = field(
        default_factory=lambda: MetaTrainConfig(
            meta_batch_size=16,
            max_steps=3000,
            eval_every=10,
            patience=8,
            time_budget_s=60,
            select="AUC",
        )
    )
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # the net's head (MeLU's local)
    finetune_steps: int = 5
    finetune_lrs: tuple[float, ...] = (1e-3, 1e-2, 3e-2, 1e-1)
    select_k: int = 5
    valid_fraction: float = 0.1
    progress: bool = True
    quick: bool = False
    title: str = "coldstart-like: new users with K rated items"

    def __post_init__(self) -> None:
        if unknown := [m for m in self.methods if m not in METHODS]:
            raise ConfigError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
        if not self.ks or any(isinstance(k, bool) or k < 1 for k in self.ks):
            raise ConfigError(f"every K must be a positive integer, got {self.ks}")
        if self.select_k not in self.ks:
            raise ConfigError(f"select_k={self.select_k} must be one of ks {self.ks}")
        if self.folds is not None and not all(0 <= f < self.n_folds for f in self.folds):
            raise ConfigError(f"folds {self.folds} must lie in [0, n_folds={self.n_folds})")
        if self.finetune_steps < 1 or not self.finetune_lrs:
            raise ConfigError("finetune_steps must be >= 1 and finetune_lrs name a rate")

    def fold_list(self) -> tuple[int, ...]:
        return tuple(range(self.n_folds)) if self.folds is None else self.folds

    def learner_spec(self, method: str) -> LearnerSpec:
        """The registry's defaults; Meta-SGD and learned-optim meta-learn their rule only
        (``meta_learn="hyper"``: the rates / settings, from the fitted start), since meta-learning
        the start itself lowered the validation users' AUC from the first validation on
        (fold 0: 0.7459 at step 0, below it after), while the rates rose steadily."""
        algorithm = "maml" if method == "melu" else method
        config = default_config(algorithm)
        if algorithm in HYPER_ONLY:
            config = replace(config, meta_learn="hyper")
        return LearnerSpec(algorithm, accepted_policy(algorithm, self.policy), config)


def run_coldstart_like(cfg: ColdstartLikeConfig, log: Callable[[str], None] = print) -> dict:
    """Run the protocol; returns {"results", "metrics_json", "report", "comparisons"}."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(cfg.data)
    if dataset.interactions.rating is None:
        raise DataError(
            f"coldstart-like needs explicit feedback and {dataset.name} has no rating or 0/1 "
            "label column (amazon-office, for one, records purchases only)"
        )
    log(f"dataset {dataset.describe()}")
    text = item_text_features(dataset, cfg.spec, cfg.progress)
    folds = cold_start_folds(dataset, cfg.n_folds, cfg.fold_seed)
    runs = [run_fold(cfg, dataset, folds[i], text, log) for i in cfg.fold_list()]
    return write_coldstart_like(cfg, dataset, runs, out)


def run_fold(cfg: ColdstartLikeConfig, dataset: Dataset, fold, text, log) -> FoldRun:
    run = FoldRun(fold.index)
    say = lambda msg: log(f"[fold {fold.index}] {msg}")  # noqa: E731
    setup = pretrain_fold(cfg, dataset, fold, text, run)
    base, valid_inter, train_ds = setup.base, setup.valid_inter, setup.train
    valid_users, train_users = setup.valid_users, setup.train_users
    for p in base.parameters():  # a frozen feature extractor from here on
        p.requires_grad_(False)
    say(f"SeqRec pretrained on {len(train_users)} users in {run.pretrain['train_seconds']:.0f} s")

    train_inter = train_ds.interactions
    space = feature_space(base, train_inter, dataset.n_items)

    def users(inter: Interactions, k: int, rank: bool = False) -> list[LikeUser]:
        return like_users(base, inter, k, cfg.n_query, cfg.threshold, with_ranking=rank)

    train_by_k = {k: users(train_inter, k) for k in cfg.ks}
    valid_by_k = {k: users(valid_inter, k) for k in cfg.ks}
    cold = {k: users(fold.test, k, rank=True) for k in cfg.ks}
    say(f"{len(cold[cfg.select_k])} cold users at K={cfg.select_k}; {len(valid_users)} valid")

    nets = {}
    for view_space in (space, space.item_view()):
        if view_space.view == "item" and "melu" not in cfg.methods:
            continue
        net = LikeNet(replace(cfg.net, in_dim=view_space.dim))
        tasks = [u.task(view_space) for k in cfg.ks for u in train_by_k[k]]
        valid = [u.task(view_space) for k in cfg.ks for u in valid_by_k[k]]
        res = fit_like_net(net, tasks, valid, replace(cfg.fit, seed=cfg.fold_seed + fold.index))
        nets[view_space.view] = (net, view_space, tasks, valid)
        run.cost[f"like-net-{view_space.view}"] = {"train_seconds": res.seconds}
        say(f"like net ({view_space.view}): valid AUC {res.best_auc:.4f} at epoch {res.best_epoch}")
    net = nets["user-item"][0]

    item_mean = item_quality(train_inter, dataset.n_items)
    for k, cu in cold.items():
        if "history-mean" in cfg.methods:
            hm = lambda u: np.full(len(u.query_items), u.support_ratings.mean())  # noqa: E731
            run.scores[("history-mean", k)] = score_constant(cu, hm)
        if "item-mean" in cfg.methods:
            run.scores[("item-mean", k)] = score_constant(cu, lambda u: item_mean[u.query_items])
        if "next-item" in cfg.methods:
            run.scores[("next-item", k)] = score_next_item(cu)
        if "no-adapt" in cfg.methods:
            run.scores[("no-adapt", k)] = score_like_users(net, None, cu, space)

    for method in (m for m in FINETUNE if m in cfg.methods):
        start = time.perf_counter()
        if method == "finetune-head-sgd":  # the product's plain inner loop, nothing chosen
            bundle, lr = default_bundle(net), INNER_LR
        else:
            valid = valid_by_k[cfg.select_k]
            bundle, lr = _choose_finetune(cfg, net, FINETUNE[method], valid, space)
        run.chosen_lr[method] = lr
        run.cost[method] = {"train_seconds": time.perf_counter() - start}
        for k, cu in cold.items():
            run.scores[(method, k)] = score_like_users(net, bundle, cu, space)
        say(f"{method} (lr {lr:g}): {_brief(run, method, cfg.select_k)}")

    for method in (m for m in META if m in cfg.methods):
        reset_peak_rss()
        view = "item" if method == "melu" else "user-item"
        start_net, view_space, tasks, valid = nets[view]
        model = copy.deepcopy(start_net)
        learner = build_learner(model, cfg.learner_spec(method))
        meta_cfg = replace(cfg.meta, progress=cfg.progress, seed=cfg.fold_seed + fold.index)
        res = meta_train(learner, tasks, valid, meta_cfg)
        run.curves[method] = res.curve
        run.cost[method] = {
            "train_seconds": res.wall_seconds,
            "seconds_to_best": res.seconds_to_best,
            "meta_steps": float(res.step),
            "best_step": float(res.best_step),
        }
        for k, cu in cold.items():
            run.scores[(method, k)] = score_like_users(model.eval(), learner, cu, view_space)
        run.cost[method]["peak_rss_mb"] = peak_rss_mb()
        say(f"{method}: {res.stopped}; {_brief(run, method, cfg.select_k)}")
    return run


def _choose_finetune(
    cfg: ColdstartLikeConfig, net, policy_name: str, valid: list[LikeUser], space: FeatureSpace
) -> tuple[PolicyBundle, float]:
    """The fine-tuning bundle whose AdamW rate gives the best validation-user AUC."""
    policy = make_policy(PolicyConfig(policy_name), net)
    best: tuple[float, PolicyBundle | None, float] = (-1.0, None, 0.0)
    for lr in cfg.finetune_lrs:
        bundle = PolicyBundle(policy, adamw(lr), cfg.finetune_steps)
        metric = score_like_users(net, bundle, valid, space, rank=False).metrics()["AUC"]
        if metric > best[0]:
            best = (metric, bundle, lr)
    assert best[1] is not None
    return best[1], best[2]


def _brief(run: FoldRun, method: str, k: int) -> str:
    s = run.scores.get((method, k))
    if s is None:
        return ""
    m = s.metrics()
    return f"AUC at K={k}: {m['AUC']:.4f}, NDCG@10 {m.get('NDCG@10', float('nan')):.4f}"


def quick_config(cfg: ColdstartLikeConfig) -> ColdstartLikeConfig:
    """Smoke-test budgets (two pretraining epochs, a few meta steps); never reported."""
    return replace(
        cfg,
        quick=True,
        title=cfg.title + " (quick smoke test: not a reported result)",
        pretrain=replace(cfg.pretrain, max_epochs=2, time_budget_s=None),
        fit=replace(cfg.fit, max_epochs=2),
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
) -> ColdstartLikeConfig:
    """What ``metarec bench coldstart-like`` runs; ``options``: n_folds, fold_seed, folds, ks,
    methods, policy (None: the protocol's)."""
    try:
        cfg = ColdstartLikeConfig(
            data=data, out=out, n_folds=options["n_folds"], fold_seed=options["fold_seed"]
        )
        cfg = with_options(cfg, options, pretrain_budget, meta_budget)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return quick_config(cfg) if quick else cfg


__all__ = ["ColdstartLikeConfig", "config_from_options", "quick_config", "run_coldstart_like"]
