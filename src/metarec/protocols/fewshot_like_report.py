"""fewshot-like results: per (method, budget, stage, test set) AUC mean and 95% CI over seeds.

Rows: ``setting = {"samples": n, "adapted": bool, "test": "all" | "subset"}``. "all" is the
whole test set (every eligible target of the test users); "subset" the seeded subset the
cross-encoder is scored on, where every method is scored too. The report holds a pivot of AUC
by budget for each test set (learned methods before -> after fitting), the check of every learned
method against every baseline at every budget, and a plot of AUC against the budget.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from metarec.evaluation.plots import plot_metric_by
from metarec.evaluation.report import ResultRow, ci_metric
from metarec.protocols.experiment import Experiment, Plot
from metarec.protocols.fewshot_like_names import BASELINES, CROSS_ENCODERS

PROTOCOL = "fewshot-like"


def summarise(cfg, fits) -> list[ResultRow]:
    """One row per (method, budget, adapted, test set) with the seeds' AUC pooled."""
    rows = []
    for method in cfg.methods:
        for adapted in (False, True):
            for budget in cfg.budgets:
                mine = [
                    f for f in fits if (f.method, f.budget, f.adapted) == (method, budget, adapted)
                ]
                if not mine:
                    continue
                cost = {"train_seconds": float(np.mean([f.seconds for f in mine]))}
                for test, values in (
                    ("all", [f.auc for f in mine if f.auc is not None]),
                    ("subset", [f.auc_subset for f in mine]),
                ):
                    if values:
                        setting = {"samples": budget, "adapted": adapted, "test": test}
                        rows.append(ResultRow(method, setting, {"AUC": ci_metric(values)}, cost))
    return rows


def beats_baselines(cfg, rows: list[ResultRow], test: str) -> list[str]:
    """Markdown lines: each learned method against the best baseline at every budget."""

    mean = {
        (r.method, r.setting["samples"]): r.metrics["AUC"]["mean"]
        for r in rows
        if r.setting["adapted"] and r.setting["test"] == test
    }
    lines = []
    for method in (m for m in cfg.methods if m not in BASELINES):
        verdicts = []
        for b in cfg.budgets:
            base = [mean[(m, b)] for m in BASELINES if (m, b) in mean]
            if (method, b) not in mean or not base:
                continue
            gap = mean[(method, b)] - max(base)
            verdicts.append(f"n={b}: {gap:+.4f} ({'above' if gap > 0 else 'NOT above'})")
        if verdicts:
            lines.append(f"{method} vs best baseline ({test} test set) — " + "; ".join(verdicts))
    return lines


def pivot(rows: list[ResultRow], test: str) -> str:
    """Markdown: method rows, budget columns, 'before -> after' AUC (mean ± CI half-width)."""
    budgets = sorted({r.setting["samples"] for r in rows})
    cell: dict[tuple[str, int, bool], dict] = {
        (r.method, r.setting["samples"], r.setting["adapted"]): r.metrics["AUC"]
        for r in rows
        if r.setting["test"] == test
    }
    methods = list(dict.fromkeys(m for m, _, _ in cell))
    lines = ["| method | " + " | ".join(f"n={b}" for b in budgets) + " |"]
    lines.append("|---|" + "---:|" * len(budgets))
    for m in methods:
        cells = []
        for b in budgets:
            after, before = cell.get((m, b, True)), cell.get((m, b, False))
            text = "-" if after is None else _fmt(after)
            if before is not None:
                text = f"{before['mean']:.4f} → {text}"
            cells.append(text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v: dict) -> str:
    lo, hi = v["ci95"]
    return f"{v['mean']:.4f} ± {(hi - lo) / 2:.4f}"


def write_fewshot_like(cfg, data, fits, info: dict, out: Path) -> dict:
    rows = summarise(cfg, fits)
    exp = Experiment(PROTOCOL, data.dataset.name, cfg.seeds, out, cfg.title)
    exp.add(*rows)
    plots = []
    for test in ("all", "subset"):
        after = [r for r in rows if r.setting["adapted"] and r.setting["test"] == test]
        if after:
            caption = f"AUC against labelled samples (test set: {test})"
            draw = partial(plot_metric_by, after, "AUC", "samples")
            plots.append(Plot(caption, f"auc_by_budget_{test}.png", draw))
    extra = {"quick": cfg.quick, "budgets": list(cfg.budgets), "run": info}
    extra["settings"] = _settings(cfg)
    sections = [
        (f"AUC on the {title} ({n:,} samples)", pivot(rows, test))
        for test, title, n in (
            ("all", "whole test set", info["n_test"]),
            ("subset", "cross-encoder's test subset", info["n_test_subset"]),
        )
        if any(r.setting["test"] == test for r in rows)  # only cross-encoders: no "all" rows
    ]
    notes = beats_baselines(cfg, rows, "all") + beats_baselines(cfg, rows, "subset")
    notes += _notes(cfg, info, fits)
    intro = _intro(cfg, data, info)
    return exp.finish(intro, notes=notes, sections=sections, plots=plots, extra=extra)


def _settings(cfg) -> dict:
    from dataclasses import asdict

    return {
        "history": cfg.history,
        "threshold": cfg.threshold,
        "split_seed": cfg.split_seed,
        "evaluate_on": cfg.evaluate_on,
        "head": asdict(cfg.head),
        "reptile": asdict(cfg.reptile),
        "cross_encoder": {k: v for k, v in asdict(cfg.cross).items()},
        "lora": asdict(cfg.lora),
        "cross_encoder_meta": asdict(cfg.ce_meta),
        "pretrain_time_budget_s": cfg.pretrain.time_budget_s,
        "ce_test_samples": cfg.ce_test_samples,
    }


def _intro(cfg, data, info: dict) -> str:
    u = info["users"]
    return (
        f"Dataset {data.dataset.name}: {info['n_samples']:,} samples (the {cfg.history} most "
        f"recent rated items before a target, label = rating > {cfg.threshold:g}); users split "
        f"8:1:1 with seed {cfg.split_seed} ({u['train']} / {u['valid']} / {u['test']}); scored "
        f"on the {cfg.evaluate_on} users' {info['n_test']:,} samples (positive rate "
        f"{info['test_positive_rate']:.3f}). Budgets {list(cfg.budgets)} labelled samples of "
        f"train users, seeds {list(cfg.seeds)}; AUC mean ± 95% CI half-width over seeds. SeqRec "
        "was pretrained (next item) on the train users' implicit sequences only, in "
        f"{info['pretrain_seconds']:.0f} s. Cells of learned methods read 'start → fitted'."
    )


def _notes(cfg, info: dict, fits) -> list[str]:

    notes = [
        "seqrec-head and seqrec-head-reptile also use each labelled sample's own history "
        "ratings as targets (each of its 11 rated items predicted from the other 10); no rating "
        "outside the drawn samples is read. seqrec-head-labels-only fits on the drawn targets "
        "alone.",
        "The cross-encoders are scored on a seeded subset of the test set (CPU cost); every "
        "method's AUC on that subset is in the second table, for a like-for-like comparison.",
        f"Whole run: {info['wall_seconds']:.0f} s wall, peak RSS {info['peak_rss_mb']:.0f} MB.",
    ]
    if meta := info.get("ce_meta"):
        m = cfg.ce_meta
        notes.append(
            f"cross-encoder-reptile: start meta-learned once per run ({meta['seconds']:.0f} s; "
            f"scoring it on the subset {meta['score_start_seconds']:.0f} s) with Reptile, "
            f"{m.meta_steps} meta steps x {m.tasks_per_step} tasks, {m.inner_steps} inner "
            f"{m.inner_optimizer} steps (lr {m.inner_lr:g}), step size {m.step_size:g}; a task is "
            f"one train user's implicit behaviour: {m.support} windows of "
            f"{cfg.cross.history_items} items (titles, no rating) with the next item (1) and an "
            "unseen item (0), as support, as many as query. No rating of a train user is read."
        )
    for method in (m for m in CROSS_ENCODERS if m in cfg.methods):
        per = {
            b: np.mean([f.seconds for f in fits if f.method == method and f.budget == b])
            for b in cfg.budgets
        }
        notes.append(
            f"{method} seconds per seed (fit + scoring the subset): "
            + ", ".join(f"n={b}: {s:.0f} s" for b, s in per.items())
        )
    if cfg.quick:
        notes.append("Quick smoke-test budgets: not a reported result.")
    return notes
