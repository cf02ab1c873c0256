"""PROTOCOLS.md fewshot-like: like/dislike prediction from 16 / 64 / 256 labelled samples.

1. samples (``like.samples``): a user's 10 most recent rated items with ratings + the
   target; label = rating > 3; users split 8:1:1 (seeded); the test set is every eligible target
   of the test users;
2. SeqRec is pretrained (next item) on the train users' implicit sequences only (which items, in
   what order; no rating), which also gives the item vectors and popularity counts;
3. per budget and seed, a labelled draw of the train users' samples; every method is fitted on
   it and scored by AUC on the test set:
   - baselines (no training, PROTOCOLS.md): ``history-mean``, ``popularity`` (of the target among
     train users), ``logreg-baseline`` (logistic regression over those two, fitted on the draw);
   - ``seqrec-head``: the light head over SeqRec vectors and rating features, fine-tuned with
     L2-SP on the draw, each sample's history ratings also serving as targets (its H + 1 rated
     items, each predicted from the other H); ``seqrec-head-labels-only``: the same on the
     labelled targets alone; ``seqrec-head-reptile``: the head's start meta-learned with Reptile on
     tasks cut from the draw, then fine-tuned the same way;
   - ``cross-encoder``: MiniLM reading a prompt of the recent history (titles with ratings) and
     the candidate, LoRA (peft) on its top layers, head over the pooled text and the numeric
     features; scored on a seeded subset of the test set (``ce_test_samples``), on which every
     other method is scored too, for a like-for-like comparison; ``cross-encoder-reptile``: the
     same, from a start (LoRA A/B and heads) meta-learned once per run with Reptile on tasks of
     the train users' implicit behaviour (next item vs an unseen item, prompts without ratings;
     ``like.cross_encoder_meta``), shared by every budget and seed;
4. "before" rows hold each learned method's AUC at its start (no labels used, or Reptile's start).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from metarec.data.loaders.registry import load_dataset
from metarec.data.splits import leave_one_out
from metarec.errors import ConfigError
from metarec.like.cross_encoder import CrossEncoderConfig
from metarec.like.cross_encoder_fit import LoraFitConfig
from metarec.like.cross_encoder_meta import CrossMetaConfig
from metarec.like.fit import HeadFitConfig, ItemSpace, ReptileStartConfig, like_features
from metarec.like.samples import build_like_samples, item_counts, split_users
from metarec.protocols.fewshot_like_methods import (
    Fitted,
    RunData,
    cross_encoder_meta_start,
    run_budget,
)
from metarec.protocols.fewshot_like_names import CROSS_ENCODERS, METHODS
from metarec.protocols.fewshot_like_report import write_fewshot_like
from metarec.protocols.resources import peak_rss_mb, reset_peak_rss
from metarec.training.loop import TrainConfig
from metarec.training.pretrain import prepare_next_item
from metarec.workflows.pretrain import ModelSpec, item_text_features, pretrain_seqrec

__all__ = ["CROSS_ENCODERS", "METHODS", "FewshotLikeConfig", "quick_config", "run_fewshot_like"]

PROTOCOL = "fewshot-like"


@dataclass(frozen=True)
class FewshotLikeConfig:
    data: str | None = None  # dataset name or path; None = bundled ml-latest-small
    out: Path = Path("metarec-runs/fewshot-like")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    budgets: tuple[int, ...] = (16, 64, 256)
    split_seed: int = 0
    history: int = 10
    threshold: float = 3.0
    methods: tuple[str, ...] = METHODS
    evaluate_on: str = "test"  # "valid": the validation users (for development only)
    # the model of the 2026-12-02 run (MLP text adaptor 256 wide, id dropout 0.2, random
    # starts), not the product's pretraining recipe (DEFAULT_SPEC): kept for comparable figures
    spec: ModelSpec = field(
        default_factory=lambda: ModelSpec(max_len=10, text_hidden=256, id_dropout=0.2)
    )
    pretrain: TrainConfig = field(
        default_factory=lambda: TrainConfig(batch_size=32, lr=2e-3, time_budget_s=90)
    )
    head: HeadFitConfig = field(default_factory=HeadFitConfig)
    reptile: ReptileStartConfig = field(default_factory=ReptileStartConfig)
    cross: CrossEncoderConfig = field(default_factory=CrossEncoderConfig)
    lora: LoraFitConfig = field(default_factory=LoraFitConfig)
    ce_meta: CrossMetaConfig = field(default_factory=CrossMetaConfig)
    ce_test_samples: int = 500
    progress: bool = True
    quick: bool = False  # smoke-test budgets: marked in metrics.json, never a reported result
    title: str = "fewshot-like: like/dislike prediction with few labels"

    def __post_init__(self) -> None:
        if unknown := [m for m in self.methods if m not in METHODS]:
            raise ConfigError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
        if not self.seeds:
            raise ConfigError("at least one seed is needed")
        if not self.budgets or any(isinstance(b, bool) or b < 2 for b in self.budgets):
            raise ConfigError(f"every budget must be an integer >= 2, got {self.budgets}")
        if self.evaluate_on not in ("test", "valid"):
            raise ConfigError(f"evaluate_on must be 'test' or 'valid', got {self.evaluate_on!r}")
        if self.ce_test_samples < 2:
            raise ConfigError(f"ce_test_samples must be >= 2, got {self.ce_test_samples}")


def quick_config(cfg: FewshotLikeConfig) -> FewshotLikeConfig:
    """Smoke-test budgets: two seeds, one pretraining epoch, few steps, a small CE test subset.
    Never the configuration that is reported."""
    return replace(
        cfg,
        quick=True,
        seeds=cfg.seeds[:2],
        title=cfg.title + " (quick smoke test: not a reported result)",
        pretrain=replace(cfg.pretrain, max_epochs=1, time_budget_s=None),
        head=replace(cfg.head, steps=30),
        reptile=replace(cfg.reptile, meta_steps=5),
        lora=replace(cfg.lora, epochs=1, min_steps=2),
        ce_meta=replace(cfg.ce_meta, meta_steps=2, support=4, inner_steps=1),
        ce_test_samples=min(cfg.ce_test_samples, 64),
    )


def config_from_options(
    out: Path,
    data: str | None,
    split_seed: int,
    options: dict,
    template: str | None,
    quick: bool,
) -> FewshotLikeConfig:
    """What ``metarec bench fewshot-like`` runs; ``options``: seeds, budgets, methods (empty:
    the protocol's); ``template``: the cross-encoder's prompt."""
    try:
        cfg = FewshotLikeConfig(data=data, out=out, split_seed=split_seed)
        cfg = replace(
            cfg,
            seeds=tuple(options["seeds"]) if options["seeds"] else cfg.seeds,
            budgets=tuple(options["budgets"]) if options["budgets"] else cfg.budgets,
            methods=tuple(options["methods"]) if options["methods"] else cfg.methods,
        )
        if template is not None:
            cfg = replace(cfg, cross=replace(cfg.cross, template=template))
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return quick_config(cfg) if quick else cfg


def run_fewshot_like(cfg: FewshotLikeConfig, log: Callable[[str], None] = print) -> dict:
    """Run the protocol; returns {"results", "metrics_json", "report", "seconds"}."""

    start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    reset_peak_rss()
    data = prepare(cfg, log)
    if "cross-encoder-reptile" in cfg.methods:  # once per run, timed apart from the draws
        cross_encoder_meta_start(cfg, data, log)
    fits: list[Fitted] = []
    for budget in cfg.budgets:
        for seed in cfg.seeds:
            fits += run_budget(cfg, data, budget, seed, log)
    seconds = time.perf_counter() - start
    info = {**data.info, "wall_seconds": seconds, "peak_rss_mb": peak_rss_mb()}
    res = write_fewshot_like(cfg, data, fits, info, out)
    return {**res, "seconds": seconds}


def prepare(cfg: FewshotLikeConfig, log: Callable[[str], None]) -> RunData:
    """Samples, user split, SeqRec pretrained on the train users' implicit sequences, features."""
    dataset = load_dataset(cfg.data)
    log(f"dataset {dataset.describe()}")
    samples = build_like_samples(dataset.interactions, cfg.history, cfg.threshold)
    users = split_users(samples.user, cfg.split_seed)
    pool = samples.of_users(users.train)
    test = samples.of_users(users.test if cfg.evaluate_on == "test" else users.valid)
    if len(pool) < max(cfg.budgets) or len(np.unique(test.label)) < 2:
        raise ConfigError(
            f"{dataset.name}: {len(pool)} train samples and {len(test)} test samples with "
            f"{len(np.unique(test.label))} label(s); need >= {max(cfg.budgets)} and both labels"
        )
    log(f"{len(samples):,} samples; {len(pool):,} of train users, {len(test):,} to score")
    inter = dataset.interactions
    train_ds = dataset.with_interactions(inter.take(np.isin(inter.user, users.train)))
    text = item_text_features(dataset, cfg.spec, cfg.progress)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.split_seed)
    split = leave_one_out(train_ds)
    next_item = prepare_next_item(split, dataset.n_users, dataset.n_items, cfg.spec.max_len)
    trained = pretrain_seqrec(
        train_ds, next_item, cfg.spec, replace(cfg.pretrain, progress=cfg.progress), text=text
    )
    model = trained.model.eval()
    counts = item_counts(inter, users.train, dataset.n_items)
    space = ItemSpace.build(model, text.embeddings, counts)
    pretrain_s = time.perf_counter() - t0
    log(f"SeqRec pretrained on {len(users.train)} train users' sequences in {pretrain_s:.0f} s")
    rng = np.random.default_rng([cfg.split_seed, 1])
    subset = np.sort(rng.choice(len(test), min(cfg.ce_test_samples, len(test)), replace=False))
    info = {
        "n_samples": len(samples),
        "n_train_pool": len(pool),
        "n_test": len(test),
        "n_test_subset": len(subset),
        "test_positive_rate": float(test.label.mean()),
        "users": {k: len(getattr(users, k)) for k in ("train", "valid", "test")},
        "pretrain_seconds": pretrain_s,
        "pretrain_valid_NDCG@10": float(trained.valid["NDCG@10"]),
    }
    titles = [t.split(". Genres:")[0] for t in dataset.items.text]
    return RunData(
        dataset=dataset,
        pool=pool,
        test=test,
        subset=subset,
        model=model,
        space=space,
        counts=counts,
        test_features=like_features(test, space, model),
        titles=titles,
        train_users=users.train,
        info=info,
    )
