"""fewshot-like's methods by kind, read by its runner and its report alike."""

from __future__ import annotations

BASELINES = ("history-mean", "popularity", "logreg-baseline")
LEARNED = (
    "seqrec-head",
    "seqrec-head-labels-only",
    "seqrec-head-reptile",
    "cross-encoder",
    "cross-encoder-reptile",
)
CROSS_ENCODERS = ("cross-encoder", "cross-encoder-reptile")  # scored on the test subset only
METHODS = BASELINES + LEARNED
