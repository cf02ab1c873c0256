"""``write_synth``: K disjoint copies of a real dataset as partitioned Parquet (synthetic scale).

Why copies rather than generated data: K renamed copies are K times larger and keep every
statistic of the real data exactly (history lengths, item popularity, time gaps, ratings, text),
so a scaling measurement on them says how metarec behaves on more of *that* data. Copies share no
user and no item (ids renamed ``c{c}:{raw}``, text tagged ``[copy c] ``), so nothing learned on one
copy leaks to another except through the text model. The layout is in ``synth_layout``.

The writer holds the source and one copy in memory: each copy is built by offsetting the source's
index arrays (no Python object per interaction) and written before the next one is built.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from metarec import __version__
from metarec.atomic_io import atomic_json
from metarec.data.schema import Dataset
from metarec.data.sequences import group_positions
from metarec.data.synth_layout import (
    COLUMNS,
    MANIFEST,
    PARTS,
    SynthManifest,
    id_prefix,
    partition_name,
    text_tag,
)
from metarec.errors import ConfigError

ROWS_PER_FILE = 1_000_000


@dataclass(frozen=True)
class SynthConfig:
    """How many copies to write and how many rows each Parquet file holds at most."""

    copies: int
    rows_per_file: int = ROWS_PER_FILE

    def __post_init__(self) -> None:
        if not isinstance(self.copies, int) or self.copies < 1:
            raise ConfigError(f"copies must be a whole number of at least 1, got {self.copies!r}")
        if not isinstance(self.rows_per_file, int) or self.rows_per_file < 1:
            raise ConfigError(
                f"rows per file must be a whole number of at least 1, got {self.rows_per_file!r}"
            )


def check_out_folder(out: Path | str, overwrite: bool = False) -> None:
    """Fail before any work when ``out`` cannot take a synth dataset.

    ``out`` may be missing or empty; with ``overwrite`` it may also be a synth folder, finished
    (``synth.json``) or not. Anything else is refused even with ``overwrite``: the writer never
    deletes files it did not write.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {out} exists and is not a folder")
    if not out.is_dir():
        return
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    if not names:
        return
    foreign = sorted(names - {*PARTS, MANIFEST})
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigError(
            f"output folder {out} is not empty and is not a synth folder (it holds {shown}); "
            "choose a new or empty folder"
        )
    if overwrite:
        return
    if MANIFEST in names:
        raise ConfigError(
            f"{out} already holds a synth dataset ({MANIFEST}); use --overwrite to replace it"
        )
    raise ConfigError(
        f"{out} holds an unfinished synth write (no {MANIFEST}); use --overwrite to replace it"
    )


def write_synth(
    ds: Dataset,
    out: Path | str,
    config: SynthConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthManifest:
    """Write ``config.copies`` disjoint copies of ``ds`` to ``out``; returns the manifest.

    ``synth.json`` is removed first and written last (atomically), so a crash at any point
    leaves a folder the loader refuses rather than one that looks complete but is short.
    """
    out = Path(out)
    check_out_folder(out, overwrite)
    if ds.source and Path(ds.source).resolve() == out.resolve():
        raise ConfigError(f"output folder {out} is the source dataset's own folder")
    _clear(out)
    out.mkdir(parents=True, exist_ok=True)
    columns = _columns(ds)
    source = _SourceArrays.of(ds)
    bar = tqdm(range(config.copies), desc="synth copies", unit="copy", disable=not progress)
    for copy in bar:
        name = partition_name(copy, config.copies)
        for part, table in _copy_tables(ds, source, copy, columns).items():
            _write_rows(table, out / part / name, config.rows_per_file)
    manifest = SynthManifest(
        source={"name": ds.name, "path": ds.source, **_counts(ds, 1)},
        copies=config.copies,
        counts=_counts(ds, config.copies),
        columns=columns,
        has_time=ds.has_time,
        domains=tuple(ds.domains),
        metarec_version=__version__,
        rows_per_file=config.rows_per_file,
    )
    atomic_json(out / MANIFEST, manifest.to_json())
    return manifest


@dataclass(frozen=True, eq=False)
class _SourceArrays:
    """The source's columns as Arrow arrays, built once and offset / prefixed per copy."""

    interactions: dict[str, np.ndarray]
    user_ids: pa.Array
    item_ids: pa.Array
    item_text: pa.Array

    @classmethod
    def of(cls, ds: Dataset) -> _SourceArrays:
        inter = ds.interactions
        timestamp = inter.timestamp
        if timestamp is None:  # rows are in (user, time) order: the position is the time
            timestamp = group_positions(inter.user)
        cols = {"user": inter.user, "item": inter.item, "timestamp": timestamp}
        cols |= {c: getattr(inter, c) for c in ("rating", "domain", "split")}
        typed = {
            c: np.asarray(v, dtype=COLUMNS["interactions"][c][0].to_pandas_dtype())
            for c, v in cols.items()
            if v is not None
        }
        return cls(
            interactions=typed,
            user_ids=pa.array(ds.users, type=pa.string()),
            item_ids=pa.array(ds.items.ids, type=pa.string()),
            item_text=pa.array(ds.items.text, type=pa.string()),
        )


def _columns(ds: Dataset) -> dict[str, list[str]]:
    inter = ds.interactions
    optional = [c for c in ("rating", "domain", "split") if getattr(inter, c) is not None]
    items = ["item", "id", "text"] + (["domain"] if ds.items.domain is not None else [])
    return {
        "interactions": ["user", "item", "timestamp", *optional],
        "users": ["user", "id"],
        "items": items,
    }


def _copy_tables(
    ds: Dataset, source: _SourceArrays, copy: int, columns: dict[str, list[str]]
) -> dict[str, pa.Table]:
    """Copy ``copy`` of the three parts: indices offset by whole copies, ids and text renamed."""
    n_users, n_items = ds.n_users, ds.n_items
    inter = dict(source.interactions)
    inter["user"] = inter["user"] + copy * n_users
    inter["item"] = inter["item"] + copy * n_items
    prefix = id_prefix(copy)
    users = {
        "user": np.arange(n_users, dtype=np.int64) + copy * n_users,
        "id": pc.binary_join_element_wise(prefix, source.user_ids, ""),
    }
    items = {
        "item": np.arange(n_items, dtype=np.int64) + copy * n_items,
        "id": pc.binary_join_element_wise(prefix, source.item_ids, ""),
        "text": pc.binary_join_element_wise(text_tag(copy), source.item_text, ""),
    }
    if ds.items.domain is not None:
        items["domain"] = np.asarray(ds.items.domain, dtype=np.int64)
    values = {"interactions": inter, "users": users, "items": items}
    return {part: _table(part, values[part], columns[part]) for part in PARTS}


def _table(part: str, values: dict, names: list[str]) -> pa.Table:
    schema = pa.schema([(c, COLUMNS[part][c][0]) for c in names])
    return pa.table({c: values[c] for c in names}, schema=schema)


def _write_rows(table: pa.Table, folder: Path, rows_per_file: int) -> None:
    """``table`` as ``part-00000.parquet``, ``part-00001.parquet``, ... of at most N rows."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, max(len(table), 1), rows_per_file)):
        _write_parquet(table.slice(start, rows_per_file), folder / f"part-{k:05d}.parquet")


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Write to a hidden temp file (Arrow's dataset discovery skips dot files), fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _clear(out: Path) -> None:
    """Remove a previous synth write: the manifest first, so the folder stops looking complete."""
    if not out.is_dir():
        return
    (out / MANIFEST).unlink(missing_ok=True)
    for part in PARTS:
        if (out / part).is_dir():
            shutil.rmtree(out / part)


def _counts(ds: Dataset, copies: int) -> dict[str, int]:
    return {
        "users": copies * ds.n_users,
        "items": copies * ds.n_items,
        "interactions": copies * len(ds.interactions),
    }
