"""One warm-ml SeqRec training run under given settings; prints one JSON line.

Used to choose warm-ml's training settings (batch size, learning rate, schedule, text adaptor):
run it once per setting and seed, in parallel with ``OMP_NUM_THREADS=1``, and compare the lines.
It trains only SeqRec (no baselines); the benchmark itself is ``metarec bench warm-ml``.

    OMP_NUM_THREADS=1 python bench/sweeps/warm_ml_settings.py --repr id --batch 8 --lr 2e-3 \
        --seed 1 --tag id-b8 >> sweep.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from metarec.data.loaders.registry import load_dataset
from metarec.data.splits import leave_one_out
from metarec.training.loop import TrainConfig
from metarec.training.pretrain import prepare_next_item
from metarec.workflows.pretrain import ModelSpec, item_text_features, pretrain_seqrec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="dataset name or path (default: bundled)")
    p.add_argument("--repr", default="id", help="id | text | hybrid")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wd", type=float, default=0.01)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--schedule", default="constant", help="constant | cosine | linear")
    p.add_argument("--warmup", type=int, default=0, help="warm-up steps")
    p.add_argument("--extra", default="{}", help='other ModelSpec fields as JSON: {"dim": 32}')
    p.add_argument("--tag", default="")
    a = p.parse_args()

    ds = load_dataset(a.data)
    spec = replace(ModelSpec(), item_repr=a.repr, dropout=a.dropout, **json.loads(a.extra))
    data = prepare_next_item(leave_one_out(ds), ds.n_users, ds.n_items, spec.max_len)
    text = item_text_features(ds, spec, False)  # no text work for an id-only model
    cfg = TrainConfig(
        batch_size=a.batch, lr=a.lr, max_epochs=a.epochs, patience=a.patience, seed=a.seed,
        weight_decay=a.wd, progress=False, schedule=a.schedule, warmup_steps=a.warmup,
    )  # fmt: skip
    start = time.time()
    res = pretrain_seqrec(ds, data, spec, cfg, text=text)
    cost = res.state.cost()
    line = {
        "tag": a.tag,
        "args": vars(a),
        "test_ndcg": res.test["NDCG@10"],
        "test_hr": res.test["HR@10"],
        "valid": res.valid["NDCG@10"],
        **cost,
        "s_per_epoch": cost["train_seconds"] / max(cost["epochs"], 1),
        "curve": [round(v, 4) for _, v in res.state.curve],
        "wall": time.time() - start,
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
