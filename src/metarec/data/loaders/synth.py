"""``load_synth``: a synth folder (``metarec data synth``) read back with ``pyarrow.dataset``.

Interaction columns go from Parquet to Arrow to numpy whole, with no Python object per row (only
the catalogue's ids and texts become Python strings, because ``ItemCatalog`` holds lists). Before
any data is read, every file's footer is checked against ``synth.json``, so a missing column, a
wrong type or a corrupt file is named by its path; after reading, the counts, the order of users
and items and each row's copy are checked against the manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from metarec.data.schema import Dataset, Interactions, ItemCatalog
from metarec.data.sequences import in_time_order
from metarec.data.synth_layout import (
    COLUMNS,
    MANIFEST,
    PARTITION,
    PARTS,
    SynthManifest,
    read_manifest,
)
from metarec.errors import DataError

_COPY = pa.schema([(PARTITION, pa.int32())])


def is_synth_folder(folder: Path) -> bool:
    """A finished synth folder, or an unfinished write (parts without ``synth.json``)."""
    return (folder / MANIFEST).is_file() or all((folder / p).is_dir() for p in PARTS)


def load_synth(folder: Path | str, name: str | None = None) -> Dataset:
    """The dataset in a synth folder; copy-major order, so copy 0 is the source renamed."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise DataError(
            f"{folder}: an unfinished synth write (no {MANIFEST}, which is written last); "
            "write it again with metarec data synth --overwrite"
        )
    manifest = read_manifest(folder)
    _check_counts(folder, manifest)
    users = _read_part(folder, "users", manifest)
    items = _read_part(folder, "items", manifest)
    inter = _read_part(folder, "interactions", manifest)
    _check_index(folder / "users", users["user"], "user")
    _check_index(folder / "items", items["item"], "item")
    cols = _interaction_columns(folder / "interactions", inter, manifest)
    return Dataset(
        name=name or folder.name,
        interactions=in_time_order(Interactions(**cols)),
        users=users["id"],
        items=ItemCatalog(ids=items["id"], text=items["text"], domain=items.get("domain")),
        has_time=manifest.has_time,
        domains=manifest.domains,
        source=str(folder),
        extra={"synth": {"source": manifest.source.get("name", ""), "copies": manifest.copies}},
    )


def _check_counts(folder: Path, manifest: SynthManifest) -> None:
    for key in ("users", "items", "interactions"):
        expected = manifest.copies * manifest.source[key]
        if manifest.counts[key] != expected:
            raise DataError(
                f"{folder / MANIFEST}: counts.{key} is {manifest.counts[key]:,}, but "
                f"{manifest.copies} copies of {manifest.source[key]:,} make {expected:,}"
            )


def _read_part(folder: Path, part: str, manifest: SynthManifest) -> dict:
    """One part's columns and its ``copy`` column: numbers as numpy arrays, strings as lists.

    Columns are read one at a time and each Arrow column is dropped once converted, so the peak
    is the result plus one column, not the result plus a whole Arrow table.
    """
    root = folder / part
    dataset = _open_part(root, part, manifest)
    expected = manifest.counts[part]
    columns = {}
    for column in [*manifest.columns[part], PARTITION]:
        try:
            values = dataset.to_table(columns=[column]).column(column)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{root}: cannot read the Parquet files ({e})") from e
        if len(values) != expected:
            raise DataError(f"{root}: {len(values):,} rows, but {MANIFEST} counts {expected:,}")
        if values.null_count:
            raise DataError(f"{root}: column {column!r} has {values.null_count:,} missing values")
        columns[column] = (
            values.to_pylist() if pa.types.is_string(values.type) else values.to_numpy()
        )
        del values
    return columns


def _open_part(root: Path, part: str, manifest: SynthManifest) -> pds.Dataset:
    """The part's files as one Arrow dataset, after every footer has been checked."""
    files = _part_files(root, manifest.copies)
    schema = pa.schema([(c, COLUMNS[part][c][0]) for c in manifest.columns[part]])
    for path in files:
        _check_schema(path, schema)
    try:
        return pds.dataset(
            [str(p) for p in files],
            schema=pa.unify_schemas([schema, _COPY]),
            format="parquet",
            partitioning=pds.partitioning(_COPY, flavor="hive"),
            partition_base_dir=str(root),
        )
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{root}: cannot read the Parquet files ({e})") from e


def _part_files(root: Path, copies: int) -> list[Path]:
    """Every ``copy=N/part-*.parquet`` under ``root``, in copy order then file order."""
    if not root.is_dir():
        raise DataError(f"{root}: missing ({MANIFEST} lists {copies} copies)")
    found: dict[int, Path] = {}
    for sub in root.iterdir():
        if sub.name.startswith((".", "_")):
            continue
        key, _, value = sub.name.partition("=")
        if key != PARTITION or not value.isdigit() or not sub.is_dir():
            raise DataError(f"{sub}: not a {PARTITION}=N partition folder")
        found[int(value)] = sub
    missing = sorted(set(range(copies)) - set(found))
    if missing:
        raise DataError(
            f"{root}: partition {PARTITION}={missing[0]} is missing "
            f"({len(missing)} of the {copies} copies in {MANIFEST})"
        )
    beyond = sorted(set(found) - set(range(copies)))
    if beyond:
        raise DataError(f"{found[beyond[0]]}: beyond the {copies} copies in {MANIFEST}")
    files = []
    for copy in range(copies):
        parts = sorted(found[copy].glob("part-*.parquet"))
        if not parts:
            raise DataError(f"{found[copy]}: no part-*.parquet file")
        files += parts
    return files


def _check_schema(path: Path, expected: pa.Schema) -> None:
    """Read only the footer: a corrupt file or a wrong column fails here, named by its path."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from e
    for field in expected:
        if field.name not in schema.names:
            raise DataError(
                f"{path}: column {field.name!r} is missing (the file has "
                f"{', '.join(schema.names)}; {MANIFEST} lists {', '.join(expected.names)})"
            )
        found = schema.field(field.name).type
        if found != field.type:
            raise DataError(f"{path}: column {field.name!r} is {found}, expected {field.type}")


def _check_index(root: Path, index: np.ndarray, column: str) -> None:
    """Users and items must be stored in index order 0..n-1: the order is the contract."""
    n = len(index)
    if not np.array_equal(index, np.arange(n, dtype=np.int64)):
        row = int(np.flatnonzero(index != np.arange(n))[0])
        raise DataError(
            f"{root}: column {column!r} must run 0..{n - 1} in copy order; "
            f"row {row} holds {index[row]}"
        )


def _interaction_columns(root: Path, read: dict, m: SynthManifest) -> dict:
    """The interaction arrays, each row checked to lie in its own copy's users and items."""
    cols = {c: read[c] for c in m.columns["interactions"]}
    copy = read[PARTITION]
    for column, per_copy in (("user", m.source["users"]), ("item", m.source["items"])):
        values = cols[column]
        bad = np.flatnonzero((values < 0) | (values // max(per_copy, 1) != copy))
        if len(bad):
            row = int(bad[0])
            raise DataError(
                f"{root}: row {row} of {PARTITION}={copy[row]} holds {column} {values[row]}, "
                f"outside that copy's {column}s"
            )
    if "domain" in cols:
        domain = cols["domain"]
        if len(domain) and (domain.min() < 0 or domain.max() >= len(m.domains)):
            raise DataError(f"{root}: domain indices outside the {len(m.domains)} domains")
    if "split" in cols and len(cols["split"]) and not np.isin(cols["split"], (0, 1, 2)).all():
        raise DataError(f"{root}: split codes other than 0 (train), 1 (valid), 2 (test)")
    return cols
