"""Full-ranking next-item evaluation: exclusion of the whole history, never of the target."""

from __future__ import annotations

import numpy as np
import torch

from metarec.data.schema import Interactions
from metarec.evaluation.next_item import build_eval_set, evaluate_next_item, rank_targets
from metarec.models import SeqBatch


def _inter(rows):
    u, i, t = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    return Interactions(user=u, item=i, timestamp=t)


class FixedScores(torch.nn.Module):
    """Scores item j as -j for everyone: item 0 ranks first."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def score(self, batch: SeqBatch, items=None) -> torch.Tensor:
        return -torch.arange(self.n, dtype=torch.float32).expand(len(batch.users), -1)


def test_history_is_excluded_but_not_the_target():
    # user 0 saw items 0, 1, 2 (history window of 2 keeps only 1, 2); target 3
    # user 1 saw 4 and 0 before; target 0 again (a repeat must stay rankable)
    history = _inter([(0, 0, 1), (0, 1, 2), (0, 2, 3), (1, 4, 1), (1, 0, 2)])
    targets = _inter([(0, 3, 9), (1, 0, 9)])
    es = build_eval_set(history, targets, n_users=2, max_len=2)
    assert es.histories.tolist() == [[1, 2], [4, 0]]
    ranks = rank_targets(FixedScores(6).score, es, n_items=6)
    # user 0: 0, 1, 2 excluded from the whole history, so item 3 is first
    # user 1: item 0 is the target, so it is not excluded and ranks first
    assert ranks.tolist() == [0, 0]
    metrics = evaluate_next_item(FixedScores(6), es, n_items=6)
    assert metrics["NDCG@10"] == 1.0 and metrics["HR@10"] == 1.0


def test_ranks_count_unexcluded_items_above():
    history = _inter([(0, 1, 1)])
    targets = _inter([(0, 5, 2)])
    es = build_eval_set(history, targets, n_users=1, max_len=3)
    # items 0, 2, 3, 4 score above 5 (1 is excluded) -> rank 4
    assert rank_targets(FixedScores(8).score, es, n_items=8).tolist() == [4]
    m = evaluate_next_item(FixedScores(8), es, n_items=8)
    assert abs(m["NDCG@10"] - 1 / np.log2(6)) < 1e-6
    assert abs(m["MRR@10"] - 1 / 5) < 1e-6


def test_test_history_includes_the_validation_item():
    from metarec.data.schema import Dataset, ItemCatalog
    from metarec.data.splits import leave_one_out
    from metarec.training.pretrain import prepare_next_item

    inter = _inter([(0, 4, 1), (0, 2, 2), (0, 7, 3), (0, 1, 4), (1, 3, 1), (1, 5, 2), (1, 6, 3)])
    items = ItemCatalog([str(i) for i in range(8)], [""] * 8)
    ds = Dataset("t", inter.sort_by_user_time(), ["a", "b"], items)
    data = prepare_next_item(leave_one_out(ds), 2, 8, max_len=3)
    assert data.valid.targets.tolist() == [7, 5]
    assert data.valid.histories.tolist() == [[-1, 4, 2], [-1, -1, 3]]
    assert data.test.targets.tolist() == [1, 6]
    assert data.test.histories.tolist() == [[4, 2, 7], [-1, 3, 5]]
    assert data.test.seen_items.tolist() == [4, 2, 7, 3, 5]


def test_a_stack_of_scorings_ranks_each_like_its_own_pass():
    history = _inter([(0, 1, 1), (1, 4, 1), (1, 0, 2), (2, 3, 1)])
    targets = _inter([(0, 5, 9), (1, 0, 9), (2, 2, 9)])
    es = build_eval_set(history, targets, n_users=3, max_len=3)
    up = FixedScores(8).score

    def down(batch):
        return -up(batch)

    def both(batch):
        return torch.stack([up(batch), down(batch)])

    stacked = rank_targets(both, es, n_items=8, batch_size=2)  # rows split over two batches
    assert stacked.shape == (2, 3)
    assert stacked[0].tolist() == rank_targets(up, es, n_items=8).tolist() == [4, 0, 2]
    assert stacked[1].tolist() == rank_targets(down, es, n_items=8).tolist() == [2, 6, 4]
