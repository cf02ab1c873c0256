"""Amazon review datasets in two published preprocessed layouts.

* UniSRec / RecBole atomic files (``NAME.{train,valid,test}.inter``, ``NAME.text``,
  ``NAME.item2index``, optional ``NAME.user2index``): each user's sequence is rebuilt from the test
  row (capped history + target); time is the position in the sequence.
* ReChorus layout (``train.csv``, ``dev.csv``, ``test.csv``, tab-separated, ids from 1, optional
  ``NAME.item2index`` and ``NAME.text`` keyed by ASIN): real timestamps; the split is the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metarec.data.assemble import RawInteractions, build_dataset
from metarec.data.columns import integers, strings, texts, timestamps, unique_ids
from metarec.data.schema import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID, Dataset
from metarec.data.sequences import group_positions
from metarec.data.tables import Table, read_delimited
from metarec.data.validation import first_duplicate, require_file
from metarec.errors import DataError

_INTER_COLUMNS = ("user_id:token", "item_id_list:token_seq", "item_id:token")
_CODES = (SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST)  # train.csv, dev.csv, test.csv


def load_unisrec(folder: Path | str, name: str | None = None) -> Dataset:
    """A UniSRec-format folder, e.g. Scientific: 8,442 users, 4,385 items, 59,384 rows."""
    folder = Path(folder)
    stem = _stem(folder, ".train.inter")
    asins, index = _item2index(folder / f"{stem}.item2index")
    text = _text_by_id(folder / f"{stem}.text")
    test = read_delimited(
        require_file(folder / f"{stem}.test.inter", "UniSRec test file"),
        _INTER_COLUMNS,
        delimiter="\t",
        quoting=False,
    )
    users = unique_ids(test, _INTER_COLUMNS[0], "user")
    seq_items, seq_rows, offsets = _sequences(test)
    item = _tokens_to_ids(test, seq_items, seq_rows, asins, index)
    split = np.full(len(seq_items), SPLIT_TRAIN, dtype=np.int8)
    split[offsets[1:] - 1] = SPLIT_TEST
    _mark_valid(folder / f"{stem}.valid.inter", users, seq_items, offsets, split)
    raw = RawInteractions(
        user=_user_names(folder / f"{stem}.user2index", users).take(pa.array(seq_rows)),
        item=item,
        timestamp=group_positions(seq_rows),
        split=split,
    )
    return build_dataset(
        name or folder.name, folder, raw, _catalog(asins, index, text), has_time=False
    )


def load_office(folder: Path | str, name: str | None = None) -> Dataset:
    """A ReChorus-format folder (amazon-office): 53,258 rows, 4,905 users, 2,420 items."""
    folder = Path(folder)
    tables = [
        read_delimited(
            require_file(folder / f"{part}.csv", f"{part} interactions file"),
            ["user_id", "item_id", "time"],
            delimiter="\t",
            quoting=False,
        )
        for part in ("train", "dev", "test")
    ]
    maps = list(folder.glob("*.item2index"))
    stem = _stem(folder, ".item2index") if maps else None
    asins, index = _item2index(folder / f"{stem}.item2index") if stem else (None, None)
    text_path = folder / f"{stem}.text"
    text = _text_by_id(text_path) if stem and text_path.is_file() else {}
    items = [_office_items(t, asins, index) for t in tables]
    raw = RawInteractions(
        user=pa.concat_arrays([strings(t, "user_id") for t in tables]),
        item=pa.concat_arrays(items),
        timestamp=np.concatenate([timestamps(t, "time") for t in tables]),
        split=np.concatenate(
            [np.full(len(t), code, dtype=np.int8) for t, code in zip(tables, _CODES, strict=True)]
        ),
    )
    catalog = None if asins is None else _catalog(asins, index, text)
    return build_dataset(name or folder.name, folder, raw, catalog, has_time=True)


def _stem(folder: Path, suffix: str) -> str:
    found = sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}"))
    if len(found) != 1:
        what = "none" if not found else ", ".join(f + suffix for f in found)
        raise DataError(f"{folder}: expected exactly one '*{suffix}' file, found {what}")
    return found[0]


def _item2index(path: Path) -> tuple[pa.Array, np.ndarray]:
    """(ASINs, their integer ids) from a header-less ``ASIN <tab> id`` file."""
    table = read_delimited(
        require_file(path, "item2index file"),
        delimiter="\t",
        header=False,
        names=("asin", "index"),
        quoting=False,
    )
    asins = unique_ids(table, "asin", "ASIN")
    index = integers(table, "index", "an integer item index")
    dup = first_duplicate(index)
    if dup is not None:
        raise table.error(
            f"duplicate item index {int(index[dup[1]])} (first on {table.position(dup[0])})",
            dup[1],
            "index",
        )
    return asins, index


def _catalog(
    asins: pa.Array, index: np.ndarray, text: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Catalogue in item2index order, with text by ASIN ('' where there is none)."""
    ids = asins.take(pa.array(np.argsort(index, kind="stable"))).to_pylist()
    return ids, [text.get(a, "") for a in ids]


def _text_by_id(path: Path) -> dict[str, str]:
    """``{id: text}`` from a two-column ``id <tab> text`` file with a header."""
    table = read_delimited(require_file(path, "item text file"), delimiter="\t", quoting=False)
    if len(table.found) < 2:
        raise DataError(f"{path}: expected two columns (id, text), found {list(table.found)}")
    id_col, text_col = table.found[0], table.found[1]
    ids = unique_ids(table, id_col, "item id").to_pylist()
    return dict(zip(ids, texts(table, text_col), strict=True))


def _sequences(test: Table) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Flattened history + target tokens per test row, the row of each, and CSR offsets."""
    history = pc.utf8_split_whitespace(test[_INTER_COLUMNS[1]].combine_chunks())
    targets = strings(test, _INTER_COLUMNS[2])
    hist_len = pc.list_value_length(history).to_numpy(zero_copy_only=False).astype(np.int64)
    lengths = hist_len + 1
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    rows = np.repeat(np.arange(len(lengths)), lengths)
    order = np.empty(offsets[-1], dtype=np.int64)  # where each output token comes from
    is_target = np.zeros(offsets[-1], dtype=bool)
    is_target[offsets[1:] - 1] = True
    flat = pa.concat_arrays([pc.list_flatten(history), targets])
    order[~is_target] = np.arange(hist_len.sum())
    order[is_target] = hist_len.sum() + np.arange(len(lengths))
    return flat.take(pa.array(order)), rows, offsets


def _tokens_to_ids(
    table: Table, tokens: pa.Array, rows: np.ndarray, asins: pa.Array, index: np.ndarray
) -> pa.Array:
    """Map integer item tokens to ASINs through item2index, naming the row of an unknown one."""
    try:
        values = pc.cast(tokens, pa.int64()).to_numpy()
    except pa.ArrowInvalid:
        values = np.full(len(tokens), -1, dtype=np.int64)
    lookup = np.full(max(int(index.max(initial=0)), int(values.max(initial=0))) + 1, -1)
    lookup[index] = np.arange(len(index))
    position = np.where(values >= 0, lookup[np.maximum(values, 0)], -1)
    bad = np.flatnonzero(position < 0)
    if len(bad):
        token = tokens[int(bad[0])].as_py()
        raise table.error(f"item {token!r} is not in the item2index file", int(rows[bad[0]]))
    return asins.take(pa.array(position))


def _mark_valid(
    path: Path, users: pa.Array, items: pa.Array, offsets: np.ndarray, split: np.ndarray
) -> None:
    """Mark each user's second-to-last item valid, checking it is the valid file's target."""
    valid = read_delimited(
        require_file(path, "UniSRec valid file"), _INTER_COLUMNS, delimiter="\t", quoting=False
    )
    row = np.asarray(
        pc.fill_null(pc.index_in(strings(valid, _INTER_COLUMNS[0]), value_set=users), -1)
    )
    target = strings(valid, _INTER_COLUMNS[2]).to_numpy(zero_copy_only=False)
    unknown = np.flatnonzero(row < 0)
    if len(unknown):
        raise valid.error("user has no row in the test file", int(unknown[0]), _INTER_COLUMNS[0])
    where = offsets[row + 1] - 2
    short = np.flatnonzero(where < offsets[row])
    expected = items.take(pa.array(np.maximum(where, 0))).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(expected != target)
    bad = np.union1d(bad, short)
    if len(bad):
        raise valid.error(
            "valid target is not the second-to-last item of the user's test sequence",
            int(bad[0]),
            _INTER_COLUMNS[2],
        )
    split[where] = SPLIT_VALID


def _user_names(path: Path, tokens: pa.Array) -> pa.Array:
    """Raw user ids: reviewer ids from ``NAME.user2index`` when present, else the tokens."""
    if not path.is_file():
        return tokens
    table = read_delimited(
        path, delimiter="\t", header=False, names=("user", "index"), quoting=False
    )
    names, index = unique_ids(table, "user", "user"), strings(table, "index")
    position = pc.index_in(tokens, value_set=index)
    missing = pc.index(pc.is_null(position), True).as_py()
    if missing >= 0:
        raise DataError(f"{path}: user {tokens[missing].as_py()!r} is not listed")
    return names.take(position)


def _office_items(table: Table, asins: pa.Array | None, index: np.ndarray | None) -> pa.Array:
    ids = strings(table, "item_id")
    if asins is None or index is None:
        return ids
    position = pc.index_in(ids, value_set=pa.array(index.astype(str).tolist()))
    missing = pc.index(pc.is_null(position), True).as_py()
    if missing >= 0:
        raise table.error(
            f"item {ids[missing].as_py()!r} is not in the item2index file", missing, "item_id"
        )
    return asins.take(position)
