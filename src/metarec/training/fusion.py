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

from dataclasses import dataclass

import torch

from metarec.evaluation.next_item import EvalSet, evaluate_next_item
from metarec.models.seqrec import SeqRec

# cosines lie in [-1, 1] and SeqRec logits spread over a few units to tens: weights from "off"
# to "the text similarity decides", doubling
FUSION_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
FUSION_METRIC = "NDCG@10"


@dataclass(frozen=True)
class FusionFit:
    weight: float  # the chosen weight, now in the model
    valid: dict[float, float]  # validation NDCG@10 at every weight tried

    def to_dict(self) -> dict:
        return {"weight": self.weight, "valid": {str(w): v for w, v in self.valid.items()}}


@torch.no_grad()
def fit_text_fusion(
    model: SeqRec, valid: EvalSet, n_items: int, weights: tuple[float, ...] = FUSION_WEIGHTS
) -> FusionFit:
    """Set ``model``'s text-fusion weight to the one of ``weights`` with the best validation
    NDCG@10 on ``valid`` (the smallest among ties) and return it with every weight's figure.

    ValueError when the model was not built with ``text_fusion`` or ``weights`` is empty or
    holds a negative weight."""
    if not model.config.text_fusion:
        raise ValueError(
            "this model has no text-fusion weight: build it with text_fusion=True "
            "(or models.seqrec.add_text_fusion)"
        )
    if not weights or any(not w >= 0 for w in weights):
        raise ValueError(f"fusion weights must be a non-empty set of values >= 0, got {weights}")
    figures: dict[float, float] = {}
    for w in sorted(set(float(w) for w in weights)):
        model.text_fusion_weight.fill_(w)
        figures[w] = evaluate_next_item(model, valid, n_items)[FUSION_METRIC]
    best = max(figures, key=lambda w: (figures[w], -w))
    model.text_fusion_weight.fill_(best)
    return FusionFit(best, figures)
