"""The on-disk contract of a synthetic-scale folder, shared by its writer and its loader.

A synth folder holds K disjoint copies of a real dataset (``metarec data synth``)::

    DIR/interactions/copy=NNNN/part-NNNNN.parquet   user, item, timestamp [, rating, domain, split]
    DIR/users/copy=NNNN/part-NNNNN.parquet          user, id
    DIR/items/copy=NNNN/part-NNNNN.parquet          item, id, text [, domain]
    DIR/synth.json                                  the manifest, written last

Users and items are stored as global integer indices (copy c's user u is ``c * U + u``, its
item i is ``c * I + i``) so that the loader needs no string matching over the interactions and
copy 0 keeps the source's indices exactly. Raw ids are renamed ``c{c}:{raw}`` and item text is
prefixed ``[copy c] ``. ``synth.json`` is written last and atomically: a folder without it is an
unfinished write, never a dataset.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from metarec.errors import DataError

MANIFEST = "synth.json"
FORMAT = "metarec-synth"
FORMAT_VERSION = 1
PARTS = ("interactions", "users", "items")
PARTITION = "copy"
ID_SCHEME = "copy c's raw user and item ids are 'c{c}:' + the source's raw id"
TEXT_SCHEME = "copy c's item text is '[copy {c}] ' + the source's text"


def id_prefix(copy: int) -> str:
    """Prefix of copy ``copy``'s raw user and item ids."""
    return f"c{copy}:"


def text_tag(copy: int) -> str:
    """Prefix of copy ``copy``'s item texts: copies of one item must not read as the same item."""
    return f"[copy {copy}] "


def partition_name(copy: int, copies: int) -> str:
    """``copy=0003``: zero-padded to one width per folder, so names sort in copy order."""
    width = max(4, len(str(copies - 1)))
    return f"{PARTITION}={copy:0{width}d}"


# Column -> (Arrow type, meaning). Required columns first; the others are present exactly when
# the source dataset has them (the manifest lists the columns written).
COLUMNS: dict[str, dict[str, tuple[pa.DataType, str]]] = {
    "interactions": {
        "user": (pa.int64(), "global user index (row of users/)"),
        "item": (pa.int64(), "global item index (row of items/)"),
        "timestamp": (pa.int64(), "unix seconds, or the position in the user's sequence"),
        "rating": (pa.float32(), "rating or 0/1 label, as in the source"),
        "domain": (pa.int64(), "index into the manifest's domains"),
        "split": (pa.int8(), "0 train, 1 valid, 2 test, as in the source"),
    },
    "users": {
        "user": (pa.int64(), "global user index, 0..users-1 in copy-major order"),
        "id": (pa.string(), "raw user id, renamed per copy"),
    },
    "items": {
        "item": (pa.int64(), "global item index, 0..items-1 in copy-major order"),
        "id": (pa.string(), "raw item id, renamed per copy"),
        "text": (pa.string(), "item text tagged with its copy"),
        "domain": (pa.int64(), "index into the manifest's domains"),
    },
}
REQUIRED = {
    "interactions": ("user", "item", "timestamp"),
    "users": ("user", "id"),
    "items": ("item", "id", "text"),
}


@dataclass(frozen=True)
class SynthManifest:
    """What ``synth.json`` records: the source, the copies, the counts and the columns.

    ``source`` holds the source's name, path and its users / items / interactions counts;
    ``counts`` the same for the whole folder (exactly ``copies`` times the source's);
    ``columns`` the columns written to each part (see ``COLUMNS``).
    """

    source: dict
    copies: int
    counts: dict
    columns: dict
    has_time: bool
    domains: tuple[str, ...]
    metarec_version: str
    rows_per_file: int

    def to_json(self) -> dict:
        out = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}
        out["domains"] = list(self.domains)
        out["ids"] = ID_SCHEME
        out["text"] = TEXT_SCHEME
        out["schema"] = {
            part: {c: f"{COLUMNS[part][c][0]}: {COLUMNS[part][c][1]}" for c in cols}
            for part, cols in self.columns.items()
        }
        return out


def read_manifest(folder: Path) -> SynthManifest:
    """Read and check ``folder/synth.json``; a DataError names the file and the bad field."""
    path = folder / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable synth manifest ({e})") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DataError(f"{path}: field 'format' must be {FORMAT!r}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {raw.get('format_version')!r} is not {FORMAT_VERSION} "
            "(written by another metarec version?)"
        )
    copies = _field(raw, path, "copies", int)
    if copies < 1:
        raise DataError(f"{path}: field 'copies' must be at least 1, got {copies}")
    source, counts = _counts(raw, path, "source"), _counts(raw, path, "counts")
    columns = _field(raw, path, "columns", dict)
    for part in PARTS:
        cols = columns.get(part)
        if not isinstance(cols, list) or any(c not in COLUMNS[part] for c in cols):
            raise DataError(
                f"{path}: field 'columns.{part}' must list columns among "
                f"{', '.join(COLUMNS[part])}, got {cols!r}"
            )
        missing = [c for c in REQUIRED[part] if c not in cols]
        if missing:
            raise DataError(f"{path}: 'columns.{part}' lacks {', '.join(missing)}")
    domains = _field(raw, path, "domains", list)
    return SynthManifest(
        source=source,
        copies=copies,
        counts=counts,
        columns={p: list(columns[p]) for p in PARTS},
        has_time=_field(raw, path, "has_time", bool),
        domains=tuple(str(d) for d in domains),
        metarec_version=str(raw.get("metarec_version", "")),
        rows_per_file=_field(raw, path, "rows_per_file", int),
    )


def _field(raw: dict, path: Path, name: str, kind: type):
    value = raw.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(f"{path}: field {name!r} must be a {kind.__name__}, got {value!r}")
    return value


def _counts(raw: dict, path: Path, name: str) -> dict:
    value = _field(raw, path, name, dict)
    for key in ("users", "items", "interactions"):
        n = value.get(key)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise DataError(f"{path}: field '{name}.{key}' must be a count, got {n!r}")
    return value
