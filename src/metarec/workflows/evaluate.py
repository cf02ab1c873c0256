"""Evaluate a saved checkpoint on a dataset's leave-one-out test users (full ranking)."""

from __future__ import annotations

from pathlib import Path

from metarec.data.loaders.registry import load_dataset, resolve_dataset
from metarec.data.splits import leave_one_out
from metarec.errors import CheckpointError, DataError
from metarec.evaluation.next_item import evaluate_next_item
from metarec.evaluation.report import ResultRow, format_table, write_metrics_json, write_report_md
from metarec.training.checkpoint import load_checkpoint
from metarec.training.pretrain import fit_popularity, prepare_next_item

METRICS = ["HR@10", "NDCG@10", "MRR@10"]


def _recorded_dataset(meta: dict) -> str | None:
    """The dataset a checkpoint was trained on: its name if resolvable, else its source path."""
    name, source = meta.get("dataset"), meta.get("dataset_source")
    try:
        resolve_dataset(name)
        return name
    except DataError:
        if source and Path(source).exists():
            return source
        raise DataError(
            f"the dataset this checkpoint was trained on ({name}, {source}) is not available "
            "here; pass --data"
        ) from None


def evaluate_checkpoint(path: Path, data: str | None = None, out: Path | None = None) -> dict:
    """Test metrics of the checkpoint and of popularity on the same split."""
    ckpt = load_checkpoint(path)
    dataset = load_dataset(data or _recorded_dataset(ckpt.meta))
    if dataset.items.ids != ckpt.items or dataset.users != ckpt.users:
        raise CheckpointError(
            f"checkpoint {path} was trained on another catalogue or user set than "
            f"{dataset.name} ({len(ckpt.items)} vs {dataset.n_items} items, "
            f"{len(ckpt.users)} vs {dataset.n_users} users)"
        )
    max_len = getattr(ckpt.model.config, "max_len", 50)
    nid = prepare_next_item(leave_one_out(dataset), dataset.n_users, dataset.n_items, max_len)
    rows = [
        ResultRow(
            ckpt.model_type,
            {"checkpoint": str(path)},
            evaluate_next_item(ckpt.model, nid.test, nid.n_items),
        ),
        ResultRow(
            "popularity",
            {"checkpoint": "-"},
            evaluate_next_item(fit_popularity(nid), nid.test, nid.n_items),
        ),
    ]
    rows = [ResultRow(r.method, r.setting, {m: r.metrics[m] for m in METRICS}) for r in rows]
    result = {"results": rows, "table": format_table(rows, METRICS), "report": None}
    if out is not None:
        write_metrics_json(out, "evaluate-loo", dataset.name, rows, [0])
        intro = f"Checkpoint {path} on {dataset.name}, leave-one-out test users, full ranking."
        result["report"] = write_report_md(out, "metarec evaluate", intro, rows)
    return result
