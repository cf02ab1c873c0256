"""Report figures: learning curves and metric bars, drawn with matplotlib's Agg canvas.

The figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas, never through
``pyplot``, so nothing here changes the process-wide backend or keeps figures alive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from metarec.evaluation.results import ResultRow


def row_label(method: str, setting: Mapping[str, Any]) -> str:
    """'method (K=5, policy=lora)', or just the method when the setting is empty."""
    if not setting:
        return method
    return f"{method} ({', '.join(f'{k}={v}' for k, v in setting.items())})"


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_learning_curves(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    path: str | Path,
    ylabel: str = "validation NDCG@10",
    xlabel: str = "epoch",
) -> Path:
    """One line per method of (epoch, value) points, epoch on x; writes a PNG at path."""
    if not curves or not any(curves.values()):
        raise ValueError("plot_learning_curves needs at least one method with points")
    fig = _new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    for method, points in curves.items():
        if not points:
            continue
        epochs, values = zip(*sorted(points), strict=True)
        ax.plot(epochs, values, marker="o", markersize=3, label=method)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _mean_and_half_width(value: float | Mapping[str, Any]) -> tuple[float, float]:
    if isinstance(value, Mapping):
        lo, hi = value["ci95"]
        return float(value["mean"]), (float(hi) - float(lo)) / 2.0
    return float(value), 0.0


def plot_metric_bars(results: Sequence[ResultRow], metric: str, path: str | Path) -> Path:
    """Horizontal bars of one metric per result row, with 95% CI whiskers where present."""
    rows = [r for r in results if metric in r.metrics]
    if not rows:
        raise ValueError(f"no result row has metric '{metric}'")
    means, halves = zip(*(_mean_and_half_width(r.metrics[metric]) for r in rows), strict=True)
    labels = [row_label(r.method, r.setting) for r in rows]
    fig = _new_figure(6.4, 1.0 + 0.35 * len(rows))
    ax = fig.add_subplot()
    positions = range(len(rows))
    errors = None if not any(h > 0 for h in halves) else halves
    bars = ax.barh(positions, means, xerr=errors, capsize=3, color="tab:blue", alpha=0.8)
    ax.bar_label(bars, labels=[f"{m:.4f}" for m in means], padding=3, fontsize="small")
    ax.set_yticks(list(positions), labels=labels, fontsize="small")
    ax.invert_yaxis()  # first row on top, as in the table
    ax.set_xlabel(metric)
    top = max((m + h for m, h in zip(means, halves, strict=True) if math.isfinite(m)), default=1)
    ax.set_xlim(left=min(0.0, *means), right=top * 1.2 if top > 0 else 1.0)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_metric_by(
    results: Sequence[ResultRow],
    metric: str,
    x: str,
    path: str | Path,
    references: Mapping[str, float] | None = None,
    log_x: bool = True,
) -> Path:
    """One line per method: ``metric`` against the positive numeric setting ``x`` (e.g. K), with
    95% CI bands where the metric is {"mean", "ci95"}; ``references`` are labelled horizontal
    lines (a zero-shot score, a published figure); ``log_x``: a log-scaled x axis."""
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for r in results:
        if metric in r.metrics and float(r.setting.get(x, 0)) > 0:
            mean, half = _mean_and_half_width(r.metrics[metric])
            lines.setdefault(r.method, []).append((float(r.setting[x]), mean, half))
    if not lines:
        raise ValueError(f"no result row has metric '{metric}' and setting '{x}'")
    fig = _new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    for method, points in lines.items():
        xs, means, halves = (list(v) for v in zip(*sorted(points), strict=True))
        (line,) = ax.plot(xs, means, marker="o", label=method)
        lo = [m - h for m, h in zip(means, halves, strict=True)]
        hi = [m + h for m, h in zip(means, halves, strict=True)]
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.12)
    for i, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, ls=("--", ":", "-.")[i % 3], color="grey", lw=1.2, label=label)
    if log_x:
        ax.set_xscale("log")
    ticks = sorted({p[0] for points in lines.values() for p in points})
    ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # no "6x10^1" over the "64" tick
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    return _save(fig, path)


def plot_scaling(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    xlabel: str = "size",
    ylabel: str = "seconds",
) -> Path:
    """Log-log lines of (size, cost) points, one per named series, with a dashed linear guide
    through each series' first point."""
    fig = _new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    for name, points in series.items():
        xs, ys = (list(v) for v in zip(*sorted(points), strict=True))
        (line,) = ax.plot(xs, ys, marker="o", label=name)
        ax.plot(xs, [ys[0] * x / xs[0] for x in xs], ls="--", color=line.get_color(), alpha=0.4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return _save(fig, path)
