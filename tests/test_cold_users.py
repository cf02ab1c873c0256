"""The library's one cold-user scorer (meta.cold_users), pinned against hand computations and
against meta-validation's ranking (meta.train.evaluate_tasks) on the same users."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarec.adapt.policies import PolicyConfig
from metarec.data.schema import Interactions
from metarec.meta.cold_users import ColdUser, cold_users, score_popularity, score_users
from metarec.meta.learners import LearnerSpec, build_learner, default_config
from metarec.meta.tasks import next_item_tasks
from metarec.meta.train import evaluate_tasks, rank_scores
from metarec.models import SeqRec, SeqRecConfig


def test_popularity_ndcg_of_a_hand_made_ranking():
    # counts rank items 0 > 1 > 2 > ... > 9; item 0 is the support item, so it is excluded:
    # the ranking is 1, 2, 3, ...; the positives 2 and 5 sit at ranks 2 and 5
    counts = np.arange(20, 0, -1, dtype=float)
    user = ColdUser(0, np.array([0]), np.array([2, 5]), np.array([15, 16]))
    scores = score_popularity(counts, [user])
    dcg = 1 / np.log2(2 + 1) + 1 / np.log2(5 + 1)
    ideal = 1 / np.log2(1 + 1) + 1 / np.log2(2 + 1)
    assert scores.ndcg == [pytest.approx(dcg / ideal)]
    assert scores.recall == [1.0]
    assert scores.labels[0].tolist() == [1, 1, 0, 0]
    assert scores.metrics()["AUC"] == 1.0  # positives 2, 5 are more popular than 15, 16


def test_rank_scores_excludes_and_cuts_at_k():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    ranked = rank_scores(scores, (np.array([4]),), (np.array([0]),), k=3)
    assert float(ranked["Recall@3"][0]) == 0.0  # item 4 is at rank 4 once item 0 is excluded
    ranked = rank_scores(scores, (np.array([3]),), (np.array([0]),), k=3)
    assert float(ranked["NDCG@3"][0]) == pytest.approx(1 / np.log2(3 + 1))


def _walks(n_users=8, length=14, n_items=30):
    u = np.repeat(np.arange(n_users), length)
    t = np.tile(np.arange(length), n_users)
    return Interactions(u, (3 * u + t) % n_items, t)


@pytest.mark.parametrize("algorithm", ["reptile", "maml"])
def test_cold_users_and_meta_validation_rank_alike(algorithm):
    torch.manual_seed(0)
    cfg = SeqRecConfig(n_items=30, dim=8, n_layers=1, n_heads=2, max_len=5, dropout=0.0, text_dim=4)
    model = SeqRec(cfg, torch.randn(30, 4)).eval()
    learner = build_learner(
        model, LearnerSpec(algorithm, PolicyConfig("head"), default_config(algorithm))
    )
    inter = _walks()
    users = cold_users(inter, 3, 5, 30, (0,))
    tasks = next_item_tasks(inter, 3, 5, cfg.max_len)
    for steps, adapter in ((0, None), (None, learner)):
        ours = score_users(model, adapter, users).ranking()
        theirs = evaluate_tasks(learner, tasks, steps=steps)
        for name, value in ours.items():
            assert value == pytest.approx(theirs[name], abs=1e-9), (steps, name)
