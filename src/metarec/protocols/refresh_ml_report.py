"""refresh-ml results: per-user scores -> rows per (method, period), the average, paired
comparisons, the NDCG-by-period plot, metrics.json and report.md (through ``Experiment``).

A period row's NDCG@10 / HR@10 is the mean over its test users with a 95% t-interval over those
users; the ``mean`` row averages the period means with a t-interval over the P periods. A paired
comparison pools every (period, test user) pair: the mean of method - baseline per-user NDCG@10
with the t-interval of those differences (the same users score under both, so it is paired).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from metarec.data.schema import Dataset
from metarec.evaluation.metrics import mean_ci95
from metarec.evaluation.plots import plot_metric_by
from metarec.evaluation.report import ResultRow, ci_metric
from metarec.protocols.experiment import Experiment, Plot

PROTOCOL = "refresh-ml"


@dataclass(frozen=True)
class Comparison:
    method: str
    baseline: str
    diff: float  # mean of per-(period, user) NDCG@10 differences
    ci95: tuple[float, float]
    n: int  # (period, user) pairs

    @property
    def verdict(self) -> str:
        if self.ci95[0] > 0:
            return "better"
        if self.ci95[1] < 0:
            return "worse"
        return "not distinguishable"

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "baseline": self.baseline,
            "NDCG@10_diff": self.diff,
            "ci95": list(self.ci95),
            "pairs": self.n,
            "verdict": self.verdict,
        }


def rows(scores) -> list[ResultRow]:
    """One row per (method, period), then one ``mean`` row per method."""
    out = []
    for method, periods in scores.items():
        for t, s in enumerate(periods, start=1):
            metrics = {"NDCG@10": ci_metric(s.ndcg), "HR@10": ci_metric(s.hr)}
            setting = {"period": t, "test_users": len(s.users)}
            out.append(ResultRow(method, setting, metrics, {"update_seconds": s.update_seconds}))
    for method, periods in scores.items():
        metrics = {
            "NDCG@10": ci_metric([float(s.ndcg.mean()) for s in periods]),
            "HR@10": ci_metric([float(s.hr.mean()) for s in periods]),
        }
        cost = {"update_seconds": float(np.mean([s.update_seconds for s in periods]))}
        out.append(ResultRow(method, {"period": "mean"}, metrics, cost))
    return out


def compare(scores, pairs) -> list[Comparison]:
    out = []
    for method, baseline in pairs:
        if method not in scores or baseline not in scores:
            continue
        diffs = []
        for a, b in zip(scores[method], scores[baseline], strict=True):
            assert np.array_equal(a.users, b.users)  # the same test users
            diffs.append(a.ndcg - b.ndcg)
        d = np.concatenate(diffs)
        mean, ci = mean_ci95(d)
        out.append(Comparison(method, baseline, mean, ci, len(d)))
    return out


def write_refresh_ml(cfg, ds: Dataset, scores, info: dict, pairs) -> dict:
    exp = Experiment(PROTOCOL, ds.name, [cfg.seed], cfg.out, cfg.title)
    result_rows = rows(scores)
    exp.add(*result_rows)
    comparisons = compare(scores, pairs)
    by_period = [r for r in result_rows if r.setting["period"] != "mean"]
    plot = Plot(
        "NDCG@10 on the next period, by update period (95% CI over test users)",
        "ndcg_by_period.png",
        partial(plot_metric_by, by_period, "NDCG@10", "period", log_x=False),
    )
    extra = {
        "quick": cfg.quick,
        "comparisons": [c.to_dict() for c in comparisons],
        "settings": _settings(cfg),
        **info,
    }
    sections = [
        ("Paired comparisons (NDCG@10, every period's test users pooled)", _table(comparisons))
    ]
    res = exp.finish(_intro(cfg, ds, info), sections=sections, plots=[plot], extra=extra)
    return {**res, "comparisons": comparisons}


def _table(comparisons: list[Comparison]) -> str:
    lines = [
        "| method | baseline | ΔNDCG@10 | 95% CI | pairs | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.method} | {c.baseline} | {c.diff:+.4f} | [{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}] "
            f"| {c.n} | {c.verdict} |"
        )
    return "\n".join(lines)


def _settings(cfg) -> dict:
    return {
        "n_updates": cfg.n_updates,
        "valid_frac": cfg.valid_frac,
        "replay_ratio": cfg.replay_ratio,
        "n_test": cfg.n_test,
        "max_users": cfg.max_users,
        "dim": cfg.spec.dim,
        "train": cfg.train.to_dict(),
        "finetune": cfg.finetune.to_dict(),
        "mixing": {"steps": cfg.mixing.steps, "lr": cfg.mixing.lr, "batch": cfg.mix_batch},
    }


def _intro(cfg, ds: Dataset, info: dict) -> str:
    sizes = ", ".join(f"{n:,}" for n in info["periods"])
    return (
        f"Dataset {ds.name} ({ds.n_users:,} users, {ds.n_items:,} items) cut by global time into "
        f"{cfg.n_updates + 2} periods of equal interaction count ({sizes}). A base id-only SeqRec "
        f"(dim {cfg.spec.dim}) is trained on period 0 ({info['base_seconds']:.0f} s); at each "
        f"period t = 1..{cfg.n_updates} every method updates its period t-1 model with period "
        "t's data and is tested on period t+1: up to "
        f"{cfg.n_test} interactions of each user seen before, each predicted from everything "
        "before it, ranked over the full catalogue minus the user's earlier items; a user's "
        "NDCG@10 is the mean over its targets. The latest "
        f"{cfg.valid_frac:.0%} of each update period is its validation window (epoch choice; not "
        "a training target). Period rows: 95% CI over test users; mean rows: over periods. "
        "full-retrain: from scratch on periods 0..t (the base's settings); finetune-new: the "
        "previous model fine-tuned on period t's targets (histories so far as input); "
        f"finetune-replay: plus {cfg.replay_ratio:g}x as many older targets drawn uniformly; "
        "meta-update: theta_t = theta_{t-1} + a (ft_t - theta_{t-1}), one sigmoid coefficient a "
        "per parameter tensor, fitted by Adam on the previous transition's next-period loss "
        "(at t = 1: base -> ft_1 against period 1's validation window) and applied to this one; "
        "no-update: the base model."
    )
