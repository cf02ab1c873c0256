"""The one writer every evaluation uses: metrics.json (schema in PROTOCOLS.md), report.md, plots.

A run collects one ``ResultRow`` per (method, setting), then calls ``write_metrics_json`` and
``write_report_md``. Names are checked on the way in (``ValueError``) and on the way back
(``read_metrics_json`` raises ``DataError`` naming the file and the key).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from metarec.errors import DataError
from metarec.evaluation.plots import plot_learning_curves, plot_metric_bars
from metarec.evaluation.results import (
    METRIC_NAMES,
    SLUG,
    ResultRow,
    check_row,
    ci_metric,
)

__all__ = [
    "METRIC_NAMES",
    "ResultRow",
    "ci_metric",
    "format_table",
    "plot_learning_curves",
    "plot_metric_bars",
    "read_metrics_json",
    "write_metrics_json",
    "write_report_md",
]

_TOP_KEYS = ("protocol", "dataset", "metarec_version", "created", "seeds", "machine", "results")
_MACHINE_KEYS = ("cpus", "torch_threads", "device")


def _check_document(doc: Any) -> None:
    """Raise ValueError naming the first key that breaks PROTOCOLS.md's metrics.json schema."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"top level must be an object, got {type(doc).__name__}")
    for key in _TOP_KEYS:
        if key not in doc:
            raise ValueError(f"missing key '{key}'")
    for key in ("protocol", "dataset", "metarec_version", "created"):
        if not isinstance(doc[key], str) or not doc[key]:
            raise ValueError(f"'{key}' must be a non-empty string, got {doc[key]!r}")
    seeds = doc["seeds"]
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"'seeds' must be a list of integers, got {seeds!r}")
    if not isinstance(doc["machine"], Mapping):
        raise ValueError("'machine' must be an object")
    for key in _MACHINE_KEYS:
        if key not in doc["machine"]:
            raise ValueError(f"missing key 'machine.{key}'")
    if not isinstance(doc["results"], list):
        raise ValueError("'results' must be a list")
    seen = set()
    for i, row in enumerate(doc["results"]):
        if not isinstance(row, Mapping):
            raise ValueError(f"results[{i}] must be an object")
        check_row(row, f"results[{i}]")
        ident = json.dumps([row["method"], row["setting"]], sort_keys=True)
        if ident in seen:
            raise ValueError(f"results[{i}]: a second row for the same (method, setting) {ident}")
        seen.add(ident)


def _machine(device: str) -> dict[str, Any]:
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": cpus, "torch_threads": torch.get_num_threads(), "device": device}


def write_metrics_json(
    path_dir: str | Path,
    protocol: str,
    dataset: str,
    results: Sequence[ResultRow],
    seeds: Sequence[int],
    extra: Mapping[str, Any] | None = None,
    *,
    device: str = "cpu",
) -> Path:
    """Write path_dir/metrics.json in PROTOCOLS.md's schema, plus ``extra`` top-level keys.

    Replaces the file atomically, so a failed write never leaves a half-written one behind.
    """
    from metarec import __version__

    if not SLUG.fullmatch(protocol):
        raise ValueError(f"protocol name {protocol!r} must be lowercase words joined by hyphens")
    doc: dict[str, Any] = {
        "protocol": protocol,
        "dataset": dataset,
        "metarec_version": __version__,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seeds": [int(s) for s in seeds],
        "machine": _machine(device),
        "results": [r.to_dict() for r in results],
    }
    for key, value in (extra or {}).items():
        if key in doc:
            raise ValueError(f"extra key '{key}' would overwrite a schema key")
        doc[key] = value
    _check_document(doc)
    try:
        text = json.dumps(doc, indent=2, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metrics.json content is not plain JSON: {err}") from err
    out = Path(path_dir) / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


def read_metrics_json(path: str | Path) -> dict[str, Any]:
    """The validated document of a metrics.json file (or of the one inside folder ``path``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such metrics file") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    try:
        _check_document(doc)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from err
    return doc


def _format_value(value: Any) -> str:
    """4 decimals for floats, 'mean ± half-width' for {"mean", "ci95"}, '-' when absent."""
    if value is None:
        return "-"
    if isinstance(value, Mapping) and "mean" in value:
        lo, hi = value["ci95"]
        return f"{value['mean']:.4f} ± {(hi - lo) / 2:.4f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _ordered_keys(dicts: Sequence[Mapping[str, Any]], first: Sequence[str] = ()) -> list[str]:
    """Union of keys in first-appearance order, with names in ``first`` leading in its order."""
    seen = list(dict.fromkeys(k for d in dicts for k in d))
    rank = {name: i for i, name in enumerate(first)}
    return sorted(seen, key=lambda k: (rank.get(k, len(rank)), seen.index(k)))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_table(results: Sequence[ResultRow]) -> str:
    """Rows: method + one column per setting key; then metric columns, then cost columns."""
    settings = _ordered_keys([r.setting for r in results])
    metrics = _ordered_keys([r.metrics for r in results], METRIC_NAMES)
    costs = _ordered_keys([r.cost for r in results])
    header = ["method", *settings, *metrics, *costs]
    align = ["---"] * (1 + len(settings)) + ["---:"] * (len(metrics) + len(costs))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for r in results:
        cells = [r.method, *(_format_value(r.setting.get(k)) for k in settings)]
        cells += [_format_value(r.metrics.get(k)) for k in metrics]
        cells += [_format_value(r.cost.get(k)) for k in costs]
        lines.append("| " + " | ".join(map(_md_cell, cells)) + " |")
    return "\n".join(lines)


def write_report_md(
    path_dir: str | Path,
    title: str,
    intro: str,
    results: Sequence[ResultRow],
    plots: Sequence[tuple[str, Path]] = (),
    notes: Sequence[str] = (),
    sections: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write path_dir/report.md: title, intro, (heading, markdown) sections, results table,
    (caption, png) plots, note bullets.

    Plots are linked by paths relative to path_dir, so the folder can be moved as a whole.
    """
    out_dir = Path(path_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", intro.strip()]
    parts += [f"## {heading}\n\n{body.strip()}" for heading, body in sections]
    parts += ["## Results" if not sections else "## All results", _markdown_table(results)]
    for caption, plot in plots:
        rel = Path(os.path.relpath(Path(plot).resolve(), out_dir.resolve())).as_posix()
        parts.append(f"### {caption}\n\n![{caption}]({rel})")
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"- {note}" for note in notes))
    out = out_dir / "report.md"
    out.write_text("\n\n".join(p for p in parts if p) + "\n", encoding="utf-8")
    return out


def format_table(results: Sequence[ResultRow], metrics: Sequence[str]) -> str:
    """Plain-text table for a terminal: method, setting, then the given metrics, aligned."""
    header = ["method", "setting", *metrics]
    rows = [
        [r.method, ", ".join(f"{k}={v}" for k, v in r.setting.items()) or "-"]
        + [_format_value(r.metrics.get(m)) for m in metrics]
        for r in results
    ]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        text = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        return "  ".join(text).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *map(fmt, rows)])
