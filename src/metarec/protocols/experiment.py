"""The composition every protocol ends in: methods in, metrics.json + report.md + plots out.

Like cornac's ``Experiment(split, models, metrics).run()``: a protocol prepares its data, names
its methods (a name and a callable for one seed) and hands them to an ``Experiment``, which runs
them, measures peak memory, keeps one ``ResultRow`` per (method, setting) and, in ``finish``,
writes the one schema through ``evaluation.report``. Protocols whose methods need their own loop
(folds, budgets, fractions) ``add`` rows themselves and still finish here, so no protocol owns
a writer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metarec.evaluation.report import ResultRow, ci_metric, write_metrics_json, write_report_md
from metarec.protocols.resources import peak_rss_mb, reset_peak_rss


@dataclass
class MethodRun:
    """What one method returns for one seed: test metrics, cost, and its validation curve."""

    metrics: dict[str, float]
    cost: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[int, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Method:
    """A method of a protocol: its row name and how to run it for one seed."""

    name: str
    run: Callable[[int], MethodRun]


@dataclass(frozen=True)
class Plot:
    """A figure of the report: ``draw(path)`` writes ``file`` (inside the output folder)."""

    caption: str
    file: str
    draw: Callable[[Path], Path]


def summarise(
    method: str, runs: Sequence[MethodRun], reported: Sequence[str], setting: Mapping[str, Any]
) -> ResultRow:
    """One row over seeds: a metric's value (one seed) or its mean and 95% CI; mean costs, the
    highest peak memory."""
    metrics = {}
    for name in reported:
        values = [r.metrics[name] for r in runs]
        metrics[name] = values[0] if len(values) == 1 else ci_metric(values)
    cost = {k: sum(r.cost[k] for r in runs) / len(runs) for k in runs[0].cost}
    if "peak_rss_mb" in cost:
        cost["peak_rss_mb"] = max(r.cost["peak_rss_mb"] for r in runs)
    return ResultRow(method=method, setting=dict(setting), metrics=metrics, cost=cost)


class Experiment:
    """One protocol run on one dataset: its rows, and the files they become."""

    def __init__(
        self,
        protocol: str,
        dataset: str,
        seeds: Sequence[int],
        out: str | Path,
        title: str,
        *,
        device: str = "cpu",
        log: Callable[[str], None] = print,
    ) -> None:
        self.protocol, self.dataset, self.title = protocol, dataset, title
        self.seeds, self.out, self.device, self.log = list(seeds), Path(out), device, log
        self.rows: list[ResultRow] = []
        self.runs: dict[str, list[MethodRun]] = {}
        self.out.mkdir(parents=True, exist_ok=True)

    def add(self, *rows: ResultRow) -> None:
        self.rows.extend(rows)

    def run(
        self,
        methods: Sequence[Method],
        reported: Sequence[str],
        setting: Mapping[str, Any],
        brief: Callable[[MethodRun], str] = lambda run: "done",
    ) -> list[ResultRow]:
        """Every method for every seed (seed-major, as one process would), peak memory per
        run; one summarised row per method, added to the experiment and returned."""
        for method in methods:
            self.runs.setdefault(method.name, [])
        for seed in self.seeds:
            for method in methods:
                self.log(f"[seed {seed}] {method.name} ...")
                reset_peak_rss()
                run = method.run(seed)
                run.cost["peak_rss_mb"] = peak_rss_mb()
                self.runs[method.name].append(run)
                self.log(f"[seed {seed}] {method.name}: {brief(run)}")
        rows = [summarise(m.name, self.runs[m.name], reported, setting) for m in methods]
        self.add(*rows)
        return rows

    def curves(self) -> dict[str, list[tuple[int, float]]]:
        """The first seed's curve of every method that has one."""
        return {m: runs[0].curve for m, runs in self.runs.items() if runs and runs[0].curve}

    def finish(
        self,
        intro: str,
        *,
        notes: Sequence[str] = (),
        sections: Sequence[tuple[str, str]] = (),
        plots: Sequence[Plot] = (),
        extra: Mapping[str, Any] | None = None,
        title: str | None = None,
    ) -> dict[str, Any]:
        """Draw the plots, write metrics.json and report.md; {"results", "metrics_json",
        "report", "plots"} (paths inside ``out``)."""
        drawn = [(p.caption, p.draw(self.out / p.file)) for p in plots]
        metrics_json = write_metrics_json(
            self.out, self.protocol, self.dataset, self.rows, self.seeds, extra, device=self.device
        )
        report = write_report_md(
            self.out, title or self.title, intro, self.rows, drawn, notes, sections
        )
        return {
            "results": self.rows,
            "metrics_json": metrics_json,
            "report": report,
            "plots": [path for _, path in drawn],
        }
