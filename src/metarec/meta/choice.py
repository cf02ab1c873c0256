"""Choosing how to adapt: no adaptation, plain fine-tuning or a meta-learner, on held-out users.

Every candidate is scored on the same validation users, in the same order (one NDCG@10 per
user). A candidate's gain is its per-user NDCG@10 minus no adaptation's on the same user, a
paired difference d_1..d_n; its 95% interval is the paired t-interval over users,

    mean(d) +/- t_{0.975, n-1} * sd(d) / sqrt(n)      (sd with n - 1 degrees of freedom),

Student's t with n - 1 degrees of freedom (``scipy.stats.t``). With m candidates besides no
adaptation the intervals are simultaneous (Bonferroni): each is taken at 1 - 0.05 / m, so that
all m hold together at 95% and judging six meta-learners is no likelier to keep a useless one
than judging one. The choice is the candidate with the largest mean gain among those whose
interval lies above 0 (lower bound > 0); equal gains go to the one listed first; when none
qualifies, or there are fewer than 2 users (no interval), no adaptation. So a meta-learner (or
fine-tuning) is kept only where it beats no adaptation outside the noise of these users, and
otherwise the product adapts not at all.

Taking the best of several that pass still makes the chosen gain slightly optimistic (the
winner's curse); ``workflows.meta_train`` therefore measures it again on the fold's cold users
(``gain_of``, a plain 95% interval: one method, chosen before). The gain must also come from
users that chose nothing else: the judging users neither picked fine-tuning's learning rate nor
early-stopped a meta-learner.

Pure: lists of floats in, a ``Choice`` out; ``to_dict`` / ``from_dict`` are what a meta
checkpoint stores (``meta.checkpoint``), ``meta.inference.chosen_adapter`` what follows it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

NO_ADAPT = "no-adapt"
FINETUNE = "finetune"
LEVEL = 0.95

Interval = tuple[float, float]


@dataclass(frozen=True)
class Candidate:
    """One method on the judging users: its mean NDCG@10, its mean paired gain over no
    adaptation and that gain's interval (at ``Choice.level``; None: fewer than 2 users).
    ``settings``: what rebuilds it (fine-tuning: lr, steps, policy)."""

    method: str
    mean: float
    gain: float
    ci95: Interval | None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def clears_noise(self) -> bool:
        return self.ci95 is not None and self.ci95[0] > 0


@dataclass(frozen=True)
class Choice:
    """The chosen method, its gain over no adaptation and interval (no adaptation: 0 and
    (0, 0)), on ``n_users`` users; ``candidates``: every method judged, no adaptation first;
    ``level``: each interval's level, so that all hold together at 95%."""

    method: str
    gain: float
    ci95: Interval | None
    n_users: int
    candidates: tuple[Candidate, ...]
    level: float = LEVEL  # what each candidate's interval was taken at (Bonferroni-adjusted)

    def candidate(self, method: str) -> Candidate:
        for c in self.candidates:
            if c.method == method:
                return c
        raise KeyError(method)

    def summary(self) -> str:
        """One line: the method, its gain and interval, on how many users."""
        if self.method == NO_ADAPT:
            best = max(self.candidates[1:], key=lambda c: c.gain, default=None)
            why = "" if best is None else f"; best other: {best.method} {_gain(best)}"
            return f"{NO_ADAPT} (nothing beat it outside the noise on {self.n_users} users{why})"
        return f"{self.method} ({_gain(self.candidate(self.method))}, {self.n_users} users)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "gain_ndcg10": self.gain,
            "ci95": _listed(self.ci95),
            "n_users": self.n_users,
            "interval": interval_name(len(self.candidates) - 1, self.level),
            "level": self.level,
            "candidates": [
                {
                    "method": c.method,
                    "ndcg10": c.mean,
                    "gain_ndcg10": c.gain,
                    "ci95": _listed(c.ci95),
                    "settings": dict(c.settings),
                }
                for c in self.candidates
            ],
        }

    @classmethod
    def from_dict(cls, doc: Any) -> Choice:
        """The inverse of ``to_dict``; ValueError naming the field that is wrong."""
        if not isinstance(doc, dict):
            raise ValueError(f"choice must be an object, got {doc!r}")
        rows = doc.get("candidates")
        if not isinstance(rows, list) or not rows:
            raise ValueError("choice.candidates must be a non-empty list")
        candidates = tuple(_candidate(row, i) for i, row in enumerate(rows))
        method = doc.get("method")
        if method not in {c.method for c in candidates}:
            raise ValueError(f"choice.method {method!r} is none of its candidates")
        n_users = doc.get("n_users")
        if isinstance(n_users, bool) or not isinstance(n_users, int) or n_users < 0:
            raise ValueError(f"choice.n_users must be a non-negative integer, got {n_users!r}")
        gain = _number(doc.get("gain_ndcg10"), "choice.gain_ndcg10")
        ci95 = _interval(doc.get("ci95"), "choice.ci95")
        row = next(c for c in candidates if c.method == method)
        if (gain, ci95) != (row.gain, row.ci95):
            raise ValueError(
                f"choice.gain_ndcg10 and ci95 ({gain}, {ci95}) are not those of its method "
                f"{method!r} in choice.candidates ({row.gain}, {row.ci95})"
            )
        level = doc.get("level", LEVEL)  # written before the adjustment: 95% each
        if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
            raise ValueError(f"choice.level must be a number in (0, 1), got {level!r}")
        return cls(method, gain, ci95, n_users, candidates, float(level))


def interval_name(m: int, level: float) -> str:
    """How the intervals of ``m`` candidates at ``level`` each were made, in words."""
    each = _percent(level)
    if m <= 1:
        return f"paired t-interval over users, {each}"
    together = _percent(1 - m * (1 - level))
    return f"paired t-interval over users, {each} each (Bonferroni over {m}: {together} together)"


def _percent(p: float) -> str:
    return f"{p:.2%}".replace(".00%", "%")


def family_level(m: int, level: float = LEVEL) -> float:
    """The level of each of ``m`` intervals that hold together at ``level`` (Bonferroni)."""
    return 1 - (1 - level) / max(m, 1)


def gain_of(
    method: str,
    values: Sequence[float],
    base: Sequence[float],
    level: float = LEVEL,
    settings: Mapping[str, Any] | None = None,
) -> Candidate:
    """``method``'s mean score, its mean paired gain over ``base`` and that gain's interval at
    ``level`` (one method on its own: no adjustment)."""
    v = np.asarray(values, dtype=np.float64)
    diff = v - np.asarray(base, dtype=np.float64)
    return Candidate(method, _mean(v), _mean(diff), paired_ci(diff, level), dict(settings or {}))


def paired_ci(diff: Sequence[float], level: float = LEVEL) -> Interval | None:
    """The paired t-interval of mean(diff) at ``level`` (None for fewer than 2 values)."""
    d = np.asarray(diff, dtype=np.float64)
    if d.size < 2:
        return None
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1)) * float(d.std(ddof=1)) / d.size**0.5
    mean = float(d.mean())
    return (mean - half, mean + half)


def choose(
    scores: Mapping[str, Sequence[float]],
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    level: float = LEVEL,
) -> Choice:
    """Choose among ``scores`` (method -> per-user NDCG@10, same users in the same order; must
    hold ``NO_ADAPT``). The others are candidates in their order, their intervals holding
    together at ``level``; ``settings`` per method are stored with it."""
    if NO_ADAPT not in scores:
        raise ValueError(f"the scores need the {NO_ADAPT!r} baseline")
    base = np.asarray(scores[NO_ADAPT], dtype=np.float64)
    for method, values in scores.items():
        if len(values) != len(base):
            raise ValueError(f"{method}: {len(values)} user scores, {NO_ADAPT} has {len(base)}")
        if not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
            raise ValueError(f"{method}: user scores must be finite")
    settings = settings or {}
    others = [m for m in scores if m != NO_ADAPT]
    each = family_level(len(others), level)
    rows = [Candidate(NO_ADAPT, _mean(base), 0.0, (0.0, 0.0) if len(base) >= 2 else None)]
    rows += [gain_of(m, scores[m], base, each, settings.get(m)) for m in others]
    passing = [c for c in rows[1:] if c.clears_noise]
    best = max(passing, key=lambda c: c.gain, default=rows[0])  # max keeps the first of equals
    return Choice(best.method, best.gain, best.ci95, len(base), tuple(rows), each)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else 0.0


def _gain(c: Candidate) -> str:
    ci = "no interval" if c.ci95 is None else f"95% CI [{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}]"
    return f"NDCG@10 gain {c.gain:+.4f}, {ci}"


def _listed(ci: Interval | None) -> list[float] | None:
    return None if ci is None else [float(ci[0]), float(ci[1])]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _interval(value: Any, where: str) -> Interval | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"{where} must be [low, high] or null, got {value!r}")
    low, high = (_number(v, where) for v in value)
    if low > high:
        raise ValueError(f"{where} has its low end above its high end: {value!r}")
    return (low, high)


def _candidate(row: Any, i: int) -> Candidate:
    where = f"choice.candidates[{i}]"
    if not isinstance(row, dict) or not isinstance(row.get("method"), str):
        raise ValueError(f"{where} must be an object with a method name")
    settings = row.get("settings", {})
    if not isinstance(settings, dict):
        raise ValueError(f"{where}.settings must be an object")
    return Candidate(
        row["method"],
        _number(row.get("ndcg10"), f"{where}.ndcg10"),
        _number(row.get("gain_ndcg10"), f"{where}.gain_ndcg10"),
        _interval(row.get("ci95"), f"{where}.ci95"),
        settings,
    )
