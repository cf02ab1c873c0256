"""Loaders on the real datasets and on tiny hand-made files in tests/data/."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metarec.data import (
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VALID,
    Dataset,
    format_inspection,
    inspect_dataset,
    load_dataset,
)
from metarec.data.loaders import (
    bundled_path,
    load_generic,
    load_movielens_csv,
    movie_text,
    read_item_text,
    sniff_format,
)
from metarec.errors import ConfigError, DataError

DATA = Path(__file__).parent / "data"
GENERIC = DATA / "generic"
GENERIC_OPTIONS = {
    "user": "user",
    "item": "item",
    "timestamp": "ts",
    "rating": "rating",
    "domain": "domain",
}


@pytest.fixture(scope="module")
def ml_small() -> Dataset:
    return load_dataset()


@pytest.fixture(scope="module")
def office(shared_data: Path) -> Dataset:
    return load_dataset(shared_data / "amazon-office")


@pytest.fixture(scope="module")
def scientific(shared_data: Path) -> Dataset:
    return load_dataset(shared_data / "amazon-scientific")


def assert_well_formed(ds: Dataset) -> None:
    """Contiguous indices, sorted (user, time, item), raw ids as str."""
    inter = ds.interactions
    assert inter.user.dtype == np.int64 and inter.item.dtype == np.int64
    assert inter.user.min() == 0 and inter.user.max() == ds.n_users - 1
    assert len(np.unique(inter.user)) == ds.n_users
    assert inter.item.min() >= 0 and inter.item.max() < ds.n_items
    order = np.lexsort((inter.item, inter.timestamp, inter.user))
    assert np.array_equal(order, np.arange(len(inter)))
    assert all(isinstance(u, str) for u in ds.users[:5])
    assert all(isinstance(i, str) for i in ds.items.ids[:5])
    assert len(set(ds.items.ids)) == ds.n_items and len(set(ds.users)) == ds.n_users


# ---------------------------------------------------------------- real data


def test_ml_latest_small_counts_and_text(ml_small: Dataset) -> None:
    assert (ml_small.n_users, ml_small.n_items, len(ml_small.interactions)) == (610, 9742, 100836)
    assert len(np.unique(ml_small.interactions.item)) == 9724
    assert_well_formed(ml_small)
    toy = ml_small.item_index()["1"]
    assert ml_small.items.text[toy] == (
        "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy"
    )
    assert ml_small.has_time and ml_small.name == "ml-latest-small"
    rating = ml_small.interactions.rating
    assert rating is not None and rating.min() == 0.5 and rating.max() == 5.0
    assert ml_small.interactions.split is None


def test_ml_latest_small_first_user_row(ml_small: Dataset) -> None:
    # ratings.csv: user 1 rated movie 1 with 4.0 at 964982703
    inter = ml_small.interactions
    u, m = ml_small.user_index()["1"], ml_small.item_index()["1"]
    row = np.flatnonzero((inter.user == u) & (inter.item == m))
    assert len(row) == 1
    assert inter.timestamp[row[0]] == 964982703 and inter.rating[row[0]] == 4.0


def test_ml_latest_small_loads_fast() -> None:
    load_dataset()  # warm imports and file cache
    start = time.perf_counter()
    load_dataset()
    assert time.perf_counter() - start < 2.0


def test_shared_copy_equals_bundled(ml_small: Dataset, shared_data: Path) -> None:
    shared = load_movielens_csv(shared_data / "ml-latest-small")
    assert np.array_equal(shared.interactions.item, ml_small.interactions.item)
    assert shared.items.text == ml_small.items.text


def test_office(office: Dataset) -> None:
    assert (office.n_users, office.n_items, len(office.interactions)) == (4905, 2420, 53258)
    assert_well_formed(office)
    assert office.has_time
    split = office.interactions.split
    assert np.bincount(split).tolist() == [43448, 4905, 4905]
    calc = office.item_index()["B00000JBLU"]
    assert office.items.text[calc].startswith("Texas Instruments TI-1795 SV")
    # user 21's dev row: item 26 at 1070582400 (Office.item2index: id 26 -> some ASIN)
    u = office.user_index()["21"]
    valid = (office.interactions.user == u) & (split == SPLIT_VALID)
    assert office.interactions.timestamp[valid].tolist() == [1070582400]


def test_scientific(scientific: Dataset) -> None:
    ds = scientific
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (8442, 4385, 59384)
    assert_well_formed(ds)
    assert not ds.has_time and ds.items.text_coverage == 1.0
    inter = ds.interactions
    assert np.bincount(inter.split).tolist() == [59384 - 2 * 8442, 8442, 8442]
    # user 0 = ABW8NXS7SV55K: test history items 0..12, target 13 (item2index tokens)
    u = ds.user_index()["ABW8NXS7SV55K"]
    rows = inter.user == u
    assert inter.timestamp[rows].tolist() == list(range(14))
    tokens = [ds.items.ids[i] for i in inter.item[rows]]
    assert tokens[0] == "B00TNNWMXI"  # token 0 in Scientific.item2index
    assert inter.split[rows].tolist() == [SPLIT_TRAIN] * 12 + [SPLIT_VALID, SPLIT_TEST]
    gorilla = [t for t in ds.items.text if t.startswith("Gorilla Original Gorilla Glue")]
    assert gorilla


def test_load_dataset_by_name(monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> None:
    monkeypatch.setenv("METAREC_DATA_DIR", str(shared_data))
    ds = load_dataset("amazon-office")
    assert ds.name == "amazon-office" and len(ds.interactions) == 53258
    assert load_dataset("ml-latest-small").source == str(bundled_path("ml-latest-small"))


def test_sniff_formats(shared_data: Path) -> None:
    assert sniff_format(shared_data / "ml-latest-small").name == "movielens-csv"
    assert sniff_format(shared_data / "amazon-office").name == "rechorus"
    assert sniff_format(shared_data / "amazon-scientific").name == "unisrec"
    assert sniff_format(DATA / "ml-100k").name == "ml-100k"
    assert sniff_format(DATA / "ml-1m").name == "ml-1m"
    with pytest.raises(DataError, match="not a dataset folder"):
        sniff_format(GENERIC)


def test_unknown_name_lists_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METAREC_DATA_DIR", raising=False)
    with pytest.raises(DataError, match=r"unknown dataset 'nope'.*ml-latest-small"):
        load_dataset("nope")
    with pytest.raises(DataError, match="METAREC_DATA_DIR"):
        load_dataset("amazon-scientific")


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match="colour"):
        load_dataset(None, colour="red")
    with pytest.raises(ConfigError, match="colour"):
        load_dataset(GENERIC / "interactions.csv", colour="red")


# ---------------------------------------------------------------- MovieLens small files


def test_movie_text() -> None:
    assert movie_text("Heat (1995)", ["Action", "Crime"]) == "Heat (1995). Genres: Action, Crime"
    assert movie_text("Untitled ", ["(no genres listed)"]) == "Untitled"


def test_ml100k() -> None:
    ds = load_dataset(DATA / "ml-100k")
    assert ds.users == ["22", "196", "244"]  # numeric order
    assert ds.items.ids == ["1", "2", "3", "4", "5"]  # u.item order, then unlisted rated item 5
    assert ds.items.text[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    assert ds.items.text[2] == "Misérables, Les (1995). Genres: Drama, Musical"  # latin-1
    assert ds.items.text[3] == "unknown" and ds.items.text[4] == ""
    inter = ds.interactions
    # user 22: (1, t=878887110), (2, t=878887110), (3, t=878887116): tie broken by item
    assert inter.item[inter.user == 0].tolist() == [0, 1, 2]
    assert inter.rating[inter.user == 0].tolist() == [4.0, 2.0, 1.0]
    assert_well_formed(ds)


def test_ml1m() -> None:
    ds = load_dataset(DATA / "ml-1m")
    assert ds.items.ids == ["661", "914", "1193", "3408", "3409"]
    assert ds.items.text[4] == "Ça commence aujourd'hui (1999). Genres: Drama"
    assert ds.items.text[2] == "One Flew Over the Cuckoo's Nest (1975). Genres: Drama"
    first = ds.interactions.user == ds.user_index()["1"]
    assert [ds.items.ids[i] for i in ds.interactions.item[first]] == ["1193", "914", "661"]
    assert len(np.unique(ds.interactions.item)) == 4 and ds.n_items == 5


def test_movielens_csv_rated_movie_missing_from_movies(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\r\n1,10,4.0,5\r\n1,99,3.5,6\r\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\r\n10,"Heat, The (1995)",Action|Crime\r\n11,Unrated (2000),Drama\r\n'
    )
    ds = load_dataset(tmp_path)
    assert ds.items.ids == ["10", "11", "99"]
    assert ds.items.text == [
        "Heat, The (1995). Genres: Action, Crime",
        "Unrated (2000). Genres: Drama",
        "",
    ]


# ---------------------------------------------------------------- generic files


def _check_generic(ds: Dataset) -> None:
    assert ds.users == ["u1", "u2", "u3"]
    assert ds.items.ids == ["i1", "i2", "i3", "i4", "i9"]
    assert ds.items.text[:4] == [
        "The Cat Book. Acme",
        'Dog "Deluxe" Guide',
        "Bird Atlas. BirdCo",
        "Fish Facts. Acme",
    ]
    assert ds.items.text[4] == ""
    inter = ds.interactions
    assert inter.item[inter.user == 1].tolist() == [2, 1]  # u2: i3 at 120 before i2 at 150
    assert inter.rating.tolist() == [4.5, 3.0, 1.0, 2.0, 5.0, 2.5]
    assert ds.domains == ("books", "films")
    assert [ds.domains[d] for d in inter.domain[:3]] == ["books", "books", "films"]
    assert ds.has_time and inter.timestamp.tolist() == [100, 200, 300, 120, 150, 50]


def test_generic_csv() -> None:
    ds = load_dataset(
        GENERIC / "interactions.csv",
        item_text=GENERIC / "items.tsv",
        text_columns=("title", "brand"),
        **GENERIC_OPTIONS,
    )
    assert ds.name == "interactions"
    _check_generic(ds)


def test_generic_tsv_and_parquet(tmp_path: Path) -> None:
    csv_text = (GENERIC / "interactions.csv").read_text()
    (tmp_path / "inter.tsv").write_text(csv_text.replace(",", "\t"))
    rows = [line.split(",") for line in csv_text.splitlines()]
    table = pa.table({name: [r[i] for r in rows[1:]] for i, name in enumerate(rows[0])})
    table = table.set_column(2, "ts", pa.array([int(r[2]) for r in rows[1:]]))
    table = table.set_column(3, "rating", pa.array([float(r[3]) for r in rows[1:]]))
    pq.write_table(table, tmp_path / "inter.parquet")
    items = pa.table(
        {
            "item_id": ["i1", "i2", "i3", "i4"],
            "title": ["The Cat Book", 'Dog "Deluxe" Guide', "Bird Atlas", "Fish Facts"],
            "brand": ["Acme", None, "BirdCo", "Acme"],
        }
    )
    pq.write_table(items, tmp_path / "items.parquet")
    for name in ("inter.tsv", "inter.parquet"):
        ds = load_generic(
            tmp_path / name,
            item_text=tmp_path / "items.parquet",
            text_columns=["title", "brand"],
            **GENERIC_OPTIONS,
        )
        _check_generic(ds)


def test_generic_without_time_keeps_file_order(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("user_id,item_id,label\nb,x,1\na,z,0\nb,y,0\nb,a,1\n")
    ds = load_generic(path, label="label")
    assert not ds.has_time
    inter = ds.interactions
    b = ds.user_index()["b"]
    assert [ds.items.ids[i] for i in inter.item[inter.user == b]] == ["x", "y", "a"]
    assert inter.timestamp[inter.user == b].tolist() == [0, 1, 2]
    assert inter.rating[inter.user == b].tolist() == [1.0, 0.0, 1.0]


def test_generic_given_split_and_iso_time(tmp_path: Path) -> None:
    path = tmp_path / "log.tsv"
    path.write_text(
        "user\titem\twhen\tsplit\n"
        "1\ta\t2020-01-01T00:00:00\ttrain\n"
        "1\tb\t2020-01-02\tvalid\n"
        "1\tc\t2020-01-03 12:00:00\ttest\n"
    )
    ds = load_generic(path, user="user", item="item", timestamp="when", split="split")
    assert ds.interactions.split.tolist() == [SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST]
    assert ds.interactions.timestamp.tolist() == [1577836800, 1577923200, 1578052800]


def test_read_item_text_multiple_columns() -> None:
    ids, text = read_item_text(GENERIC / "items.tsv", "item_id", ["title", "brand"], join=" | ")
    assert ids == ["i1", "i2", "i3", "i4"] and text[0] == "The Cat Book | Acme"


# ---------------------------------------------------------------- inspection


def test_inspect_ml_latest_small(ml_small: Dataset) -> None:
    info = inspect_dataset(ml_small)
    assert info["users"] == 610 and info["items"] == 9742
    assert info["items_with_interactions"] == 9724 and info["interactions"] == 100836
    assert info["density"] == pytest.approx(100836 / (610 * 9742))
    assert info["history_length"]["min"] == 20 and info["history_length"]["max"] == 2698
    assert info["rating"]["min"] == 0.5 and info["rating"]["distinct"] == 10
    assert info["text_coverage"] == 1.0 and info["given_splits"] is None
    assert info["time_range"]["start"].startswith("1996-03-29")
    assert info["time_range"]["end"].startswith("2018-09-24")
    text = format_inspection(info)
    lines = text.splitlines()
    assert any(line.split() == ["interactions", "100,836"] for line in lines)
    value_columns = {len(line) - len(line[len(line.split()[0]) :].lstrip()) for line in lines}
    assert len(value_columns) == 1  # values start in one aligned column


def test_inspect_scientific_has_splits_no_time(scientific: Dataset) -> None:
    info = inspect_dataset(scientific)
    assert info["given_splits"] == {"train": 42500, "valid": 8442, "test": 8442}
    assert "time_range" not in info and "rating" not in info
    assert info["history_length"]["max"] == 51


def test_generic_columns_are_detected_from_common_names(tmp_path):
    from metarec.data.loaders.generic import detect_format

    path = tmp_path / "log.tsv"
    path.write_text("userId\tmovieId\tts\tscore\nu1\tm1\t5\t4.5\nu1\tm2\t6\t2.0\nu2\tm1\t1\t3.0\n")
    fmt = detect_format(path)
    assert (fmt.user, fmt.item, fmt.timestamp, fmt.rating) == ("userId", "movieId", "ts", "score")
    ds = load_dataset(path)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (2, 2, 3)
    assert ds.interactions.rating.tolist() == [4.5, 2.0, 3.0]


def test_generic_without_recognisable_columns_says_which(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("who,what\na,b\n")
    with pytest.raises(ConfigError, match=r"user and the item ids.*'who', 'what'"):
        load_dataset(path)


def test_empty_file_without_columns_says_empty(tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_text("\n")
    with pytest.raises(DataError, match="file is empty"):
        load_dataset(path)
