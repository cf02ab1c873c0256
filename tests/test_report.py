"""metrics.json schema, report.md, plots and the terminal table."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

import metarec
from metarec.errors import DataError
from metarec.evaluation.report import (
    ResultRow,
    ci_metric,
    format_table,
    plot_learning_curves,
    plot_metric_bars,
    read_metrics_json,
    write_metrics_json,
    write_report_md,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _rows() -> list[ResultRow]:
    return [
        ResultRow(
            "meta-sgd",
            {"K": 5, "policy": "lora"},
            {"NDCG@10": {"mean": 0.12345, "ci95": [0.11345, 0.13345]}, "Recall@10": 0.25},
            {"train_seconds": 12.5, "adapt_ms_median": 3.25, "peak_rss_mb": 812.0},
        ),
        ResultRow("popularity", {"K": 5}, {"NDCG@10": 0.05, "Recall@10": 0.1, "AUC": 0.6}),
        ResultRow("sasrec-id", {}, {"HR@10": 0.07, "MRR@20": 0.02}, {"train_seconds": 3.0}),
    ]


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000


def test_metrics_json_round_trip(tmp_path):
    rows = _rows()
    curves = {"meta-sgd": [[1, 0.1], [2, 0.2]]}
    out = write_metrics_json(
        tmp_path / "run", "coldstart-ml", "ml-latest-small", rows, [0, 1, 2], {"curves": curves}
    )
    assert out == tmp_path / "run" / "metrics.json"
    doc = read_metrics_json(out)
    assert list(doc)[:7] == [
        "protocol",
        "dataset",
        "metarec_version",
        "created",
        "seeds",
        "machine",
        "results",
    ]
    assert doc["protocol"] == "coldstart-ml"
    assert doc["dataset"] == "ml-latest-small"
    assert doc["metarec_version"] == metarec.__version__
    assert doc["created"].endswith("Z")
    datetime.strptime(doc["created"], "%Y-%m-%dT%H:%M:%SZ")
    assert doc["seeds"] == [0, 1, 2]
    assert set(doc["machine"]) == {"cpus", "torch_threads", "device"}
    assert doc["machine"]["device"] == "cpu" and doc["machine"]["cpus"] >= 1
    assert doc["curves"] == curves
    assert [ResultRow.from_dict(r) for r in doc["results"]] == rows
    assert read_metrics_json(tmp_path / "run") == doc  # a folder works too


@pytest.mark.parametrize("name", ["SASRec", "sasrec_id", "", "-lora", "meta sgd"])
def test_bad_method_name_rejected(name):
    with pytest.raises(ValueError, match="lowercase"):
        ResultRow(name, {}, {"NDCG@10": 0.1}, {})


@pytest.mark.parametrize("name", ["ndcg@10", "NDCG@0", "Precision", "NDCG10"])
def test_bad_metric_name_rejected(name):
    with pytest.raises(ValueError, match="unknown metric name"):
        ResultRow("lora", {}, {name: 0.1}, {})


@pytest.mark.parametrize(
    "value", [float("nan"), "0.1", {"mean": 0.1}, {"mean": 0.1, "ci95": [0.0]}, True]
)
def test_bad_metric_value_rejected(value):
    with pytest.raises(ValueError, match="NDCG@10"):
        ResultRow("lora", {}, {"NDCG@10": value}, {})


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="overwrite"):
        write_metrics_json(tmp_path, "warm-ml", "x", _rows(), [0], {"seeds": [1]})
    with pytest.raises(ValueError, match="protocol"):
        write_metrics_json(tmp_path, "Warm ML", "x", _rows(), [0])
    twice = [ResultRow("lora", {"K": 1}), ResultRow("lora", {"K": 1})]
    with pytest.raises(ValueError, match="same"):
        write_metrics_json(tmp_path, "warm-ml", "x", twice, [0])
    row = _rows()[0]
    row.method = "Meta-SGD"  # mutated after construction: caught on write
    with pytest.raises(ValueError, match="Meta-SGD"):
        write_metrics_json(tmp_path, "warm-ml", "x", [row], [0])
    assert not (tmp_path / "metrics.json").exists()


def _write_then_edit(tmp_path: Path, edit) -> Path:
    path = write_metrics_json(tmp_path, "warm-ml", "ml-latest-small", _rows(), [0])
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("seeds"), "missing key 'seeds'"),
        (lambda d: d["machine"].pop("device"), "missing key 'machine.device'"),
        (lambda d: d["results"][1].pop("cost"), r"results\[1\]: missing key 'cost'"),
        (lambda d: d["results"][0].update(method="MAML"), "MAML"),
        (lambda d: d["results"][2]["metrics"].update(hr=1), "unknown metric name 'hr'"),
    ],
)
def test_read_reports_what_is_wrong(tmp_path, edit, message):
    path = _write_then_edit(tmp_path, edit)
    with pytest.raises(DataError, match=message) as info:
        read_metrics_json(path)
    assert str(path) in str(info.value)


def test_read_missing_or_broken_file(tmp_path):
    with pytest.raises(DataError, match="no such metrics file"):
        read_metrics_json(tmp_path / "nope.json")
    bad = tmp_path / "metrics.json"
    bad.write_text('{"protocol": ')
    with pytest.raises(DataError, match="not valid JSON"):
        read_metrics_json(bad)


def test_ci_metric():
    m = ci_metric([0.1, 0.2, 0.3])
    assert m["mean"] == pytest.approx(0.2)
    lo, hi = m["ci95"]
    assert lo < 0.2 < hi and hi - 0.2 == pytest.approx(0.2 - lo)
    ResultRow("lora", {}, {"NDCG@10": m})  # valid as a metric value


def test_report_md_holds_table_plots_and_notes(tmp_path):
    out_dir = tmp_path / "run"
    plot = plot_metric_bars(_rows(), "NDCG@10", out_dir / "plots" / "ndcg.png")
    report = write_report_md(
        out_dir,
        "coldstart-ml",
        "Cold-start users, K-shot.",
        _rows(),
        plots=[("NDCG@10 by method", plot)],
        notes=["quick mode: not a reported figure"],
    )
    text = report.read_text()
    assert text.startswith("# coldstart-ml\n")
    assert "Cold-start users, K-shot." in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == [
        "method",
        *("K", "policy"),
        *("HR@10", "Recall@10", "NDCG@10", "AUC", "MRR@20"),
        *("train_seconds", "adapt_ms_median", "peak_rss_mb"),
    ]
    row = next(line for line in lines if line.startswith("| meta-sgd"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        *("meta-sgd", "5", "lora"),
        *("-", "0.2500", "0.1235 ± 0.0100", "-", "-"),
        *("12.5000", "3.2500", "812.0000"),
    ]
    assert "| sasrec-id | - | - | 0.0700 |" in text
    assert "![NDCG@10 by method](plots/ndcg.png)" in text
    assert "- quick mode: not a reported figure" in text


def test_plots_are_png_files(tmp_path):
    curves = {"meta-sgd": [(2, 0.2), (1, 0.1), (3, 0.25)], "maml": [(1, 0.05), (2, 0.15)]}
    path = plot_learning_curves(curves, tmp_path / "sub" / "curves.png")
    assert path == tmp_path / "sub" / "curves.png"
    _assert_png(path)
    _assert_png(plot_metric_bars(_rows(), "NDCG@10", tmp_path / "bars.png"))
    with pytest.raises(ValueError, match="LogLoss"):
        plot_metric_bars(_rows(), "LogLoss", tmp_path / "none.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_learning_curves({}, tmp_path / "empty.png")


def test_plots_leave_global_backend_alone(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    plot_learning_curves({"lora": [(1, 0.1)]}, tmp_path / "c.png")
    assert matplotlib.get_backend() == before


def test_format_table_aligned():
    text = format_table(_rows(), ["NDCG@10", "Recall@10"])
    lines = text.splitlines()
    assert lines[0].split() == ["method", "setting", "NDCG@10", "Recall@10"]
    assert set(lines[1]) <= {"-", " "}
    assert "meta-sgd" in lines[2] and "K=5, policy=lora" in lines[2]
    assert lines[2].endswith("0.1235 ± 0.0100     0.2500")
    assert lines[4].startswith("sasrec-id") and lines[4].endswith("-" + " " * 10 + "-")
    # Right-aligned numeric columns end at the same position on every line.
    assert len({len(line) for line in lines}) == 1
