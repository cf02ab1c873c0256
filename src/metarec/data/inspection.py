"""Summary statistics of a dataset, as a dict (for JSON) and as an aligned text table."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from metarec.data.schema import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID, Dataset

_PERCENTILES = {"min": 0, "p25": 25, "p50": 50, "p75": 75, "p90": 90, "max": 100}


def inspect_dataset(ds: Dataset) -> dict:
    """Counts, density, history lengths, ratings, text coverage, time range, domains, splits."""
    inter = ds.interactions
    n = len(inter)
    cells = ds.n_users * ds.n_items
    info: dict = {
        "name": ds.name,
        "source": ds.source,
        "users": ds.n_users,
        "items": ds.n_items,
        "items_with_interactions": len(np.unique(inter.item)),
        "interactions": n,
        "density": n / cells if cells else 0.0,
        "history_length": _history_lengths(inter.user, ds.n_users),
        "text_coverage": ds.items.text_coverage,
        "has_time": ds.has_time,
        "domains": list(ds.domains),
        "given_splits": _given_splits(inter.split),
    }
    if inter.rating is not None and n:
        info["rating"] = _rating_stats(inter.rating)
    if ds.has_time and inter.timestamp is not None and n:
        info["time_range"] = {
            "start": _iso(int(inter.timestamp.min())),
            "end": _iso(int(inter.timestamp.max())),
        }
    return info


def format_inspection(info: dict) -> str:
    """Two aligned columns, nested entries as ``history_length.p50``; floats to 4 significant
    digits."""
    rows = list(_flatten(info))
    width = max((len(key) for key, _ in rows), default=0)
    return "\n".join(f"{key.ljust(width)}  {_show(value)}" for key, value in rows)


def _history_lengths(user: np.ndarray, n_users: int) -> dict[str, float]:
    counts = np.bincount(user, minlength=n_users)
    counts = counts[counts > 0]
    if len(counts) == 0:
        return dict.fromkeys(_PERCENTILES, 0.0)
    return {k: float(np.percentile(counts, q)) for k, q in _PERCENTILES.items()}


def _rating_stats(rating: np.ndarray) -> dict:
    return {
        "min": float(rating.min()),
        "max": float(rating.max()),
        "mean": float(rating.mean(dtype=np.float64)),
        "distinct": len(np.unique(rating)),
    }


def _given_splits(split: np.ndarray | None) -> dict | None:
    if split is None:
        return None
    return {
        name: int(np.count_nonzero(split == code))
        for name, code in (("train", SPLIT_TRAIN), ("valid", SPLIT_VALID), ("test", SPLIT_TEST))
    }


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _flatten(info: dict, prefix: str = ""):
    for key, value in info.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def _show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 1 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "-"
    return str(value)
