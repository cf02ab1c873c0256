"""Typed columns out of a ``Table``, with errors naming the line, column and offending value.

Conversion is vectorised (``pyarrow.compute.cast``); only when it fails is the first bad value
searched for, block by block.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metarec.data.tables import Table
from metarec.data.validation import first_duplicate

_BLOCK = 8192


def strings(table: Table, column: str) -> pa.Array:
    """Non-empty string values (ids); integers in Parquet are turned into their decimal text."""
    arr = _combined(table[column])
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        if pa.types.is_floating(arr.type) or not _castable(arr, pa.string()):
            raise table.error(f"expected text or integer ids, found type {arr.type}", None, column)
        arr = pc.cast(arr, pa.string())
    _require_present(table, column, arr, "an id")
    return arr


def texts(table: Table, column: str) -> list[str]:
    """Free text; missing values become ''."""
    arr = _combined(table[column])
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.string())
    return [s.strip() for s in pc.fill_null(arr, "").to_pylist()]


def integers(table: Table, column: str, expected: str = "an integer") -> np.ndarray:
    """(N,) int64."""
    arr = _combined(table[column])
    if pa.types.is_integer(arr.type):
        _require_present(table, column, arr, expected)
        return arr.to_numpy().astype(np.int64, copy=False)
    return _parse(table, column, arr, pa.int64(), expected).to_numpy().astype(np.int64)


def floats(table: Table, column: str, expected: str = "a number") -> np.ndarray:
    """(N,) float32, finite."""
    arr = _combined(table[column])
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        _require_present(table, column, arr, expected)
    else:
        arr = _parse(table, column, arr, pa.float64(), expected)
    values = arr.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        row = int(bad[0])
        raise table.error(f"value {arr[row].as_py()!r} is not {expected}", row, column)
    return values.astype(np.float32)


def timestamps(table: Table, column: str) -> np.ndarray:
    """(N,) int64 unix seconds from integers, numbers, dates or ISO 8601 text."""
    arr = _combined(table[column])
    expected = "a timestamp (unix seconds or ISO 8601 date-time)"
    _require_present(table, column, arr, expected, missing="missing timestamp")
    kind = arr.type
    if pa.types.is_integer(kind):
        return arr.to_numpy().astype(np.int64)
    if pa.types.is_floating(kind):
        return np.floor(arr.to_numpy()).astype(np.int64)
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return pc.cast(pc.cast(arr, pa.timestamp("s")), pa.int64()).to_numpy()
    for target in (pa.int64(), pa.float64(), pa.timestamp("s")):
        try:
            parsed = pc.cast(arr, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if pa.types.is_floating(target):
            return np.floor(parsed.to_numpy()).astype(np.int64)
        return pc.cast(parsed, pa.int64()).to_numpy()
    numeric = _castable(arr.slice(0, 1), pa.float64())
    target = pa.float64() if numeric else pa.timestamp("s")
    _raise_first_bad(table, column, arr, target, expected)
    raise table.error(f"mixed timestamp formats; expected {expected} throughout", None, column)


def codes(table: Table, column: str, mapping: dict[str, int], expected: str) -> np.ndarray:
    """Map text labels (e.g. 'train'/'valid'/'test', any case) to small integer codes."""
    arr = strings(table, column)
    keys = pa.array(list(mapping))
    index = pc.index_in(pc.utf8_lower(pc.utf8_trim_whitespace(arr)), value_set=keys)
    missing = pc.index(pc.is_null(index), True).as_py()
    if missing >= 0:
        value = arr[missing].as_py()
        raise table.error(f"unknown value {value!r}; expected {expected}", missing, column)
    values = np.asarray(list(mapping.values()), dtype=np.int64)
    return values[index.to_numpy()]


def _combined(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def _castable(arr: pa.Array, target: pa.DataType) -> bool:
    try:
        pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _require_present(
    table: Table, column: str, arr: pa.Array, expected: str, missing: str = "missing value"
) -> None:
    empty = pc.is_null(arr)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        empty = pc.or_(empty, pc.fill_null(pc.equal(pc.binary_length(arr), 0), True))
    row = pc.index(empty, True).as_py()
    if row >= 0:
        raise table.error(f"{missing} (expected {expected})", row, column)


def _parse(
    table: Table, column: str, arr: pa.Array, target: pa.DataType, expected: str
) -> pa.Array:
    _require_present(table, column, arr, expected)
    try:
        return pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        _raise_first_bad(table, column, arr, target, expected)
        raise table.error(f"cannot convert to {expected}", None, column) from None


def _raise_first_bad(
    table: Table, column: str, arr: pa.Array, target: pa.DataType, expected: str
) -> None:
    row = _first_failure(arr, lambda a: _castable(a, target))
    if row is not None:
        value = arr[row].as_py()
        raise table.error(f"cannot read {value!r} as {expected}", row, column)


def _first_failure(arr: pa.Array, ok: Callable[[pa.Array], bool]) -> int | None:
    """Index of the first element for which ``ok`` fails, testing whole blocks first."""
    for start in range(0, len(arr), _BLOCK):
        block = arr.slice(start, _BLOCK)
        if ok(block):
            continue
        for i in range(len(block)):
            if not ok(block.slice(i, 1)):
                return start + i
    return None


def unique_ids(table: Table, column: str, what: str = "item id") -> pa.Array:
    """The column's ids, which must not repeat (an item file lists each item once)."""
    arr = strings(table, column)
    dup = first_duplicate(arr.to_numpy(zero_copy_only=False))
    if dup is not None:
        first, again = dup
        value = arr[again].as_py()
        raise table.error(
            f"duplicate {what} {value!r} (first listed on {table.position(first)})", again, column
        )
    return arr
