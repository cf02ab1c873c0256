"""Reading delimited text and Parquet files into string columns that know where they came from.

Delimited files are read by ``pyarrow.csv`` with every requested column as a string, so that
conversion (``metarec.data.columns``) can name the line and value that does not parse. Line
numbers are computed only on the error path, by re-reading the file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from metarec.data.validation import (
    check_utf8,
    located,
    require_columns,
    require_file,
    where,
)
from metarec.errors import DataError

_EXTENSION_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET = (".parquet", ".pq")
_FIELD_SEPARATOR = "\x1f"  # stands in for multi-character delimiters such as '::'


@dataclass(frozen=True, eq=False)
class Table:
    """Requested columns of one file, each a ``pa.ChunkedArray`` (strings for delimited files)."""

    path: Path
    columns: dict[str, pa.ChunkedArray]
    found: tuple[str, ...]
    header: bool = True
    parquet: bool = False
    encoding: str = "utf-8"
    delimiter: str = ","

    def __len__(self) -> int:
        return next(iter(self.columns.values())).length() if self.columns else 0

    def __getitem__(self, column: str) -> pa.ChunkedArray:
        return self.columns[column]

    def where(self, row: int | None = None, column: str | None = None) -> str:
        """Location of a 0-based data row as a person finds it: file line, or Parquet row."""
        if row is None:
            return where(self.path, column=column)
        if self.parquet:
            return where(self.path, row=row + 1, column=column)
        return where(self.path, line=self.line_of(row), column=column)

    def position(self, row: int) -> str:
        """``"line 7"`` (delimited) or ``"row 6"`` (Parquet) for a 0-based data row."""
        return f"row {row + 1}" if self.parquet else f"line {self.line_of(row)}"

    def error(self, message: str, row: int | None = None, column: str | None = None) -> DataError:
        return DataError(f"{self.where(row, column)}: {message}")

    def line_of(self, row: int) -> int:
        """1-based file line of data row ``row`` (blank lines skipped, as the reader does)."""
        data = _file_bytes(self.path, self.delimiter)
        target = row + (1 if self.header else 0)
        seen = 0
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if raw.rstrip(b"\r"):
                if seen == target:
                    return number
                seen += 1
        return seen + 1


def delimiter_for(path: Path | str, delimiter: str | None = None) -> str | None:
    """The given delimiter, else one guessed from the extension; None means Parquet."""
    suffix = Path(path).suffix.lower()
    if suffix in _PARQUET:
        return None
    if delimiter is not None:
        return delimiter
    if suffix in _EXTENSION_DELIMITERS:
        return _EXTENSION_DELIMITERS[suffix]
    raise DataError(
        f"{path}: cannot tell the format from the extension '{suffix}'; use .csv, .tsv or "
        ".parquet, or pass delimiter=..."
    )


def read_table(
    path: Path | str,
    columns: Sequence[str],
    *,
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> Table:
    """Read ``columns`` of a CSV / TSV / Parquet file, by extension unless a delimiter is given."""
    sep = delimiter_for(path, delimiter)
    if sep is None:
        return read_parquet(path, columns)
    return read_delimited(path, columns, delimiter=sep, encoding=encoding)


def read_parquet(path: Path | str, columns: Sequence[str]) -> Table:
    """Read ``columns`` of a Parquet file, typed as stored."""
    path = require_file(path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    require_columns(path, schema.names, columns)
    table = pq.read_table(path, columns=list(dict.fromkeys(columns)))
    return Table(path, {c: table.column(c) for c in columns}, tuple(schema.names), parquet=True)


def read_delimited(
    path: Path | str,
    columns: Sequence[str] | None = None,
    *,
    delimiter: str = ",",
    header: bool = True,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    quoting: bool = True,
) -> Table:
    """Read a delimited text file with the requested columns as strings.

    ``header=False`` needs ``names`` (the file's columns in order). ``delimiter`` may be longer
    than one character (MovieLens-1M's ``::``); such files are read without quoting.
    """
    path = require_file(path)
    data = _file_bytes(path, delimiter)
    sep = delimiter if len(delimiter) == 1 else _FIELD_SEPARATOR
    quoting = quoting and len(delimiter) == 1
    if not data.strip():
        raise DataError(f"{path}: file is empty")
    found = _header_names(path, data, sep, encoding, quoting) if header else tuple(names or ())
    wanted = list(found) if columns is None else list(dict.fromkeys(columns))
    require_columns(path, found, wanted)
    table = _parse(path, data, found, wanted, sep, header, encoding, quoting)
    return Table(
        path,
        {c: table.column(c) for c in wanted},
        found,
        header=header,
        encoding=encoding,
        delimiter=delimiter,
    )


def _file_bytes(path: Path, delimiter: str) -> bytes:
    data = path.read_bytes()
    if len(delimiter) > 1:
        data = data.replace(delimiter.encode("ascii"), _FIELD_SEPARATOR.encode("ascii"))
    return data


def _header_names(
    path: Path, data: bytes, sep: str, encoding: str, quoting: bool
) -> tuple[str, ...]:
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        text = first.decode(encoding)
    except UnicodeDecodeError as exc:
        raise located(path, f"header is not valid {encoding} ({exc.reason})", line=1) from None
    text = text.lstrip("\ufeff")
    quotechar = '"' if quoting else None
    row = next(csv.reader([text], delimiter=sep, quotechar=quotechar, quoting=_quote_mode(quoting)))
    return tuple(name.strip() for name in row)


def _quote_mode(quoting: bool) -> int:
    return csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE


def _parse(
    path: Path,
    data: bytes,
    names: Sequence[str],
    wanted: Sequence[str],
    sep: str,
    header: bool,
    encoding: str,
    quoting: bool,
) -> pa.Table:
    bad_rows: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row)
        return "error"

    read = pacsv.ReadOptions(
        column_names=list(names), skip_rows=1 if header else 0, encoding=encoding
    )
    parse = pacsv.ParseOptions(
        delimiter=sep, quote_char='"' if quoting else False, invalid_row_handler=on_invalid
    )
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in wanted},
        include_columns=list(wanted),
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        return pacsv.read_csv(io.BytesIO(data), read, parse, convert)
    except pa.ArrowInvalid as exc:
        raise _read_error(path, data, names, sep, bad_rows, encoding, exc) from None


def _read_error(
    path: Path,
    data: bytes,
    names: Sequence[str],
    sep: str,
    bad_rows: list[pacsv.InvalidRow],
    encoding: str,
    exc: Exception,
) -> DataError:
    if bad_rows:
        row = bad_rows[0]
        shown = row.text.replace(_FIELD_SEPARATOR, "::")
        return located(
            path,
            f"expected {row.expected_columns} fields ({', '.join(names)}), found "
            f"{row.actual_columns}: {shown[:200]!r}",
            line=_line_with_text(data, row.text, encoding),
        )
    if "UTF8" in str(exc) and encoding.replace("-", "").lower() == "utf8":
        check_utf8(path, data, names, sep.encode(encoding))
    return DataError(f"{path}: cannot read the file: {exc}")


def _line_with_text(data: bytes, text: str, encoding: str) -> int | None:
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.rstrip(b"\r").decode(encoding, errors="replace") == text:
            return number
    return None


def header_names(
    path: Path | str, *, delimiter: str | None = None, encoding: str = "utf-8"
) -> list[str]:
    """Column names of a CSV / TSV (first line) or Parquet (schema) file."""
    path = require_file(path)
    sep = delimiter_for(path, delimiter)
    if sep is None:
        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    with open(path, "rb") as fh:
        first = fh.readline()
    if not first.strip():
        raise DataError(f"{path}: file is empty")
    try:
        line = first.decode(encoding).strip()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}, line 1: not valid {encoding} ({exc.reason})") from None
    return [name.strip().strip('"') for name in line.split(sep)]
