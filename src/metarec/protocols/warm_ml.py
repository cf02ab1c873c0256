"""PROTOCOLS.md warm-ml: next-item with warm users, leave-one-out, full-catalogue ranking.

Every method is trained on the same split in the same process and selected on validation
NDCG@10; test figures, training cost and peak memory go into metrics.json and report.md.
``metarec demo`` runs this protocol with a smaller method list and time budgets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from metarec.data.loaders.registry import load_dataset
from metarec.data.schema import Dataset
from metarec.data.splits import leave_one_out
from metarec.errors import ConfigError
from metarec.evaluation.next_item import evaluate_next_item
from metarec.evaluation.plots import plot_learning_curves
from metarec.protocols.experiment import Experiment, Method, MethodRun, Plot
from metarec.training.loop import TrainConfig
from metarec.training.pretrain import NextItemData, fit_popularity, prepare_next_item, train_bpr
from metarec.workflows.pretrain import (
    DEFAULT_SPEC,
    DEFAULT_TRAIN,
    ModelSpec,
    TextFeatures,
    item_text_features,
    pretrain_seqrec,
)

PROTOCOL = "warm-ml"
METHODS = ("popularity", "bpr", "sasrec-id", "metarec-id", "metarec")
REPORTED = ("HR@10", "NDCG@10", "MRR@10")
MAX_LEN = 50


@dataclass(frozen=True)
class WarmMLConfig:
    data: str | None = None  # dataset name or path; None = bundled ml-latest-small
    out: Path = Path("metarec-runs/warm-ml")
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = METHODS
    # each model trains with the settings that suit it best on this data (bench/README.md):
    # ``seqrec`` for metarec's models (co-occurrence start, then a short cosine decay: the start
    # already validates near the plateau, and the best epoch can come no later than the 6th),
    # ``sasrec`` for the published SASRec (constant rate, early stopping)
    seqrec: TrainConfig = DEFAULT_TRAIN
    sasrec: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=8, lr=2e-3))
    bpr: TrainConfig = field(
        default_factory=lambda: TrainConfig(batch_size=1024, lr=5e-3, weight_decay=0.5)
    )
    # metarec's models: "metarec" with this spec, "metarec-id" with it id-only; "sasrec-id" is
    # the published SASRec (this spec, id-only, random id vectors). ``DEFAULT_SPEC`` and
    # ``DEFAULT_TRAIN`` are the product's pretraining defaults, which this protocol found
    spec: ModelSpec = DEFAULT_SPEC
    progress: bool = True
    quick: bool = False  # smoke-test budgets: marked in metrics.json, never a reported result
    title: str = "warm-ml: next-item recommendation for warm users"

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
        if not self.seeds:
            raise ConfigError("at least one seed is needed")


@dataclass(frozen=True, eq=False)
class RunContext:
    """What every method of one run shares: config, data and (when needed) item text."""

    cfg: WarmMLConfig
    dataset: Dataset
    data: NextItemData
    text: TextFeatures | None
    out: Path


def _run_popularity(ctx: RunContext, seed: int) -> MethodRun:
    start = time.perf_counter()
    model = fit_popularity(ctx.data)
    seconds = time.perf_counter() - start
    test = evaluate_next_item(model, ctx.data.test, ctx.data.n_items)
    return MethodRun(test, {"train_seconds": seconds})


def _run_bpr(ctx: RunContext, seed: int) -> MethodRun:
    cfg = ctx.cfg
    model, state = train_bpr(ctx.data, replace(cfg.bpr, seed=seed, progress=cfg.progress))
    test = evaluate_next_item(model, ctx.data.test, ctx.data.n_items)
    return MethodRun(test, state.cost(), state.curve)


def _seqrec_runner(item_repr: str, plain: bool = False) -> Callable[[RunContext, int], MethodRun]:
    """SeqRec with ``cfg.spec`` as ``item_repr``; ``plain``: random id vectors (SASRec)."""

    def run(ctx: RunContext, seed: int) -> MethodRun:
        cfg = ctx.cfg
        spec = cfg.spec.with_items(item_repr)
        if plain:
            spec = replace(spec, id_init="random")
        base = cfg.sasrec if plain else cfg.seqrec
        train = replace(base, seed=seed, progress=cfg.progress)
        keep = item_repr != "id" and seed == cfg.seeds[0]
        text = ctx.text if item_repr != "id" else TextFeatures(None, {"text_model": None})
        res = pretrain_seqrec(
            ctx.dataset,
            ctx.data,
            spec,
            train,
            out=ctx.out / "checkpoint" if keep else None,
            text=text,
            overwrite=True,
        )
        return MethodRun(res.test, res.state.cost(), res.state.curve)

    return run


RUNNERS: dict[str, Callable[[RunContext, int], MethodRun]] = {
    "popularity": _run_popularity,
    "bpr": _run_bpr,
    "sasrec-id": _seqrec_runner("id", plain=True),
    "metarec-id": _seqrec_runner("id"),
    "metarec": _seqrec_runner("hybrid"),
}


def run_warm_ml(cfg: WarmMLConfig, log: Callable[[str], None] = print) -> dict:
    """Run the protocol; returns {"results", "metrics_json", "report", "checkpoint", "plots"}."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(cfg.data)
    log(f"dataset {dataset.describe()}")
    data: NextItemData = prepare_next_item(
        leave_one_out(dataset), dataset.n_users, dataset.n_items, MAX_LEN
    )
    text = None
    if "metarec" in cfg.methods:
        text = item_text_features(dataset, cfg.spec, cfg.progress)
        log(f"item text: {text.info.get('text_encode', '')}")
    ctx = RunContext(cfg, dataset, data, text, out)
    device = str(cfg.seqrec.resolved_device())
    exp = Experiment(PROTOCOL, dataset.name, cfg.seeds, out, cfg.title, device=device, log=log)
    methods = [Method(m, partial(RUNNERS[m], ctx)) for m in cfg.methods]
    exp.run(methods, REPORTED, {"split": "leave-one-out"}, _brief)
    curves = exp.curves()
    plots = [Plot(_CURVES, "learning_curves.png", partial(plot_learning_curves, curves))]
    extra = {"quick": cfg.quick, "curves": {m: [list(p) for p in c] for m, c in curves.items()}}
    res = exp.finish(_intro(cfg, dataset), plots=plots if curves else (), extra=extra)
    ckpt = out / "checkpoint"
    return {**res, "checkpoint": ckpt if ckpt.is_dir() else None}


_CURVES = "Validation NDCG@10 by epoch (first seed)"


def _brief(run: MethodRun) -> str:
    m = run.metrics
    return f"NDCG@10 {m['NDCG@10']:.4f} HR@10 {m['HR@10']:.4f} in {run.cost['train_seconds']:.1f} s"


def _intro(cfg: WarmMLConfig, dataset: Dataset) -> str:
    return (
        f"Dataset {dataset.name} ({dataset.n_users:,} users, {dataset.n_items:,} items). "
        "Leave-one-out split, history window 50, full-catalogue ranking with the whole history "
        "excluded; models selected on validation NDCG@10; test figures below. "
        "sasrec-id: SASRec, id vectors only, random start; metarec-id: the same network with "
        f"id_init={cfg.spec.id_init!r} ('cooccurrence': id vectors start from item "
        "co-occurrence in the training sequences); metarec: item text and id vectors."
    )


def demo_config(cfg: WarmMLConfig) -> WarmMLConfig:
    """The demo: popularity, BPR and metarec under time budgets that fit in a few minutes."""
    return replace(
        cfg,
        methods=("popularity", "bpr", "metarec"),
        # its cosine decay over 4 epochs (~90 s on 2 cores) ends inside the budget
        seqrec=replace(cfg.seqrec, max_epochs=4, time_budget_s=100.0),
        bpr=replace(cfg.bpr, time_budget_s=20.0),
        title="metarec demo: warm-ml on the bundled ml-latest-small",
    )


def quick_config(cfg: WarmMLConfig) -> WarmMLConfig:
    """Smoke-test budgets: two epochs each. Never the configuration that is reported."""
    return replace(
        cfg,
        quick=True,
        title=cfg.title + " (quick smoke test: not a reported result)",
        seqrec=replace(cfg.seqrec, max_epochs=2, time_budget_s=None),
        sasrec=replace(cfg.sasrec, max_epochs=2, time_budget_s=None),
        bpr=replace(cfg.bpr, max_epochs=2, time_budget_s=None),
    )


def config_from_options(
    out: Path, data: str | None, seeds: list[int], quick: bool, demo: bool
) -> WarmMLConfig:
    """What ``metarec bench warm-ml`` and ``metarec demo`` run, from their flags."""
    cfg = WarmMLConfig(data=data, out=out, seeds=tuple(seeds))
    if demo:
        cfg = demo_config(cfg)
    return quick_config(cfg) if quick else cfg
