"""Fuse a trained SeqRec with the raw text similarity of the last item, at a validated weight.

On catalogues where the next item often reads like the last one (Amazon products), the
untrained cosine between their text embeddings is a strong ranker, and a model trained on few
users moves away from it faster than it learns something better. A model built with
``text_fusion`` scores ``user . item + w * cos(text(last item), text(item))``; ``w`` is not
learned by gradient (the training loss, fitted on the training sequences, has little reason to
lean on a prior that helps only on unseen ones) but picked on validation rows from a grid of
weights, after training: the one with the best NDCG@10, 0 included, so fusion is never chosen
where it does not help on validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from metarec.evaluation.metrics import metrics_from_ranks
from metarec.evaluation.next_item import EvalSet, model_device, rank_targets
from metarec.models.batch import SeqBatch
from metarec.models.seqrec import SeqRec

# cosines lie in [-1, 1] and SeqRec logits spread over a few units to tens: weights from "off"
# to "the text similarity decides", doubling
FUSION_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
FUSION_METRIC = "NDCG@10"
_ROWS_PER_PASS = 1024  # validation rows x weights scored at once: (weights, rows, items) floats


@dataclass(frozen=True)
class FusionFit:
    weight: float  # the chosen weight, now in the model
    valid: dict[float, float]  # validation NDCG@10 at every weight tried
    # every validation metric (HR, NDCG, MRR, Recall @10) at the chosen weight
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"weight": self.weight, "valid": {str(w): v for w, v in self.valid.items()}}


@torch.no_grad()
def fit_text_fusion(
    model: SeqRec, valid: EvalSet, n_items: int, weights: tuple[float, ...] = FUSION_WEIGHTS
) -> FusionFit:
    """Set ``model``'s text-fusion weight to the one of ``weights`` with the best validation
    NDCG@10 on ``valid`` (the smallest among ties) and return it with every weight's figure.
    One pass over the rows: the model's own scores and the text similarity are computed once
    and combined at every weight.

    ValueError when the model was not built with ``text_fusion`` or ``weights`` is empty or
    holds a negative weight."""
    if not model.config.text_fusion:
        raise ValueError(
            "this model has no text-fusion weight: build it with text_fusion=True "
            "(or models.seqrec.add_text_fusion)"
        )
    if not weights or any(not w >= 0 for w in weights):
        raise ValueError(f"fusion weights must be a non-empty set of values >= 0, got {weights}")
    grid = sorted(set(float(w) for w in weights))
    device = model_device(model)
    scale = torch.tensor(grid, device=device)[:, None, None]  # (G, 1, 1)

    def fused(batch: SeqBatch) -> torch.Tensor:  # (G, B, N)
        return model.score(batch) + scale * model.last_item_text_similarity(batch)

    was_training = model.training
    model.eval()
    model.text_fusion_weight.zero_()  # score() gives the model's own scores
    try:
        rows = max(1, _ROWS_PER_PASS // len(grid))
        ranks = torch.from_numpy(rank_targets(fused, valid, n_items, rows, device))  # (G, E)
    finally:
        model.train(was_training)
    per_weight = [
        {name: float(v.float().mean()) for name, v in metrics_from_ranks(r).items()} for r in ranks
    ]
    figures = {w: m[FUSION_METRIC] for w, m in zip(grid, per_weight, strict=True)}
    best = max(figures, key=lambda w: (figures[w], -w))
    model.text_fusion_weight.fill_(best)
    return FusionFit(best, figures, per_weight[grid.index(best)])
