"""Pretraining on behaviour sequences: next-item prediction over a leave-one-out style split.

``prepare_next_item`` turns a split into training windows and evaluation sets once; the
``train_*`` functions fit SeqRec, BPR and popularity on it with the shared loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metarec.data.schema import Interactions
from metarec.data.splits import Split, user_sequences
from metarec.data.windows import training_windows, trim_padding
from metarec.evaluation.next_item import EvalSet, build_eval_set, evaluate_next_item
from metarec.models import BPR, PAD, BPRConfig, PairBatch, Popularity, SeqBatch, SeqRec
from metarec.training.distributed import Shard, shard_rows
from metarec.training.loop import TrainConfig, TrainState, fit

SELECT_METRIC = "NDCG@10"


@dataclass(frozen=True, eq=False)
class NextItemData:
    """Everything a next-item run needs, computed once from a split."""

    n_users: int
    n_items: int
    max_len: int
    train: Interactions
    window_users: np.ndarray  # (W,)
    window_inputs: np.ndarray  # (W, L)
    window_targets: np.ndarray  # (W, L)
    valid: EvalSet
    test: EvalSet


def prepare_next_item(split: Split, n_users: int, n_items: int, max_len: int = 50) -> NextItemData:
    indptr, items = user_sequences(split.train, n_users)
    users, inputs, targets = training_windows(indptr, items, max_len)
    return NextItemData(
        n_users=n_users,
        n_items=n_items,
        max_len=max_len,
        train=split.train,
        window_users=users,
        window_inputs=inputs,
        window_targets=targets,
        valid=build_eval_set(split.train, split.valid, n_users, max_len),
        test=build_eval_set(split.train.concat(split.valid), split.test, n_users, max_len),
    )


def seqrec_batches(data: NextItemData, batch_size: int, n_negatives: int = 0, shared: bool = False):
    """Batch factory for ``fit``: shuffled windows, with uniform negatives when asked:
    ``n_negatives`` per position, or with ``shared`` one set of distinct items per batch."""

    def make(epoch: int, rng: np.random.Generator):
        order = rng.permutation(len(data.window_users))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            inputs, targets = trim_padding(data.window_inputs[idx], data.window_targets[idx])
            negatives = None
            if n_negatives and shared:
                k = min(n_negatives, data.n_items)
                negatives = torch.from_numpy(rng.choice(data.n_items, k, replace=False))
            elif n_negatives:
                shape = (*targets.shape, n_negatives)
                negatives = torch.from_numpy(rng.integers(0, data.n_items, shape))
            yield SeqBatch(
                users=torch.from_numpy(data.window_users[idx]),
                items=torch.from_numpy(inputs),
                targets=torch.from_numpy(targets),
                negatives=negatives,
            )

    return make


def split_seq_batch(batch: SeqBatch, rank: int, world: int) -> Shard:
    """Rank ``rank``'s block of a global SeqBatch's rows (shared ``(S,)`` negatives stay whole).

    SeqRec's loss is a mean over the positions with a target, and blocks hold different numbers
    of them, so the shard's scale is ``world * its positions / the batch's``: DDP's average of
    the ranks' gradients is then the gradient of the mean over the whole global batch."""
    rows, used = shard_rows(len(batch.users), rank, world)
    negatives = batch.negatives
    if negatives is not None and negatives.dim() > 1:
        negatives = negatives[rows]
    part = SeqBatch(batch.users[rows], batch.items[rows], batch.targets[rows], negatives)
    here = int((part.targets != PAD).sum()) if used else 0
    return Shard(part, world * here / max(int((batch.targets != PAD).sum()), 1))


def bpr_batches(data: NextItemData, batch_size: int):
    users, items = data.train.user.astype(np.int64), data.train.item.astype(np.int64)

    def make(epoch: int, rng: np.random.Generator):
        order = rng.permutation(len(users))
        negatives = rng.integers(0, data.n_items, len(users))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield PairBatch(
                torch.from_numpy(users[idx]),
                torch.from_numpy(items[idx]),
                torch.from_numpy(negatives[start : start + batch_size]),
            )

    return make


def validator(data: NextItemData):
    return lambda model: evaluate_next_item(model, data.valid, data.n_items)[SELECT_METRIC]


def train_seqrec(
    model: SeqRec, data: NextItemData, config: TrainConfig, **fit_kwargs
) -> tuple[TrainState, dict[str, torch.Tensor]]:
    loss = model.config.loss
    n_neg = model.config.n_negatives if loss in ("bce", "sampled") else 0
    batches = seqrec_batches(data, config.batch_size, n_neg, shared=loss == "sampled")
    return fit(model, batches, validator(data), config, split=split_seq_batch, **fit_kwargs)


def train_bpr(
    data: NextItemData, config: TrainConfig, dim: int = 64, **fit_kwargs
) -> tuple[BPR, TrainState]:
    model = BPR(BPRConfig(data.n_users, data.n_items, dim))
    state, best = fit(
        model, bpr_batches(data, config.batch_size), validator(data), config, **fit_kwargs
    )
    model.load_state_dict(best)
    return model, state


def fit_popularity(data: NextItemData) -> Popularity:
    return Popularity.fit(torch.from_numpy(data.train.item.astype(np.int64)), data.n_items)


__all__ = [
    "PAD",
    "NextItemData",
    "fit_popularity",
    "prepare_next_item",
    "split_seq_batch",
    "train_bpr",
    "train_seqrec",
]
