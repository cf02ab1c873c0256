"""coldstart-ml results: folds -> one row per (method, K), paired comparisons, files.

A metric of a row is the mean over folds with its 95% t-interval (``ci_metric``); with one fold
it is the plain number. Adaptation times are pooled over every cold user of every fold (median,
p95); peak memory is the largest of the folds. The comparison table holds, for every
meta-learner and K, its per-fold difference in NDCG@10 to ``no-adapt`` and to ``finetune-all``
with the interval of that paired difference: a gain is established where the interval lies above
zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from metarec.data.schema import Dataset
from metarec.evaluation.metrics import mean_ci95
from metarec.evaluation.plots import plot_learning_curves, plot_metric_by
from metarec.evaluation.report import ResultRow, ci_metric
from metarec.protocols.coldstart_names import FINETUNE_POLICY, META
from metarec.protocols.experiment import Experiment, Plot

PROTOCOL = "coldstart-ml"
COMPARE_WITH = ("no-adapt", "finetune-all")


@dataclass(frozen=True)
class Comparison:
    method: str
    baseline: str
    k: int
    diff: float  # mean over folds of method - baseline (NDCG@10)
    ci95: tuple[float, float]
    per_fold: tuple[float, ...]  # the differences, in fold order
    metric: str = "NDCG@10"  # what is compared

    @property
    def n_folds(self) -> int:
        return len(self.per_fold)

    @property
    def verdict(self) -> str:
        if self.n_folds < 2:
            return "one fold: no interval"
        if self.ci95[0] > 0:
            return "better"
        if self.ci95[1] < 0:
            return "worse"
        return "not distinguishable"


def summarise(cfg, runs) -> list[ResultRow]:
    """One row per (method, K) in the config's method order, every fold's figures pooled."""

    rows = []
    for method in cfg.methods:
        for k in cfg.ks:
            per_fold = [r.scores[(method, k)] for r in runs if (method, k) in r.scores]
            if not per_fold:
                continue
            fold_metrics = [s.metrics(with_logloss=method != "popularity") for s in per_fold]
            metrics = {}
            for name in fold_metrics[0]:
                values = [m[name] for m in fold_metrics]
                metrics[name] = values[0] if len(values) == 1 else ci_metric(values)
            cost = _cost(method, k, runs, per_fold)
            policy = cfg.policy.name if method in META else _policy_of(method)
            rows.append(ResultRow(method, {"K": k, "policy": policy}, metrics, cost))
    return rows


def compare(cfg, runs) -> list[Comparison]:
    """Paired per-fold NDCG@10 differences of each meta-learner against ``COMPARE_WITH``."""

    out = []
    for method in (m for m in META if m in cfg.methods):
        for baseline in (b for b in COMPARE_WITH if b in cfg.methods):
            for k in cfg.ks:
                diffs = [
                    np.mean(r.scores[(method, k)].ndcg) - np.mean(r.scores[(baseline, k)].ndcg)
                    for r in runs
                ]
                mean, ci = mean_ci95(diffs)
                out.append(Comparison(method, baseline, k, mean, ci, tuple(map(float, diffs))))
    return out


def write_coldstart(cfg, dataset: Dataset, runs, out: Path) -> dict:
    results = summarise(cfg, runs)
    comparisons = compare(cfg, runs)
    device = str(cfg.pretrain.resolved_device())
    exp = Experiment(PROTOCOL, dataset.name, [cfg.fold_seed], out, cfg.title, device=device)
    exp.add(*results)
    plots = [Plot("NDCG@10 against K", "ndcg_by_k.png", partial(plot_metric_by, results, *_BY_K))]
    plots += meta_curve_plot(runs, "Meta-validation NDCG@10, all K >= 2")
    extra = fold_extra(cfg, runs, comparisons, _settings(cfg))
    sections = [
        ("NDCG@10 by K (mean ± 95% CI half-width over folds)", pivot(results, "NDCG@10")),
        (
            "Meta-learners against no adaptation and fine-tuning all parameters",
            comparison_table(comparisons),
        ),
    ]
    res = exp.finish(
        _intro(cfg, dataset, runs),
        notes=_notes(cfg, runs, comparisons),
        sections=sections,
        plots=plots,
        extra=extra,
    )
    return {**res, "comparisons": comparisons}


_BY_K = ("NDCG@10", "K")


def meta_curve_plot(runs, caption: str) -> list[Plot]:
    """The first fold's meta-validation curves as a plot (none when no meta-learner ran)."""
    curves = {m: c for m, c in runs[0].curves.items() if c}
    if not curves:
        return []
    draw = partial(plot_learning_curves, curves, xlabel="meta step")
    return [Plot(f"{caption} (fold {runs[0].fold})", "meta_validation.png", draw)]


def fold_extra(cfg, runs, comparisons: list[Comparison], settings: dict) -> dict:
    """What a fold protocol's metrics.json holds beside its rows."""
    return {
        "quick": cfg.quick,
        "folds": [r.fold for r in runs],
        "n_folds": cfg.n_folds,
        "pretrain": {str(r.fold): r.pretrain for r in runs},
        "finetune_lr": {str(r.fold): r.chosen_lr for r in runs},
        "comparisons": [comparison_doc(c) for c in comparisons],
        "settings": settings,
    }


def comparison_doc(c: Comparison) -> dict:
    return {
        "method": c.method,
        "baseline": c.baseline,
        "K": c.k,
        f"{c.metric}_diff": {"mean": c.diff, "ci95": list(c.ci95)},
        "per_fold": list(c.per_fold),
        "verdict": c.verdict,
    }


def pivot(results: list[ResultRow], metric: str) -> str:
    """Markdown: one row per method, one column per K, cells ``mean ± half-width``; the best
    method of each K in bold."""
    ks = sorted({r.setting["K"] for r in results})
    methods = list(dict.fromkeys(r.method for r in results))
    cell = {(r.method, r.setting["K"]): r.metrics.get(metric) for r in results}
    best = {
        k: max(
            (m for m in methods if cell.get((m, k)) is not None),
            key=lambda m: _mean(cell[(m, k)]),
        )
        for k in ks
    }
    lines = ["| method | " + " | ".join(f"K={k}" for k in ks) + " |"]
    lines.append("|---|" + "---:|" * len(ks))
    for m in methods:
        cells = []
        for k in ks:
            v = cell.get((m, k))
            text = "-" if v is None else _format(v)
            cells.append(f"**{text}**" if best[k] == m else text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(comparisons: list[Comparison]) -> str:
    """Markdown: the metric's difference per method, baseline and K, with the paired
    interval (one table per metric)."""
    if not comparisons:
        return "No meta-learner was run."
    lines = [
        f"| method | against | K | Δ{comparisons[0].metric} | 95% CI | verdict |",
        "|---|---|---:|---:|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.method} | {c.baseline} | {c.k} | {c.diff:+.4f} | "
            f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}] | {c.verdict} |"
        )
    return "\n".join(lines)


def _mean(v) -> float:
    return float(v["mean"]) if isinstance(v, dict) else float(v)


def _format(v) -> str:
    if isinstance(v, dict):
        lo, hi = v["ci95"]
        return f"{v['mean']:.4f} ± {(hi - lo) / 2:.4f}"
    return f"{v:.4f}"


def _cost(method: str, k: int, runs, per_fold) -> dict[str, float]:
    cost: dict[str, float] = {}
    for key in ("train_seconds", "seconds_to_best", "meta_steps"):
        spent = [r.cost[method][key] for r in runs if key in r.cost.get(method, {})]
        if spent:
            cost[key] = float(np.mean(spent))
    times = [t for s in per_fold for t in s.adapt_ms]
    if times:
        cost["adapt_ms_median"] = float(np.median(times))
        cost["adapt_ms_p95"] = float(np.percentile(times, 95))
    peaks = [r.cost[method]["peak_rss_mb"] for r in runs if method in r.cost]
    if peaks:
        cost["peak_rss_mb"] = float(max(peaks))
    return cost


def _policy_of(method: str) -> str:

    return FINETUNE_POLICY.get(method, "-")


def _settings(cfg) -> dict:
    return {
        "ks": list(cfg.ks),
        "n_query": cfg.n_query,
        "select_k": cfg.select_k,
        "policy": cfg.policy.name,
        **cfg.inner_loop(),
        "finetune_steps": cfg.finetune_steps,
        "finetune_lrs": list(cfg.finetune_lrs),
        "pretrain_time_budget_s": cfg.pretrain.time_budget_s,
        "meta_time_budget_s": cfg.meta.time_budget_s,
        "meta_batch_size": cfg.meta.meta_batch_size,
    }


def _intro(cfg, dataset: Dataset, runs) -> str:
    folds = ", ".join(str(r.fold) for r in runs)
    return (
        f"Dataset {dataset.name} ({dataset.n_users:,} users, {dataset.n_items:,} items); users in "
        f"{cfg.n_folds} folds (seed {cfg.fold_seed}), run here: fold(s) {folds}. For each fold "
        f"the other users are split into validation users ({cfg.valid_fraction:g}) and training "
        "users; SeqRec is pretrained and the meta-learners meta-trained on the training users "
        "only, learning rates and early stopping are chosen on the validation users (as unseen "
        "as the cold users), then every method is scored on the "
        f"fold's users: support = first K interactions, query = up to the next {cfg.n_query}, "
        "ranked over the full catalogue minus the support items. AUC / LogLoss: the like/click "
        "logit (the dot-product score) of the query items against as many items the user never "
        "interacted with. Figures are the mean over folds ± the 95% CI half-width; adaptation "
        "times are per user, pooled over folds."
    )


def _notes(cfg, runs, comparisons: list[Comparison]) -> list[str]:
    loop = cfg.inner_loop()
    notes = [
        f"Meta-learners: {cfg.policy.name!r} fast parameters, {loop['inner_steps']} SGD inner "
        f"steps (lr {loop['inner_lr']:g}; Meta-SGD learns per-tensor rates from there), "
        f"meta-trained on tasks at every K >= 2 (AdamW outer rate {loop['outer_lr']:g}; "
        f"Reptile: interpolation step {cfg.learner_spec('reptile').config.step_size:g}), "
        "early-stopped on the validation users' tasks at every K >= 2 "
        f"(meta-batch {cfg.meta.meta_batch_size}, budget {cfg.meta.time_budget_s} s).",
        f"Fine-tuning baselines: {cfg.finetune_steps} AdamW steps, learning rate chosen from "
        f"{list(cfg.finetune_lrs)} on the validation users at K={cfg.select_k}; chosen: "
        + "; ".join(f"fold {r.fold}: {r.chosen_lr}" for r in runs),
        "At K=1 the support set holds no next-item transition: adaptation has nothing to step "
        "on, so each method shows its starting point (a meta-learned one for the meta-learners).",
    ]
    if (weight := getattr(cfg, "like_weight", 0.0)) > 0:
        notes.append(
            f"Support loss with feedback (--like-weight {weight:g}): next-item + {weight:g} x "
            "binary cross-entropy of liked (rating > 3) / disliked support items, for every "
            "adapting method and in the meta-training tasks; no-adapt reads the items only."
        )
    pre = [r.pretrain for r in runs]
    notes.append(
        "Pretraining per fold: "
        + "; ".join(
            f"fold {r.fold}: valid NDCG@10 {p['valid_NDCG@10']:.4f}, {p['train_seconds']:.0f} s"
            for r, p in zip(runs, pre, strict=True)
        )
    )
    if comparisons:
        lines = [
            f"{c.method} vs {c.baseline} at K={c.k}: ΔNDCG@10 {c.diff:+.4f} "
            f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}] — {c.verdict}"
            for c in comparisons
            if c.k == cfg.select_k
        ]
        notes.append(
            f"Paired per-fold differences at K={cfg.select_k} (all K in metrics.json): "
            + "; ".join(lines)
        )
    if cfg.quick:
        notes.append("Quick smoke-test budgets: not a reported result.")
    return notes
