"""Raw string ids <-> contiguous integer indices, vectorised with pyarrow."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def sorted_unique(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Distinct ids, in numeric order when every id is an integer, else in text order."""
    uniq = pc.unique(values)
    if isinstance(uniq, pa.ChunkedArray):
        uniq = uniq.combine_chunks()
    try:
        keys = pc.cast(uniq, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        keys = uniq
    return uniq.take(pc.sort_indices(keys))


def encode(values: pa.Array | pa.ChunkedArray, ids: pa.Array | Sequence[str]) -> np.ndarray:
    """(N,) int64 position of each value in ``ids``; -1 where absent."""
    value_set = ids if isinstance(ids, pa.Array) else pa.array(list(ids), type=pa.string())
    index = pc.index_in(values, value_set=value_set)
    return np.asarray(pc.fill_null(index, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def index_ids(values: pa.Array | pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """(distinct ids in ``sorted_unique`` order, (N,) int64 index of each value)."""
    uniq = sorted_unique(values)
    return uniq.to_pylist(), encode(values, uniq)
