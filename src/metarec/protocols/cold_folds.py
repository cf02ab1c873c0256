"""What coldstart-ml and coldstart-like do alike for every fold: the user split and pretraining.

``pretrain_fold`` splits the fold's other users (seeded) into validation users and training
users, pretrains SeqRec on the training users only (leave-one-out inside them for early
stopping; the validation users stay as unseen as the cold users, so selecting on them is
honest) and returns the pieces both protocols go on from. ``FoldRun`` holds one fold's figures;
``with_options`` applies the flags both ``metarec bench`` commands share.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from torch import nn

from metarec.adapt.policies import PolicyConfig
from metarec.data.schema import Dataset, Interactions
from metarec.data.splits import fold_train_dataset, fold_validation_users, leave_one_out
from metarec.protocols.resources import peak_rss_mb, reset_peak_rss
from metarec.training.pretrain import prepare_next_item
from metarec.workflows.pretrain import pretrain_seqrec


@dataclass
class FoldRun:
    """One fold: per (method, K) the scores, per method its training cost."""

    fold: int
    scores: dict[tuple[str, int], Any] = field(default_factory=dict)
    cost: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    chosen_lr: dict[str, float] = field(default_factory=dict)
    pretrain: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class FoldSetup:
    valid_users: np.ndarray
    train_users: np.ndarray
    valid_inter: Interactions  # the validation users' interactions
    train: Dataset  # the dataset restricted to the training users
    base: nn.Module  # SeqRec pretrained on them, in eval mode


def pretrain_fold(cfg, dataset: Dataset, fold, text, run: FoldRun) -> FoldSetup:
    """Split and pretrain (``cfg``: a coldstart config with fold_seed, valid_fraction, n_folds,
    spec, pretrain, progress); the pretraining cost goes into ``run.pretrain``."""
    valid_users, train_users = fold_validation_users(fold, cfg.fold_seed, cfg.valid_fraction)
    valid_inter = fold.train.take(np.isin(fold.train.user, valid_users))
    train_ds = fold_train_dataset(
        dataset, fold.index, cfg.n_folds, cfg.fold_seed, cfg.valid_fraction
    )
    reset_peak_rss()
    split = leave_one_out(train_ds)
    data = prepare_next_item(split, dataset.n_users, dataset.n_items, cfg.spec.max_len)
    pretrain = replace(cfg.pretrain, progress=cfg.progress)
    trained = pretrain_seqrec(train_ds, data, cfg.spec, pretrain, text=text)
    run.pretrain = {**trained.state.cost(), "valid_NDCG@10": trained.valid["NDCG@10"]}
    run.pretrain["peak_rss_mb"] = peak_rss_mb()
    return FoldSetup(valid_users, train_users, valid_inter, train_ds, trained.model.eval())


def with_options(cfg, options: dict, pretrain_budget: float, meta_budget: float):
    """``cfg`` with the shared flags applied (folds, ks, methods, policy: None keeps the
    protocol's value) and the pretraining and meta-training budgets."""
    policy = options.get("policy")
    return replace(
        cfg,
        folds=tuple(options["folds"]) if options["folds"] else None,
        ks=tuple(options["ks"]) if options["ks"] else cfg.ks,
        methods=tuple(options["methods"]) if options["methods"] else cfg.methods,
        policy=PolicyConfig(policy) if policy else cfg.policy,
        pretrain=replace(cfg.pretrain, time_budget_s=pretrain_budget),
        meta=replace(cfg.meta, time_budget_s=meta_budget),
    )
