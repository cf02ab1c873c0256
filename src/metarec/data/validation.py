"""Checks on input data whose failures a person can act on.

Every error names the file and, where it applies, the line (1-based, as an editor shows it, the
header being line 1) or the Parquet row, and the column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from metarec.data.schema import Dataset
from metarec.errors import DataError


def where(
    path: Path | str,
    *,
    line: int | None = None,
    row: int | None = None,
    column: str | None = None,
) -> str:
    """``"path, line 3, column 'item_id'"`` — the prefix of every located message."""
    parts = [str(path)]
    if line is not None:
        parts.append(f"line {line}")
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column '{column}'")
    return ", ".join(parts)


def located(
    path: Path | str,
    message: str,
    *,
    line: int | None = None,
    row: int | None = None,
    column: str | None = None,
) -> DataError:
    """A ``DataError`` whose message starts with the location."""
    return DataError(f"{where(path, line=line, row=row, column=column)}: {message}")


def require_file(path: Path | str, what: str = "data file") -> Path:
    """The path, if it is an existing file; else a DataError saying what was expected there."""
    path = Path(path)
    if not path.is_file():
        hint = " (it is a folder)" if path.is_dir() else ""
        raise DataError(f"{path}: {what} not found{hint}")
    return path


def require_columns(path: Path | str, found: Sequence[str], wanted: Iterable[str]) -> None:
    """Raise naming the missing column(s) and listing the columns the file has."""
    missing = [c for c in wanted if c not in found]
    if missing:
        names = ", ".join(f"'{c}'" for c in missing)
        have = ", ".join(f"'{c}'" for c in found) or "none"
        noun = "column" if len(missing) == 1 else "columns"
        raise DataError(f"{path}: missing {noun} {names}; the file has columns: {have}")


def utf8_error(
    path: Path | str,
    data: bytes,
    exc: UnicodeDecodeError,
    columns: Sequence[str] = (),
    delimiter: bytes = b",",
) -> DataError:
    """Turn a decode failure into a message naming the byte offset, line, column and byte."""
    offset = exc.start
    line_start = data.rfind(b"\n", 0, offset) + 1
    field = data.count(delimiter, line_start, offset)
    column = columns[field] if field < len(columns) else None
    bad = data[offset : offset + 1].hex()
    return located(
        path,
        f"not valid UTF-8: byte 0x{bad} at byte offset {offset}; re-save the file as UTF-8 "
        "or pass its encoding (e.g. encoding='latin-1')",
        line=data.count(b"\n", 0, offset) + 1,
        column=column,
    )


def check_utf8(
    path: Path | str, data: bytes, columns: Sequence[str] = (), delimiter: bytes = b","
) -> None:
    """Raise ``utf8_error`` if ``data`` is not valid UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise utf8_error(path, data, exc, columns, delimiter) from None


def first_duplicate(values: np.ndarray) -> tuple[int, int] | None:
    """(first row, repeated row) of the earliest repeated value, or None if all are distinct."""
    if len(values) == 0:
        return None
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    repeated = np.flatnonzero(first[inverse] != np.arange(len(values)))
    if len(repeated) == 0:
        return None
    row = int(repeated[0])
    return int(first[inverse[row]]), row


def require_time(dataset: Dataset, what: str) -> None:
    """Raise unless ``dataset`` has real timestamps on every interaction.

    ``what`` names the operation that needs them (e.g. ``"temporal split"``).
    """
    ts = dataset.interactions.timestamp
    if ts is None:
        raise DataError(f"{what} needs timestamps, but dataset '{dataset.name}' has none")
    if not dataset.has_time:
        raise DataError(
            f"{what} needs timestamps, but dataset '{dataset.name}' has only the order of each "
            "user's interactions (no real time); use a leave-one-out or given split instead"
        )
    if np.issubdtype(ts.dtype, np.floating):
        missing = np.flatnonzero(np.isnan(ts))
        if len(missing):
            raise DataError(
                f"{what} needs timestamps, but dataset '{dataset.name}' has {len(missing)} "
                f"interaction(s) without one (first at row {int(missing[0])})"
            )
