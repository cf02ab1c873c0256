"""Every input error names the file, the line (header = line 1) or Parquet row, and the column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metarec.data import Dataset, Interactions, ItemCatalog, load_dataset, require_time
from metarec.data.loaders import load_generic, load_movielens_csv, load_office, load_unisrec
from metarec.data.splits import temporal, temporal_fraction
from metarec.errors import ConfigError, DataError

HEADER = "user_id,item_id,timestamp,rating\n"
COLUMNS = {"timestamp": "timestamp", "rating": "rating"}


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    message = error_of(load_generic, tmp_path / "absent.csv")
    assert "absent.csv" in message and "not found" in message


def test_missing_movies_file(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,5\n")
    message = error_of(load_movielens_csv, tmp_path)
    assert str(tmp_path / "movies.csv") in message and "not found" in message


def test_missing_column_lists_found(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user_id,item,time\n1,2,3\n")
    message = error_of(load_generic, path, timestamp="time")
    assert str(path) in message
    assert "missing column 'item_id'" in message
    assert "'user_id', 'item', 'time'" in message


def test_unparsable_rating_names_line_column_value(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", HEADER + "1,a,10,4.5\n1,b,11,abc\n")
    message = error_of(load_generic, path, **COLUMNS)
    assert message.startswith(f"{path}, line 3, column 'rating': ")
    assert "'abc'" in message and "number" in message


def test_unparsable_timestamp(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", HEADER + "1,a,10,4\n2,b,yesterday,3\n")
    message = error_of(load_generic, path, **COLUMNS)
    assert f"{path}, line 3, column 'timestamp'" in message
    assert "'yesterday'" in message and "timestamp" in message


def test_unparsable_value_far_down_counts_blank_lines(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i},{i},1\n" for i in range(20000))
    path = write(tmp_path / "log.csv", HEADER + rows + "\n\n" + "7,7,7,x\n")
    message = error_of(load_generic, path, **COLUMNS)
    assert f"line {20000 + 4}," in message and "'x'" in message


def test_missing_timestamp_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", HEADER + "1,a,10,4\n1,b,,3\n")
    message = error_of(load_generic, path, **COLUMNS)
    assert f"{path}, line 3, column 'timestamp': missing timestamp" in message


def test_missing_timestamp_ignored_when_not_configured(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", HEADER + "1,a,10,4\n1,b,,3\n")
    ds = load_generic(path, rating="rating")
    assert not ds.has_time and len(ds.interactions) == 2


def test_missing_id(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", HEADER + "1,a,10,4\n,b,11,3\n")
    message = error_of(load_generic, path, **COLUMNS)
    assert f"{path}, line 3, column 'user_id': missing value" in message


def test_wrong_field_count(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", HEADER + "1,a,10,4\n1,b,11\n")
    message = error_of(load_generic, path, **COLUMNS)
    assert f"{path}, line 3:" in message and "expected 4 fields" in message


def test_empty_data(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", HEADER)
    assert "no interactions" in error_of(load_generic, path, **COLUMNS)
    empty = write(tmp_path / "empty.csv", "")
    assert f"{empty}: file is empty" in error_of(load_generic, empty)


def test_duplicate_item_ids(tmp_path: Path) -> None:
    inter = write(tmp_path / "log.csv", "user_id,item_id\n1,a\n")
    items = write(tmp_path / "items.csv", "item_id,text\na,Apple\nb,Banana\na,Avocado\n")
    message = error_of(load_generic, inter, item_text=items)
    assert f"{items}, line 4, column 'item_id'" in message
    assert "duplicate item id 'a'" in message and "line 2" in message


def test_duplicate_movie_ids(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,5\n")
    write(tmp_path / "movies.csv", "movieId,title,genres\n1,A,Drama\n2,B,Drama\n1,C,Drama\n")
    message = error_of(load_movielens_csv, tmp_path)
    assert "movies.csv, line 4, column 'movieId'" in message and "duplicate movie id" in message


def test_wrong_encoding_names_line_and_offset(tmp_path: Path) -> None:
    data = (HEADER + "1,a,10,4\n1,caf\xe9,11,3\n").encode("latin-1")
    path = write(tmp_path / "log.csv", data)
    message = error_of(load_generic, path, **COLUMNS)
    assert f"{path}, line 3, column 'item_id': not valid UTF-8" in message
    offset = data.index(b"\xe9")
    assert f"byte offset {offset}" in message
    ds = load_generic(path, encoding="latin-1", **COLUMNS)
    assert "café" in ds.items.ids


def test_parquet_errors_name_row(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": ["1", "2", None], "item_id": ["a", "b", "c"]}), path)
    message = error_of(load_generic, path)
    assert f"{path}, row 3, column 'user_id': missing value" in message
    message = error_of(load_generic, path, timestamp="time")
    assert "missing column 'time'" in message and "'user_id', 'item_id'" in message


def test_label_must_be_binary(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user_id,item_id,click\n1,a,1\n1,b,2\n")
    message = error_of(load_generic, path, label="click")
    assert f"{path}, line 3, column 'click': label 2 is not 0 or 1" in message


def test_unknown_split_value(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user_id,item_id,fold\n1,a,train\n1,b,holdout\n")
    message = error_of(load_generic, path, split="fold")
    assert f"{path}, line 3, column 'fold'" in message and "'holdout'" in message


def test_rating_and_label_conflict() -> None:
    with pytest.raises(ConfigError, match="not both"):
        load_generic("x.csv", rating="r", label="l")


def test_unknown_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "log.json", "{}")
    assert "cannot tell the format" in error_of(load_generic, path)


def test_path_that_does_not_exist() -> None:
    assert "no such file or folder" in error_of(load_dataset, "./no/such/place")


def test_office_unknown_item(tmp_path: Path) -> None:
    for part, extra in (("train", ""), ("dev", "\tneg_items"), ("test", "\tneg_items")):
        neg = "\t[1]" if extra else ""
        write(tmp_path / f"{part}.csv", f"user_id\titem_id\ttime{extra}\n1\t1\t5{neg}\n")
    write(tmp_path / "test.csv", "user_id\titem_id\ttime\tneg_items\n1\t1\t5\t[]\n1\t9\t6\t[]\n")
    write(tmp_path / "Shop.item2index", "A1\t1\n")
    message = error_of(load_office, tmp_path)
    assert "test.csv, line 3, column 'item_id'" in message and "'9'" in message


def test_unisrec_inconsistent_valid_row(tmp_path: Path) -> None:
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    write(tmp_path / "S.train.inter", head + "0\t0\t1\n")
    write(tmp_path / "S.valid.inter", head + "0\t0\t2\n")
    write(tmp_path / "S.test.inter", head + "0\t0 1\t2\n")
    write(tmp_path / "S.item2index", "X0\t0\nX1\t1\nX2\t2\n")
    write(tmp_path / "S.text", "item_id:token\ttext:token_seq\nX0\tzero\n")
    message = error_of(load_unisrec, tmp_path)
    assert "S.valid.inter, line 2, column 'item_id:token'" in message
    write(tmp_path / "S.valid.inter", head + "0\t0\t1\n")
    ds = load_unisrec(tmp_path)
    assert ds.items.ids == ["X0", "X1", "X2"] and ds.items.text == ["zero", "", ""]
    write(tmp_path / "S.test.inter", head + "0\t0 7\t2\n")
    message = error_of(load_unisrec, tmp_path)
    assert "S.test.inter, line 2" in message and "'7'" in message


def _tiny(timestamp: np.ndarray | None, has_time: bool) -> Dataset:
    inter = Interactions(np.array([0, 0]), np.array([0, 1]), timestamp)
    return Dataset("tiny", inter, ["u"], ItemCatalog(["a", "b"], ["", ""]), has_time=has_time)


def test_require_time() -> None:
    require_time(_tiny(np.array([1, 2]), True), "a temporal split")
    with pytest.raises(DataError, match=r"a temporal split needs timestamps.*has none"):
        require_time(_tiny(None, True), "a temporal split")
    with pytest.raises(DataError, match="only the order"):
        require_time(_tiny(np.array([0, 1]), False), "a temporal split")
    with pytest.raises(DataError, match="1 interaction"):
        require_time(_tiny(np.array([1.0, np.nan]), True), "drift tasks")


def test_temporal_split_refuses_sequence_order(shared_data: Path) -> None:
    ds = load_unisrec(shared_data / "amazon-scientific")
    with pytest.raises(DataError, match="amazon-scientific"):
        temporal_fraction(ds)
    with pytest.raises(DataError, match="timestamps"):
        temporal(ds, 1, 2)
