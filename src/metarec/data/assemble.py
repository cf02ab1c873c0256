"""Turn raw columns (string ids, numbers) into a ``Dataset`` with contiguous indices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metarec.data.ids import encode, index_ids, sorted_unique
from metarec.data.schema import Dataset, Interactions, ItemCatalog
from metarec.data.sequences import group_positions, in_time_order
from metarec.errors import DataError


@dataclass(frozen=True, eq=False)
class RawInteractions:
    """Interactions as read: ids are strings, other columns (N,) arrays or None."""

    user: pa.Array
    item: pa.Array
    timestamp: np.ndarray | None = None
    rating: np.ndarray | None = None
    split: np.ndarray | None = None
    domain: pa.Array | None = None


def build_dataset(
    name: str,
    source: Path | str,
    raw: RawInteractions,
    catalog: tuple[Sequence[str], Sequence[str]] | None = None,
    *,
    has_time: bool = True,
    extra: dict | None = None,
) -> Dataset:
    """A ``Dataset`` sorted by (user, time, item).

    ``catalog`` = (item ids, texts) in catalogue order; interacted items missing from it are
    appended with empty text. Without timestamps the time is the row's position in its user's
    sequence in file order (and ``has_time`` is forced False).
    """
    if len(raw.user) == 0:
        raise DataError(f"{source}: no interactions (the data is empty)")
    users, user = index_ids(raw.user)
    ids, texts = _catalog(raw.item, catalog)
    item = encode(raw.item, ids)
    timestamp = raw.timestamp
    if timestamp is None:
        timestamp = _file_order_positions(user)
        has_time = False
    domains: tuple[str, ...] = ()
    domain = None
    if raw.domain is not None:
        names, domain = index_ids(raw.domain)
        domains = tuple(names)
    inter = Interactions(
        user=user,
        item=item,
        timestamp=np.asarray(timestamp, dtype=np.int64),
        rating=raw.rating,
        domain=domain,
        split=None if raw.split is None else np.asarray(raw.split, dtype=np.int8),
    )
    return Dataset(
        name=name,
        interactions=in_time_order(inter),
        users=users,
        items=ItemCatalog(ids=list(ids), text=list(texts)),
        has_time=has_time,
        domains=domains,
        source=str(source),
        extra=dict(extra or {}),
    )


def _catalog(
    item: pa.Array, catalog: tuple[Sequence[str], Sequence[str]] | None
) -> tuple[list[str], list[str]]:
    if catalog is None:
        ids = sorted_unique(item).to_pylist()
        return ids, [""] * len(ids)
    ids, texts = list(catalog[0]), list(catalog[1])
    known = pa.array(ids, type=pa.string())
    unknown = pc.filter(item, pc.invert(pc.is_in(item, value_set=known)))
    if len(unknown):
        more = sorted_unique(unknown).to_pylist()
        ids += more
        texts += [""] * len(more)
    return ids, texts


def _file_order_positions(user: np.ndarray) -> np.ndarray:
    order = np.argsort(user, kind="stable")
    positions = np.empty(len(user), dtype=np.int64)
    positions[order] = group_positions(user[order])
    return positions
