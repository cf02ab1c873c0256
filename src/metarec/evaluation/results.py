"""One result row per (method, setting), checked against PROTOCOLS.md's metrics.json schema.

Lives apart from the report writer so that the plots (which draw rows) and the writer (which
draws plots) both read it without importing each other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from metarec.evaluation.metrics import mean_ci95

METRIC_NAMES = (
    *(
        "HR@10",
        "Recall@10",
        "NDCG@10",
        "MRR@10",
        "Recall@50",
        "NDCG@50",
        "AUC",
        "UserAUC",
        "LogLoss",
    ),
    *("rps", "p50_ms", "p99_ms", "errors", "events_acked", "events_stored"),
)
AT_K = re.compile(r"(HR|Recall|NDCG|MRR)@[1-9][0-9]*")
SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
ROW_KEYS = ("method", "setting", "metrics", "cost")


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def check_metric(name: Any, value: Any, where: str) -> None:
    if not isinstance(name, str) or not (name in METRIC_NAMES or AT_K.fullmatch(name)):
        raise ValueError(
            f"{where}: unknown metric name {name!r}; expected one of {', '.join(METRIC_NAMES)} "
            "or HR|Recall|NDCG|MRR@k"
        )
    if isinstance(value, Mapping):
        ci = value.get("ci95")
        ok = set(value) == {"mean", "ci95"} and is_number(value["mean"])
        if ok and isinstance(ci, Sequence) and len(ci) == 2 and all(map(is_number, ci)):
            return
    elif is_number(value):
        return
    raise ValueError(
        f"{where}: metric '{name}' is {value!r}; expected a finite number or "
        '{"mean": number, "ci95": [lo, hi]}'
    )


def check_row(row: Mapping[str, Any], where: str) -> None:
    """Raise ValueError naming ``where`` and the key when a result row breaks the schema."""
    for key in ROW_KEYS:
        if key not in row:
            raise ValueError(f"{where}: missing key '{key}'")
    method = row["method"]
    if not isinstance(method, str) or not SLUG.fullmatch(method):
        raise ValueError(
            f"{where}: method name {method!r} must be lowercase letters/digits joined by hyphens, "
            "e.g. 'sasrec-id'"
        )
    for key in ("setting", "metrics", "cost"):
        if not isinstance(row[key], Mapping):
            raise ValueError(f"{where}: '{key}' must be an object, got {type(row[key]).__name__}")
    for name, value in row["metrics"].items():
        check_metric(name, value, f"{where} ({method})")
    for name, value in row["cost"].items():
        if not isinstance(name, str) or not is_number(value):
            raise ValueError(f"{where} ({method}): cost '{name}' is {value!r}; expected a number")


@dataclass
class ResultRow:
    """One (method, setting) row: metrics are numbers or {"mean", "ci95"}; cost is numbers."""

    method: str
    setting: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | dict] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_row(self.to_dict(), f"result row '{self.method}'")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "setting": dict(self.setting),
            "metrics": dict(self.metrics),
            "cost": dict(self.cost),
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> ResultRow:
        """The row of a metrics.json document (as returned by ``read_metrics_json``)."""
        return cls(**{key: row[key] for key in ROW_KEYS})


def ci_metric(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "ci95"} of per-seed or per-fold values (t-distribution), as metrics.json holds."""
    mean, (lo, hi) = mean_ci95(values)
    return {"mean": mean, "ci95": [lo, hi]}
