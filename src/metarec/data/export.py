"""Export a split for other libraries: RecBole's atomic benchmark files (UniSRec layout).

``export_recbole`` writes ``NAME.train.inter``, ``NAME.valid.inter`` and ``NAME.test.inter`` with
the columns ``user_id:token  item_id_list:token_seq  item_id:token`` (the layout of
../shared/data/amazon-scientific): one row per target, its history the user's earlier items
(the last ``max_len``), raw ids as tokens. Train rows are every next item inside the user's train
part; the valid row predicts the valid item from the train part; the test row predicts the test
item from train + valid, exactly as metarec's next-item evaluation sees them. RecBole reads them
with ``benchmark_filename: [train, valid, test]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metarec.data.schema import Dataset, Interactions
from metarec.data.sequences import user_sequences
from metarec.data.splits import Split
from metarec.errors import DataError

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def export_recbole(
    ds: Dataset, split: Split, out: str | Path, name: str, max_len: int = 50
) -> dict[str, int]:
    """Write the three files to ``out``; returns rows per file."""
    if any(c in name for c in "/\\. ") or not name:
        raise DataError(f"export name {name!r} must be a plain word (it prefixes the file names)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    users, items = ds.users, ds.items.ids
    if any(" " in i or "\t" in i for i in items) or any(" " in u or "\t" in u for u in users):
        raise DataError("ids containing spaces or tabs cannot be written as RecBole tokens")
    n = ds.n_users
    indptr, seq = user_sequences(split.train, n)
    counts = {}
    rows = []
    for u in range(n):
        s = seq[indptr[u] : indptr[u + 1]]
        rows += [(u, s[max(0, t - max_len) : t], s[t]) for t in range(1, len(s))]
    counts["train"] = _write(out / f"{name}.train.inter", rows, users, items)
    valid_hist = _by_user(split.valid, n)
    rows = [(u, seq[indptr[u] : indptr[u + 1]][-max_len:], t) for u, t in valid_hist.items()]
    counts["valid"] = _write(out / f"{name}.valid.inter", rows, users, items)
    rows = []
    for u, target in _by_user(split.test, n).items():
        history = seq[indptr[u] : indptr[u + 1]]
        if u in valid_hist:
            history = np.append(history, valid_hist[u])
        rows.append((u, history[-max_len:], target))
    counts["test"] = _write(out / f"{name}.test.inter", rows, users, items)
    return counts


def _by_user(inter: Interactions, n_users: int) -> dict[int, int]:
    if len(np.unique(inter.user)) != len(inter.user):
        raise DataError("the split holds more than one valid or test row for a user")
    return {int(u): int(i) for u, i in zip(inter.user, inter.item, strict=True)}


def _write(path: Path, rows, users: list[str], items: list[str]) -> int:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(HEADER)
        for u, history, target in rows:
            if len(history) == 0:
                continue
            f.write(f"{users[u]}\t{' '.join(items[i] for i in history)}\t{items[target]}\n")
    tmp.replace(path)
    return sum(1 for _, h, _ in rows if len(h))
