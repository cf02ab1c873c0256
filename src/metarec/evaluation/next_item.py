"""Full-catalogue next-item evaluation: one target per user, every earlier item excluded.

The ranking is over the whole catalogue; every item the user interacted with before the target
(the whole history, not only the model's input window) is excluded; the target never is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from metarec.data.schema import Interactions
from metarec.data.splits import user_sequences
from metarec.data.windows import history_windows, trim_padding
from metarec.errors import DataError
from metarec.evaluation.metrics import metrics_from_ranks, target_ranks
from metarec.models.batch import SeqBatch


@dataclass(frozen=True, eq=False)
class EvalSet:
    """users (E,), histories (E, L) model input windows, targets (E,), and the CSR of each
    row's whole history (``seen_indptr`` (E + 1,), ``seen_items``) for exclusion."""

    users: np.ndarray
    histories: np.ndarray
    targets: np.ndarray
    seen_indptr: np.ndarray
    seen_items: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


def build_eval_set(
    history: Interactions, targets: Interactions, n_users: int, max_len: int
) -> EvalSet:
    """Pair each target interaction with everything its user did in ``history``."""
    users = np.asarray(targets.user, dtype=np.int64)
    if len(np.unique(users)) != len(users):
        raise DataError("next-item evaluation takes at most one target interaction per user")
    indptr, items = user_sequences(history, n_users)
    lengths = indptr[users + 1] - indptr[users]
    seen_indptr = np.concatenate([[0], np.cumsum(lengths)])
    seen_pos = np.repeat(indptr[users], lengths) + (
        np.arange(lengths.sum()) - np.repeat(seen_indptr[:-1], lengths)
    )
    return EvalSet(
        users=users,
        histories=history_windows(indptr, items, users, max_len),
        targets=np.asarray(targets.item, dtype=np.int64),
        seen_indptr=seen_indptr,
        seen_items=items[seen_pos],
    )


def concat_eval_sets(sets: list[EvalSet]) -> EvalSet:
    """The rows of several eval sets as one (a user may then have several target rows, each
    with its own history and exclusions: e.g. the j-th next items of every user, j = 0, 1, ...)."""
    if not sets:
        raise DataError("no eval set to concatenate")
    lengths = np.concatenate([np.diff(es.seen_indptr) for es in sets])
    return EvalSet(
        users=np.concatenate([es.users for es in sets]),
        histories=np.concatenate([es.histories for es in sets]),
        targets=np.concatenate([es.targets for es in sets]),
        seen_indptr=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        seen_items=np.concatenate([es.seen_items for es in sets]),
    )


Scorer = Callable[[SeqBatch], torch.Tensor]  # (B,) users + (B, L) histories -> (B, N) scores


def _exclude_mask(es: EvalSet, rows: slice, n_items: int) -> torch.Tensor:
    lo, hi = es.seen_indptr[rows.start], es.seen_indptr[rows.stop]
    counts = np.diff(es.seen_indptr[rows.start : rows.stop + 1])
    row_idx = np.repeat(np.arange(rows.stop - rows.start), counts)
    mask = torch.zeros(rows.stop - rows.start, n_items, dtype=torch.bool)
    mask[torch.from_numpy(row_idx), torch.from_numpy(es.seen_items[lo:hi])] = True
    return mask


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.inference_mode()
def rank_targets(
    score: Scorer,
    es: EvalSet,
    n_items: int,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(E,) 0-based rank of every target over the full catalogue minus the user's history; (G, E)
    when ``score`` returns a (G, B, N) stack of G scorings of the same rows (each row's history
    mask and target are then built once for all G)."""
    ranks = []
    for start in range(0, len(es), batch_size):
        rows = slice(start, min(start + batch_size, len(es)))
        histories, _ = trim_padding(es.histories[rows])
        batch = SeqBatch(
            users=torch.from_numpy(es.users[rows]), items=torch.from_numpy(histories)
        ).to(device)
        scores = score(batch)  # (B, N) or (G, B, N)
        exclude = _exclude_mask(es, rows, n_items).to(device)
        targets = torch.from_numpy(es.targets[rows]).to(device)
        if scores.dim() == 3:
            ranks.append(torch.stack([target_ranks(s, targets, exclude) for s in scores]).cpu())
        else:
            ranks.append(target_ranks(scores, targets, exclude).cpu())
    return torch.cat(ranks, dim=-1).numpy() if ranks else np.zeros(0, dtype=np.int64)


def evaluate_next_item(
    model: torch.nn.Module, es: EvalSet, n_items: int, ks: tuple[int, ...] = (10,)
) -> dict[str, float]:
    """Mean HR/NDCG/MRR/Recall@k of ``model.score`` on ``es``; restores the model's train mode."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_scorer(model.score, es, n_items, ks, device=model_device(model))
    finally:
        model.train(was_training)


def evaluate_scorer(
    score: Scorer,
    es: EvalSet,
    n_items: int,
    ks: tuple[int, ...] = (10,),
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Mean HR/NDCG/MRR/Recall@k of any scorer (a model's ``score`` or a heuristic) on ``es``."""
    ranks = rank_targets(score, es, n_items, device=device)
    per_row = metrics_from_ranks(torch.from_numpy(ranks), ks=ks)
    return {name: float(v.float().mean()) for name, v in per_row.items()}
