"""metrics.json, report.md and plots of a transfer-scientific run."""

from __future__ import annotations

from functools import partial
from typing import Any

from metarec.evaluation.plots import plot_learning_curves, plot_metric_by
from metarec.evaluation.report import ResultRow
from metarec.models.surfaces import FUSION_WEIGHT
from metarec.protocols.experiment import Experiment, Plot
from metarec.workflows.finetune import METRICS

# the target-only baselines of the protocol (every other row is a transferred model)
BASELINES = ("sasrec-id", "text-only")

# VQ-Rec (Hou et al., WWW 2023) on Scientific, same data and protocol: the bar of issue 4.
PUBLISHED = {"Recall@10": 0.1211, "NDCG@10": 0.0643}


def before_after(rows: list[ResultRow], metric: str = "NDCG@10") -> str:
    """Markdown: one row per method, the zero-shot score, then one column per target fraction."""
    zero = next((r.metrics[metric] for r in rows if r.method == "zero-shot"), None)
    fractions = sorted({r.setting["fraction"] for r in rows if r.setting["fraction"] > 0})
    untrained = ("zero-shot", "text-similarity")
    methods = list(dict.fromkeys(r.method for r in rows if r.method not in untrained))
    cell = {(r.method, r.setting["fraction"]): r.metrics[metric] for r in rows}
    best = {
        f: max((m for m in methods if (m, f) in cell), key=lambda m: cell[(m, f)])
        for f in fractions
    }
    head = "| method | before (zero-shot) | " + " | ".join(f"{f:.0%} of users" for f in fractions)
    lines = [head + " |", "|---|---:|" + "---:|" * len(fractions)]
    for m in methods:
        before = "-" if m in ("sasrec-id", "text-only") or zero is None else f"{zero:.4f}"
        cells = []
        for f in fractions:
            text = "-" if (m, f) not in cell else f"{cell[(m, f)]:.4f}"
            cells.append(f"**{text}**" if best[f] == m else text)
        lines.append(f"| {m} | {before} | " + " | ".join(cells) + " |")
    similar = next((r.metrics[metric] for r in rows if r.method == "text-similarity"), None)
    if similar is not None:
        lines.append(
            f"\nNo training: text-similarity (cosine of the raw text embeddings to the last "
            f"history item) {similar:.4f}."
        )
    return "\n".join(lines)


def verdicts(rows: list[ResultRow]) -> list[str]:
    """The issue's bars, each checked against this run's rows."""
    full = [r for r in rows if r.setting.get("fraction") == 1.0]
    out = []
    if full:
        best = max(full, key=lambda r: r.metrics["NDCG@10"])
        ok = all(best.metrics[k] >= v for k, v in PUBLISHED.items())
        out.append(
            f"Full target training, best: {best.method} NDCG@10 {best.metrics['NDCG@10']:.4f}, "
            f"Recall@10 {best.metrics['Recall@10']:.4f} vs VQ-Rec 0.0643 / 0.1211: "
            + ("reached" if ok else "not reached")
        )
        by = {r.method: r for r in full}
        if "lora" in by and "finetune-all" in by:
            ratio = by["lora"].metrics["NDCG@10"] / max(
                by["finetune-all"].metrics["NDCG@10"], 1e-12
            )
            share = by["lora"].cost.get("trainable_fraction", float("nan"))
            out.append(
                f"LoRA: {share:.2%} of the parameters trained, {ratio:.1%} of full fine-tuning's "
                "NDCG@10 (bar: at most 5%, at least 95%)"
            )
    tenth = [r for r in rows if r.setting.get("fraction") == 0.1]
    moved = [r for r in tenth if r.method not in BASELINES]
    alone = {r.method: r for r in tenth}.get("text-only")
    if moved and alone is not None:
        best = max(moved, key=lambda r: r.metrics["NDCG@10"])
        above = best.metrics["NDCG@10"] > alone.metrics["NDCG@10"]
        out.append(
            f"10% of target users: best transferred {best.method} NDCG@10 "
            f"{best.metrics['NDCG@10']:.4f} vs the text model trained on the target alone "
            f"{alone.metrics['NDCG@10']:.4f}: " + ("above" if above else "not above")
        )
    fused = [r for r in rows if FUSION_WEIGHT in r.setting]
    if fused:
        weights = ", ".join(
            f"{r.method} {r.setting['fraction']:g}: {r.setting['text_fusion_weight']:g}"
            for r in fused
        )
        out.append(f"Text-fusion weights picked on validation: {weights}")
    return out


TITLE = "transfer-scientific: a new domain from pretrained source domains"


def write_transfer_report(run: Any, seconds: float) -> dict:
    """``run``: the runner's ``transfer_scientific.Run`` (its config, datasets and rows)."""
    cfg, rows = run.cfg, run.rows
    exp = Experiment("transfer-scientific", cfg.target, [cfg.seed], cfg.out, TITLE)
    exp.add(*rows)
    refs = {r.method: r.metrics["NDCG@10"] for r in rows if r.setting["fraction"] == 0}
    refs["VQ-Rec (published)"] = PUBLISHED["NDCG@10"]
    first = {k: v for k, v in run.curves.items() if k.endswith(" 1")}
    plots = [
        Plot(
            "NDCG@10 by fraction of target users",
            "ndcg_by_fraction.png",
            partial(plot_metric_by, rows, "NDCG@10", "fraction", references=refs),
        ),
        Plot(
            "Validation NDCG@10, full target",
            "learning_curves.png",
            partial(plot_learning_curves, first),
        ),
    ]
    extra = {
        "sources": list(cfg.sources),
        "target": cfg.target,
        "wall_seconds": round(seconds, 1),
        "quick": cfg.quick,
    }
    intro = (
        f"Pretrained on {' + '.join(cfg.sources)} ({run.source.describe()}), moved to "
        f"{run.target.describe()} and adapted with {len(rows)} (method, fraction) runs in "
        f"{seconds / 60:.1f} minutes. Test: the target's given test rows, full-catalogue "
        "ranking, history excluded. Fractions are of the target's training users; every run is "
        "tested on all test users."
        + (" QUICK MODE: smoke-test budgets, not a result." if cfg.quick else "")
    )
    sections = [
        ("NDCG@10 before and after adaptation", before_after(rows)),
        ("Recall@10 before and after adaptation", before_after(rows, "Recall@10")),
        ("Bars", "\n".join(f"- {v}" for v in verdicts(rows)) or "-"),
    ]
    res = exp.finish(intro, sections=sections, plots=plots, extra=extra)
    return {**res, "metrics": METRICS}
