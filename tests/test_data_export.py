"""RecBole export: the exact leave-one-out split, as rows of history -> target."""

from __future__ import annotations

from metarec.data.loaders.registry import load_dataset
from test_cli import run_cli


def _read(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id_list:token_seq\titem_id:token"
    return [(u, h.split(" "), t) for u, h, t in (line.split("\t") for line in lines[1:])]


def test_recbole_export_is_the_leave_one_out_split(tmp_path, monkeypatch, capsys):
    csv = tmp_path / "inter.csv"
    rows = ["user_id,item_id,timestamp"]
    sequences = {"a": ["i1", "i2", "i3", "i4", "i5"], "b": ["i3", "i1", "i6"], "c": ["i2", "i9"]}
    for user, items in sequences.items():
        rows += [f"{user},{item},{t}" for t, item in enumerate(items)]
    csv.write_text("\n".join(rows) + "\n")
    args = ["data", "export", "--data", str(csv), "--out", str(tmp_path / "out"), "--name", "toy"]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--max-len", "3")
    assert code == 0, err
    assert "train 2 rows, valid 2 rows, test 3 rows" in out
    train = _read(tmp_path / "out" / "toy.train.inter")
    valid = _read(tmp_path / "out" / "toy.valid.inter")
    test = _read(tmp_path / "out" / "toy.test.inter")
    assert sorted(test) == [
        ("a", ["i2", "i3", "i4"], "i5"),  # the last 3 of everything before the test item
        ("b", ["i3", "i1"], "i6"),
        ("c", ["i2"], "i9"),  # two items: train + test, no valid
    ]
    assert sorted(valid) == [("a", ["i1", "i2", "i3"], "i4"), ("b", ["i3"], "i1")]
    assert sorted(train) == [("a", ["i1"], "i2"), ("a", ["i1", "i2"], "i3")]
    assert not any(t in ("i4", "i5", "i6", "i9") for _, _, t in train)  # no held-out target
    code, _, err = run_cli(monkeypatch, capsys, *args, "--format", "parquet")
    assert code == 1 and "recbole" in err


def test_recbole_export_of_ml_latest_small(tmp_path):
    from metarec.data.export import export_recbole
    from metarec.data.splits import leave_one_out

    ds = load_dataset(None)
    counts = export_recbole(ds, leave_one_out(ds), tmp_path, "ml")
    assert counts["test"] == counts["valid"] == ds.n_users == 610
    assert counts["train"] == len(ds.interactions) - 2 * 610 - 610  # first item has no history
