"""Run one RecBole model on exported benchmark files with a training-time budget.

Runs inside .venv-recbole (see run.sh), never in metarec's environment. Writes OUT/MODEL.json:
HR@10, NDCG@10, MRR@10 on test (full ranking), seconds per epoch, seconds to the best validation
epoch, epochs, and whether the budget stopped it. ``--table`` prints the side-by-side table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import time
from pathlib import Path


class BudgetSpent(Exception):
    pass


def run(model_name: str, data: Path, out: Path, budget: float) -> dict:
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    sequential = model_name == "SASRec"
    params = {
        "data_path": str(data),
        "dataset": "ml_latest_small",
        "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "MAX_ITEM_LIST_LENGTH": 50,
        "eval_args": {"group_by": "user", "order": "TO", "mode": "full"},
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "epochs": 500,
        "stopping_step": 10,
        "train_batch_size": 256 if sequential else 1024,
        "eval_batch_size": 4096,
        "checkpoint_dir": str(out / "saved"),
        "device": "cpu",
        "use_gpu": False,
        "show_progress": False,
        "seed": 0,
    }
    if sequential:
        params.update({"loss_type": "CE", "train_neg_sample_args": None})
    config = Config(model=model_name, config_dict=params)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train.dataset).to(config["device"])
    trainer = Trainer(config, model)

    start = time.perf_counter()
    marks = {"epochs": 0, "best": None, "best_at": 0.0, "stopped_by_budget": False}
    train_epoch = trainer._train_epoch

    def timed_epoch(*args, **kwargs):
        # called at the start of each epoch: the previous validation has been judged by now
        if trainer.best_valid_score != marks["best"]:
            marks["best"], marks["best_at"] = trainer.best_valid_score, time.perf_counter() - start
        if time.perf_counter() - start > budget:
            marks["stopped_by_budget"] = True
            raise BudgetSpent
        marks["epochs"] += 1
        return train_epoch(*args, **kwargs)

    trainer._train_epoch = timed_epoch
    with contextlib.suppress(BudgetSpent):
        trainer.fit(train, valid, saved=True, show_progress=False)
    seconds = time.perf_counter() - start
    if trainer.best_valid_score != marks["best"]:
        marks["best_at"] = seconds
    result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    row = {
        "method": f"recbole-{model_name.lower()}",
        "HR@10": float(result["hit@10"]),
        "NDCG@10": float(result["ndcg@10"]),
        "MRR@10": float(result["mrr@10"]),
        "epochs": marks["epochs"],
        "train_seconds": seconds,
        "seconds_per_epoch": seconds / max(1, marks["epochs"]),
        "seconds_to_best": marks["best_at"],
        "stopped_by_budget": marks["stopped_by_budget"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    (out / f"{model_name}.json").write_text(json.dumps(row, indent=2))
    return row


def table(out: Path, metarec_json: Path) -> str:
    rows = []
    if metarec_json.is_file():
        doc = json.loads(metarec_json.read_text())
        for r in doc["results"]:
            mean = lambda v: v["mean"] if isinstance(v, dict) else v  # noqa: E731
            epochs = r["cost"].get("epochs")
            per_epoch = r["cost"]["train_seconds"] / epochs if epochs else None
            rows.append(
                {
                    "method": f"metarec {r['method']}",
                    **{k: mean(r["metrics"][k]) for k in ("HR@10", "NDCG@10", "MRR@10")},
                    "seconds_per_epoch": per_epoch,
                    "seconds_to_best": r["cost"].get("seconds_to_best"),
                    "peak_rss_mb": r["cost"].get("peak_rss_mb"),
                }
            )
    for name in ("BPR", "SASRec"):
        path = out / f"{name}.json"
        if path.is_file():
            rows.append(json.loads(path.read_text()))
    cols = ("HR@10", "NDCG@10", "MRR@10", "seconds_per_epoch", "seconds_to_best", "peak_rss_mb")
    fmt = lambda v: "-" if v is None else (f"{v:.4f}" if v < 1 else f"{v:.1f}")  # noqa: E731
    lines = ["| method | " + " | ".join(cols) + " |", "|---" + "|---:" * len(cols) + "|"]
    for r in rows:
        lines.append("| " + r["method"] + " | " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", choices=["BPR", "SASRec"])
    p.add_argument("--data", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget", type=float, default=1800.0)
    p.add_argument("--table", action="store_true")
    p.add_argument("--metarec", type=Path, default=Path("-"))
    args = p.parse_args()
    if args.table:
        text = table(args.out, args.metarec)
        (args.out / "table.md").write_text(text + "\n")
        print(text)
        return
    print(json.dumps(run(args.model, args.data, args.out, args.budget), indent=2))


if __name__ == "__main__":
    main()
