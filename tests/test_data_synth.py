"""``metarec data synth``: K copies of the real data, disjoint, each exactly the source renamed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

import metarec
from metarec.data import Dataset, load_dataset
from metarec.data import synth as synth_module
from metarec.data.loaders import sniff_format
from metarec.data.synth import SynthConfig, check_out_folder, write_synth
from metarec.errors import ConfigError, DataError
from test_cli import run_cli

GENERIC = Path(__file__).parent / "data" / "generic" / "interactions.csv"
ML_USERS, ML_ITEMS, ML_RATINGS = 610, 9_742, 100_836
COPIES = 3


@pytest.fixture(scope="module")
def ml_small() -> Dataset:
    return load_dataset("ml-latest-small")


@pytest.fixture(scope="module")
def synth_dir(ml_small, tmp_path_factory) -> Path:
    """Three copies of ml-latest-small, three interaction files per copy (40,000 rows each)."""
    out = tmp_path_factory.mktemp("synth") / "ml3"
    write_synth(ml_small, out, SynthConfig(COPIES, rows_per_file=40_000), progress=False)
    return out


@pytest.fixture(scope="module")
def synth(synth_dir) -> Dataset:
    return load_dataset(synth_dir)


@pytest.fixture
def tiny_synth(tmp_path) -> Path:
    """Two copies of the hand-made generic file (ratings, domains): small enough to corrupt."""
    out = tmp_path / "tiny"
    source = load_dataset(GENERIC, user="user", item="item", timestamp="ts", rating="rating")
    write_synth(source, out, SynthConfig(2), progress=False)
    return out


def test_counts_are_exactly_k_times_the_source(synth, synth_dir):
    assert (synth.n_users, synth.n_items) == (COPIES * ML_USERS, COPIES * ML_ITEMS)
    assert len(synth.interactions) == COPIES * ML_RATINGS == 302_508
    manifest = json.loads((synth_dir / "synth.json").read_text())
    assert manifest["copies"] == COPIES
    assert manifest["source"] | {"path": ""} == {
        "name": "ml-latest-small",
        "path": "",
        "users": ML_USERS,
        "items": ML_ITEMS,
        "interactions": ML_RATINGS,
    }
    assert manifest["counts"] == {"users": 1_830, "items": 29_226, "interactions": 302_508}
    assert manifest["metarec_version"] == metarec.__version__
    assert set(manifest["schema"]["interactions"]) == {"user", "item", "timestamp", "rating"}
    assert synth.extra["synth"] == {"source": "ml-latest-small", "copies": COPIES}


def test_copies_share_no_user_and_no_item(synth):
    inter = synth.interactions
    copy_of_row = inter.user // ML_USERS
    assert np.array_equal(copy_of_row, inter.item // ML_ITEMS)  # a row's user and item agree
    users = [set(inter.user[copy_of_row == c].tolist()) for c in range(COPIES)]
    items = [set(inter.item[copy_of_row == c].tolist()) for c in range(COPIES)]
    for a in range(COPIES):
        for b in range(a + 1, COPIES):
            assert not users[a] & users[b] and not items[a] & items[b]
    assert len(set(synth.users)) == synth.n_users  # raw ids are distinct across copies too
    assert len(set(synth.items.ids)) == synth.n_items


def test_each_copy_is_the_source_renamed(synth, ml_small):
    src, inter = ml_small.interactions, synth.interactions
    for c in range(COPIES):
        rows = inter.user // ML_USERS == c
        assert rows.sum() == ML_RATINGS
        assert np.array_equal(inter.user[rows] - c * ML_USERS, src.user)
        assert np.array_equal(inter.item[rows] - c * ML_ITEMS, src.item)
        assert np.array_equal(inter.timestamp[rows], src.timestamp)
        assert np.array_equal(inter.rating[rows], src.rating)
        users = synth.users[c * ML_USERS : (c + 1) * ML_USERS]
        items = slice(c * ML_ITEMS, (c + 1) * ML_ITEMS)
        assert [u.removeprefix(f"c{c}:") for u in users] == ml_small.users
        assert [i.removeprefix(f"c{c}:") for i in synth.items.ids[items]] == ml_small.items.ids
        tag = f"[copy {c}] "
        assert all(t.startswith(tag) for t in synth.items.text[items])
        assert [t.removeprefix(tag) for t in synth.items.text[items]] == ml_small.items.text


def test_copy_zero_keeps_the_source_indices_and_order(synth, ml_small):
    head = slice(0, ML_RATINGS)  # copy-major: copy 0's rows come first, in the source's order
    assert np.array_equal(synth.interactions.user[head], ml_small.interactions.user)
    assert np.array_equal(synth.interactions.item[head], ml_small.interactions.item)
    assert synth.users[:2] == ["c0:1", "c0:2"] and synth.users[ML_USERS] == "c1:1"
    assert synth.items.ids[ML_ITEMS] == "c1:1"
    assert synth.items.text[ML_ITEMS] == (
        "[copy 1] Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy"
    )
    assert synth.has_time and synth.name == "ml3"


def test_layout_is_plain_hive_partitioned_parquet(synth_dir):
    files = sorted(p.name for p in (synth_dir / "interactions" / "copy=0002").iterdir())
    assert files == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert pq.read_metadata(synth_dir / "interactions/copy=0002/part-00002.parquet").num_rows == (
        ML_RATINGS - 80_000
    )
    table = pds.dataset(synth_dir / "interactions", partitioning="hive").to_table()
    assert table.num_rows == 302_508
    assert sorted(set(table.column("copy").to_pylist())) == [0, 1, 2]
    items = pds.dataset(synth_dir / "items", partitioning="hive").to_table()
    assert items.column_names == ["item", "id", "text", "copy"]
    assert sniff_format(synth_dir).name == "parquet-synth"


def test_a_generic_file_is_copied_with_its_ratings_and_times(tiny_synth):
    source = load_dataset(GENERIC, user="user", item="item", timestamp="ts", rating="rating")
    two = load_dataset(tiny_synth)
    assert len(two.interactions) == 2 * len(source.interactions) == 12
    assert two.users == ["c0:u1", "c0:u2", "c0:u3", "c1:u1", "c1:u2", "c1:u3"]
    assert two.items.ids == ["c0:i1", "c0:i2", "c0:i3", "c0:i9", "c1:i1", "c1:i2", "c1:i3", "c1:i9"]
    second = two.interactions.take(two.interactions.user >= source.n_users)
    assert np.array_equal(second.rating, source.interactions.rating)
    assert np.array_equal(second.timestamp, source.interactions.timestamp)


def test_synth_of_a_domain_and_split_file(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("user,item,label,domain,split\na,x,1,books,train\na,y,0,films,test\n")
    columns = {"user": "user", "item": "item", "label": "label", "domain": "domain"}
    source = load_dataset(path, split="split", **columns)
    write_synth(source, tmp_path / "out", SynthConfig(2), progress=False)
    two = load_dataset(tmp_path / "out")
    assert not two.has_time and two.domains == ("books", "films")
    assert two.interactions.split.tolist() == [0, 2, 0, 2]
    assert two.interactions.domain.tolist() == [0, 1, 0, 1]
    assert two.interactions.rating.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_config_and_output_folder_are_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"copies must be .* at least 1, got 0"):
        SynthConfig(0)
    with pytest.raises(ConfigError, match="rows per file"):
        SynthConfig(2, rows_per_file=0)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"not a synth folder .*notes\.txt"):
        check_out_folder(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_existing_synth_is_replaced_only_with_overwrite(tiny_synth):
    source = load_dataset(GENERIC, user="user", item="item", timestamp="ts")
    with pytest.raises(ConfigError, match=r"already holds a synth dataset.*--overwrite"):
        write_synth(source, tiny_synth, SynthConfig(3), progress=False)
    write_synth(source, tiny_synth, SynthConfig(3), overwrite=True, progress=False)
    three = load_dataset(tiny_synth)
    assert three.n_users == 9 and three.interactions.rating is None
    assert not (tiny_synth / "interactions" / "copy=0003").exists()


def test_a_crash_leaves_a_folder_that_does_not_look_complete(tmp_path, monkeypatch):
    source = load_dataset(GENERIC, user="user", item="item", timestamp="ts")
    out = tmp_path / "crashed"
    real, calls = pq.write_table, []

    def fail_on_the_fourth_file(table, where, **kwargs):
        calls.append(where)
        if len(calls) == 4:  # copy 1's interactions, half written
            Path(where).write_bytes(b"PAR1 partial")
            raise OSError("disk full")
        real(table, where, **kwargs)

    monkeypatch.setattr(synth_module.pq, "write_table", fail_on_the_fourth_file)
    with pytest.raises(OSError, match="disk full"):
        write_synth(source, out, SynthConfig(2), progress=False)
    monkeypatch.setattr(synth_module.pq, "write_table", real)
    assert not (out / "synth.json").exists()
    assert not list(out.rglob("*.tmp"))  # the half-written file was removed
    assert list((out / "interactions").rglob("*.parquet")) == [
        out / "interactions" / "copy=0000" / "part-00000.parquet"
    ]
    with pytest.raises(DataError, match="unfinished synth write"):
        load_dataset(out)
    with pytest.raises(ConfigError, match=r"unfinished synth write.*--overwrite"):
        write_synth(source, out, SynthConfig(2), progress=False)
    write_synth(source, out, SynthConfig(2), overwrite=True, progress=False)
    assert load_dataset(out).n_users == 6


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "synth.json").write_text("{not json"), "synth.json: not a readable"),
        (
            lambda d: (d / "synth.json").write_text(json.dumps({"format": "metarec-synth"})),
            "synth.json: format_version",
        ),
        (lambda d: _edit_manifest(d, copies=0), "'copies' must be at least 1"),
        (lambda d: _edit_manifest(d, copies=3), "counts.users is 6, but 3 copies of 3 make 9"),
        (
            lambda d: (d / "interactions/copy=0001/part-00000.parquet").write_bytes(b"junk"),
            "copy=0001/part-00000.parquet: not a readable Parquet file",
        ),
        (
            lambda d: _drop_column(d / "interactions/copy=0000/part-00000.parquet", "rating"),
            "copy=0000/part-00000.parquet: column 'rating' is missing",
        ),
        (
            lambda d: shutil.rmtree(d / "items/copy=0001"),
            "items: partition copy=1 is missing",
        ),
        (
            lambda d: shutil.copy(
                d / "interactions/copy=0000/part-00000.parquet",
                d / "interactions/copy=0001/part-00000.parquet",
            ),
            "row 6 of copy=1 holds user 0, outside that copy's users",
        ),
    ],
)
def test_a_damaged_folder_is_refused_with_what_is_wrong(tiny_synth, damage, message):
    damage(tiny_synth)
    with pytest.raises(DataError, match=message):
        load_dataset(tiny_synth)


def _edit_manifest(folder: Path, **changes) -> None:
    path = folder / "synth.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _drop_column(path: Path, column: str) -> None:
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([column]), path)


def test_cli_writes_a_synth_that_every_data_option_reads(monkeypatch, capsys, tmp_path):
    out = tmp_path / "s2"
    args = ("data", "synth", "--data", str(GENERIC), "--copies", "2", "--out", str(out))
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert f"wrote {out}: 2 copies of interactions, 6 users, 8 items, 12 interactions" in stdout
    code, stdout, _ = run_cli(monkeypatch, capsys, "data", "inspect", str(out))
    assert code == 0
    assert "users                    6" in stdout and "interactions             12" in stdout
    assert load_dataset(out).n_items == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "ml-latest-small", "--copies", "0"], "config error: copies must be"),
        (["--data", "no-such-dataset", "--copies", "2"], "unknown dataset 'no-such-dataset'"),
        (["--data", "ml-latest-small", "--copies", "2", "--rows-per-file", "0"], "rows per file"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(monkeypatch, capsys, tmp_path, args, message):
    out = tmp_path / "never"
    code, stdout, err = run_cli(monkeypatch, capsys, "data", "synth", *args, "--out", str(out))
    assert code == 1
    assert message in err and "Traceback" not in err + stdout
    assert not out.exists()


def test_cli_refuses_an_existing_out_without_overwrite(monkeypatch, capsys, tiny_synth, tmp_path):
    args = ("data", "synth", "--data", str(GENERIC), "--copies", "2", "--out", str(tiny_synth))
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 1 and "already holds a synth dataset" in err and "--overwrite" in err
    code, _, err = run_cli(monkeypatch, capsys, *args, "--overwrite")
    assert code == 0, err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.csv").write_text("x\n")
    code, _, err = run_cli(
        monkeypatch, capsys, "data", "synth", "--copies", "2", "--out", str(foreign), "--overwrite"
    )
    assert code == 1 and "not a synth folder" in err
    assert (foreign / "keep.csv").read_text() == "x\n"


def test_cli_names_a_corrupt_manifest(monkeypatch, capsys, tiny_synth):
    (tiny_synth / "synth.json").write_text('{"format": "metarec-synth", "format_version": 1}')
    code, _, err = run_cli(monkeypatch, capsys, "data", "inspect", str(tiny_synth))
    assert code == 1
    assert "synth.json" in err and "'copies'" in err and "Traceback" not in err
