"""Any interactions file (CSV, TSV or Parquet) with configurable columns, plus item text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from metarec.data.assemble import RawInteractions, build_dataset
from metarec.data.columns import codes, floats, strings, texts, timestamps, unique_ids
from metarec.data.schema import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID, Dataset
from metarec.data.tables import Table, header_names, read_table
from metarec.errors import ConfigError

SPLIT_NAMES = {
    "train": SPLIT_TRAIN,
    "valid": SPLIT_VALID,
    "validation": SPLIT_VALID,
    "dev": SPLIT_VALID,
    "test": SPLIT_TEST,
    "0": SPLIT_TRAIN,
    "1": SPLIT_VALID,
    "2": SPLIT_TEST,
}


@dataclass(frozen=True)
class GenericFormat:
    """Column names and files of a generic interactions file.

    ``timestamp`` None means the file has no time: each user's rows are taken in file order.
    ``rating`` (any number) and ``label`` (0/1) both fill the rating column; give at most one.
    ``split`` holds train / valid / test (or 0 / 1 / 2). ``item_text`` is a CSV / TSV / Parquet
    file with column ``text_id`` and the ``text_columns``, joined by ``text_join``.
    """

    user: str = "user_id"
    item: str = "item_id"
    timestamp: str | None = None
    rating: str | None = None
    label: str | None = None
    domain: str | None = None
    split: str | None = None
    delimiter: str | None = None
    encoding: str = "utf-8"
    item_text: str | Path | None = None
    text_id: str = "item_id"
    text_columns: tuple[str, ...] = ("text",)
    text_delimiter: str | None = None
    text_join: str = ". "

    def __post_init__(self) -> None:
        if isinstance(self.text_columns, str):
            object.__setattr__(self, "text_columns", (self.text_columns,))
        else:
            object.__setattr__(self, "text_columns", tuple(self.text_columns))
        if self.rating is not None and self.label is not None:
            raise ConfigError("give either a rating column or a label column, not both")
        if not self.text_columns:
            raise ConfigError("text_columns must name at least one column")
        if not self.user or not self.item:
            raise ConfigError("the user and item column names must not be empty")

    @classmethod
    def from_options(cls, options: dict) -> GenericFormat:
        """Build from keyword options, rejecting unknown ones by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for a generic interactions file; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**options)

    def columns(self) -> list[str]:
        """The interaction file's columns this format reads."""
        optional = (self.timestamp, self.rating, self.label, self.domain, self.split)
        return [self.user, self.item, *(c for c in optional if c is not None)]


# Column names recognised when a file is loaded without naming its columns, in order of preference.
ALIASES = {
    "user": ("user_id", "user", "userId", "userid", "uid", "reviewerID", "user_id:token"),
    "item": ("item_id", "item", "itemId", "itemid", "movieId", "iid", "asin", "item_id:token"),
    "timestamp": ("timestamp", "time", "ts", "unixReviewTime", "datetime", "timestamp:float"),
    "rating": ("rating", "score", "stars", "rating:float"),
    "label": ("label", "click", "like", "liked"),
    "domain": ("domain",),
    "split": ("split",),
}


def detect_format(path: Path | str, delimiter: str | None = None) -> GenericFormat:
    """Guess the columns of an interactions file from its header (see ``ALIASES``)."""
    found = header_names(path, delimiter=delimiter)
    chosen = {}
    for field_name, aliases in ALIASES.items():
        match = next((a for a in aliases if a in found), None)
        if match is not None:
            chosen[field_name] = match
    missing = [f for f in ("user", "item") if f not in chosen]
    if missing:
        raise ConfigError(
            f"{path}: cannot tell which column holds the {' and the '.join(missing)} ids; "
            f"the file has columns {', '.join(repr(c) for c in found)}; recognised names are "
            + "; ".join(f"{f}: {', '.join(ALIASES[f][:4])}" for f in missing)
        )
    if "rating" in chosen and "label" in chosen:
        del chosen["label"]
    return GenericFormat(delimiter=delimiter, **chosen)


def load_generic(
    path: Path | str, fmt: GenericFormat | None = None, *, name: str | None = None, **options
) -> Dataset:
    """Load one interactions file; ``options`` are ``GenericFormat`` fields."""
    if fmt is not None and options:
        raise ConfigError(f"give either a GenericFormat or options, not both: {sorted(options)}")
    if fmt is None:
        fmt = GenericFormat.from_options(options) if options else detect_format(path)
    path = Path(path)
    table = read_table(path, fmt.columns(), delimiter=fmt.delimiter, encoding=fmt.encoding)
    raw = RawInteractions(
        user=strings(table, fmt.user),
        item=strings(table, fmt.item),
        timestamp=timestamps(table, fmt.timestamp) if fmt.timestamp else None,
        rating=_rating(table, fmt),
        split=codes(table, fmt.split, SPLIT_NAMES, "train, valid or test") if fmt.split else None,
        domain=strings(table, fmt.domain) if fmt.domain else None,
    )
    catalog = None
    if fmt.item_text is not None:
        catalog = read_item_text(
            fmt.item_text,
            fmt.text_id,
            fmt.text_columns,
            delimiter=fmt.text_delimiter,
            join=fmt.text_join,
            encoding=fmt.encoding,
        )
    return build_dataset(name or path.stem, path, raw, catalog, has_time=fmt.timestamp is not None)


def read_item_text(
    path: Path | str,
    id_column: str = "item_id",
    text_columns: Sequence[str] = ("text",),
    *,
    delimiter: str | None = None,
    join: str = ". ",
    encoding: str = "utf-8",
) -> tuple[list[str], list[str]]:
    """(item ids in file order, their texts); several text columns are joined, empty parts left
    out. Ids must be unique."""
    table = read_table(path, [id_column, *text_columns], delimiter=delimiter, encoding=encoding)
    ids = unique_ids(table, id_column, "item id").to_pylist()
    parts = [texts(table, c) for c in text_columns]
    if len(parts) == 1:
        return ids, parts[0]
    joined = [join.join(p for p in row if p) for row in zip(*parts, strict=True)]
    return ids, joined


def _rating(table: Table, fmt: GenericFormat) -> np.ndarray | None:
    if fmt.rating is not None:
        return floats(table, fmt.rating, "a rating (number)")
    if fmt.label is None:
        return None
    label = floats(table, fmt.label, "a 0/1 label")
    bad = np.flatnonzero((label != 0) & (label != 1))
    if len(bad):
        row = int(bad[0])
        raise table.error(f"label {label[row]:g} is not 0 or 1", row, fmt.label)
    return label
