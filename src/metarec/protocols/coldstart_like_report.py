"""coldstart-like results: folds -> one row per (method, K), paired comparisons, files.

Each metric of a row is the mean over folds with its 95% t-interval (one fold: the number).
Every adapted method (fine-tuning and meta-learners) is compared with ``COMPARE_WITH`` fold by
fold on AUC and on NDCG@10: a gain is established where the paired interval lies above zero.
The method names live here, so the runner and this writer read one list.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from metarec.data.schema import Dataset
from metarec.evaluation.metrics import mean_ci95
from metarec.evaluation.plots import plot_metric_by
from metarec.evaluation.report import ResultRow, ci_metric
from metarec.protocols.coldstart_report import (
    Comparison,
    comparison_table,
    fold_extra,
    meta_curve_plot,
    pivot,
)
from metarec.protocols.experiment import Experiment, Plot

PROTOCOL = "coldstart-like"
BASELINES = ("history-mean", "item-mean", "next-item", "no-adapt")
# method -> policy; finetune-head-sgd is the product's plain inner loop (SGD 0.05 x 3 on the
# head) with no meta-training: what every meta-learner starts from, so the meta-learned part of
# a meta-learner's gain is its difference to this row
FINETUNE = {"finetune-all": "all", "finetune-head": "head", "finetune-head-sgd": "head"}
META = ("maml", "fomaml", "reptile", "meta-sgd", "anil", "learned-optim", "melu")
METHODS = BASELINES + tuple(FINETUNE) + META
COMPARE_WITH = ("no-adapt", "finetune-all", "finetune-head", "finetune-head-sgd", "history-mean")
COMPARED = ("AUC", "NDCG@10")


def summarise(cfg, runs) -> list[ResultRow]:
    rows = []
    for method in cfg.methods:
        for k in cfg.ks:
            per_fold = [r.scores[(method, k)] for r in runs if (method, k) in r.scores]
            if not per_fold:
                continue
            fold_metrics = [s.metrics() for s in per_fold]
            metrics = {}
            for name in fold_metrics[0]:
                values = [m[name] for m in fold_metrics if name in m]
                metrics[name] = values[0] if len(values) == 1 else ci_metric(values)
            meta_policy = cfg.learner_spec(method).policy.name if method in META else "-"
            policy = FINETUNE.get(method, meta_policy)
            rows.append(ResultRow(method, {"K": k, "policy": policy}, metrics, _cost(method, runs)))
    return rows


def compare(cfg, runs) -> list[Comparison]:
    """Paired per-fold differences of every adapted method against ``COMPARE_WITH``."""
    out = []
    adapted = [m for m in (*FINETUNE, *META) if m in cfg.methods]
    for metric in COMPARED:
        for method in adapted:
            for baseline in (b for b in COMPARE_WITH if b in cfg.methods and b != method):
                for k in cfg.ks:
                    pairs = [
                        (r.scores[(method, k)].metrics(), r.scores[(baseline, k)].metrics())
                        for r in runs
                    ]
                    if not all(metric in a and metric in b for a, b in pairs):
                        continue
                    diffs = [a[metric] - b[metric] for a, b in pairs]
                    mean, ci = mean_ci95(diffs)
                    out.append(
                        Comparison(method, baseline, k, mean, ci, tuple(map(float, diffs)), metric)
                    )
    return out


def write_coldstart_like(cfg, dataset: Dataset, runs, out: Path) -> dict:
    results = summarise(cfg, runs)
    comparisons = compare(cfg, runs)
    device = str(cfg.pretrain.resolved_device())
    exp = Experiment(PROTOCOL, dataset.name, [cfg.fold_seed], out, cfg.title, device=device)
    exp.add(*results)
    plots = [
        Plot("AUC against K", "auc_by_k.png", partial(plot_metric_by, results, "AUC", "K")),
        Plot(
            "NDCG@10 of the liked query items against K",
            "ndcg_by_k.png",
            partial(plot_metric_by, [r for r in results if "NDCG@10" in r.metrics], "NDCG@10", "K"),
        ),
    ]
    plots += meta_curve_plot(runs, "Meta-validation AUC, every K")
    extra = fold_extra(cfg, runs, comparisons, _settings(cfg))
    at_k = [c for c in comparisons if c.k == cfg.select_k]
    sections = [
        ("AUC by K (mean ± 95% CI half-width over folds)", pivot(results, "AUC")),
        ("Within-user AUC by K", pivot([r for r in results if "UserAUC" in r.metrics], "UserAUC")),
        (
            "NDCG@10 of the liked query items by K",
            pivot([r for r in results if "NDCG@10" in r.metrics], "NDCG@10"),
        ),
        (
            f"Adapted methods against the baselines, AUC, K={cfg.select_k}",
            comparison_table([c for c in at_k if c.metric == "AUC"]),
        ),
        (
            f"Adapted methods against the baselines, NDCG@10, K={cfg.select_k}",
            comparison_table([c for c in at_k if c.metric == "NDCG@10"]),
        ),
    ]
    res = exp.finish(
        _intro(cfg, dataset, runs),
        notes=_notes(cfg, runs),
        sections=sections,
        plots=plots,
        extra=extra,
    )
    return {**res, "comparisons": comparisons}


def _cost(method: str, runs) -> dict[str, float]:
    cost: dict[str, float] = {}
    for key in ("train_seconds", "seconds_to_best", "meta_steps", "best_step"):
        spent = [r.cost[method][key] for r in runs if key in r.cost.get(method, {})]
        if spent:
            cost[key] = float(np.mean(spent))
    times = [t for r in runs for (m, _), s in r.scores.items() if m == method for t in s.adapt_ms]
    if times:
        cost["adapt_ms_median"] = float(np.median(times))
        cost["adapt_ms_p95"] = float(np.percentile(times, 95))
    return cost


def _settings(cfg) -> dict:
    loop = cfg.learner_spec("maml").config
    return {
        "ks": list(cfg.ks),
        "n_query": cfg.n_query,
        "threshold": cfg.threshold,
        "select_k": cfg.select_k,
        "policy": cfg.policy.name,
        "inner_lr": loop.inner_lr,
        "inner_steps": loop.inner_steps,
        "outer_lr": loop.outer_lr,
        "finetune_steps": cfg.finetune_steps,
        "finetune_lrs": list(cfg.finetune_lrs),
        "pretrain_time_budget_s": cfg.pretrain.time_budget_s,
        "meta_time_budget_s": cfg.meta.time_budget_s,
        "meta_batch_size": cfg.meta.meta_batch_size,
        "like_net": cfg.net.to_dict(),
    }


def _intro(cfg, dataset: Dataset, runs) -> str:
    folds = ", ".join(str(r.fold) for r in runs)
    return (
        f"Dataset {dataset.name} ({dataset.n_users:,} users, {dataset.n_items:,} items); users in "
        f"{cfg.n_folds} folds (seed {cfg.fold_seed}), run here: fold(s) {folds}. A cold user's "
        f"support = their first K rated items with the ratings, query = up to the next "
        f"{cfg.n_query}; like = rating > {cfg.threshold:g}. SeqRec is pretrained on the "
        "training users' implicit sequences (no rating) and frozen; a LikeNet over its user and "
        "item vectors is fitted on the training users' labelled rows (no-adapt), then adapted to "
        "each cold user's labelled support rows. AUC pools every query row of every user; "
        "UserAUC is the mean AUC within users who have both labels among their query items; "
        "NDCG@10 ranks the liked query items over the full catalogue minus the support items "
        "by log P(next item) + log P(like). Figures: mean over folds ± 95% CI half-width."
    )


def _notes(cfg, runs) -> list[str]:
    loop = cfg.learner_spec("maml").config
    notes = [
        f"Meta-learners adapt the LikeNet's {cfg.policy.name!r} (MeLU's local update: decision "
        f"and output layers) with {loop.inner_steps} SGD steps at {loop.inner_lr:g} (Meta-SGD "
        f"learns the rates from there), AdamW outer rate {loop.outer_lr:g}, meta-batch "
        f"{cfg.meta.meta_batch_size}, tasks at every K, early-stopped on the validation users' "
        f"pooled AUC (budget {cfg.meta.time_budget_s} s, at most {cfg.meta.max_steps} steps). "
        "melu: the same MAML over a LikeNet that sees only the item (MeLU's input: no history). "
        "Meta-SGD and learned-optim meta-learn their rule only (rates / settings) from the "
        "fitted start; the others meta-learn the start too. best_step 0 in a row's cost means "
        "meta-training never beat its own start on the validation users: that row is then the "
        "start adapted by the plain inner loop, i.e. finetune-head-sgd.",
        f"Fine-tuning: {cfg.finetune_steps} AdamW steps, rate chosen from "
        f"{list(cfg.finetune_lrs)} on the validation users at K={cfg.select_k}; chosen: "
        + "; ".join(f"fold {r.fold}: {r.chosen_lr}" for r in runs),
        "Pretraining per fold: "
        + "; ".join(
            f"fold {r.fold}: valid NDCG@10 {r.pretrain['valid_NDCG@10']:.4f}, "
            f"{r.pretrain['train_seconds']:.0f} s"
            for r in runs
        ),
    ]
    if cfg.quick:
        notes.append("Quick smoke-test budgets: not a reported result.")
    return notes
