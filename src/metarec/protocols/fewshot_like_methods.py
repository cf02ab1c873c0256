"""fewshot-like methods: one labelled draw in, AUC before and after fitting out.

Each method takes the run's shared ``RunData`` and one draw, and returns ``Fitted`` records:
AUC on the whole test set (not for the cross-encoder, which is scored on the subset only) and on
the seeded test subset the cross-encoder is scored on.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from metarec.data.schema import Dataset
from metarec.evaluation.metrics import auc
from metarec.like.cross_encoder import CrossEncoder, build_prompts, load_encoder
from metarec.like.cross_encoder_fit import (
    add_lora,
    fit_cross_encoder,
    predict_cross_encoder,
    tokenize,
)
from metarec.like.cross_encoder_meta import (
    implicit_tasks,
    load_trainable,
    meta_train_cross_encoder,
    prompt_renderer,
    trainable_state,
)
from metarec.like.fit import ItemSpace, fit_head, like_features, predict, reptile_start
from metarec.like.head import LikeFeatures, LikeHead, LikeHeadConfig
from metarec.like.samples import LikeSamples, draw_budget, with_history_targets
from metarec.models.seqrec import SeqRec


@dataclass
class RunData:
    """What every (budget, seed) of one run shares."""

    dataset: Dataset
    pool: LikeSamples  # labelled samples of the train users: budgets are drawn from here
    test: LikeSamples
    subset: np.ndarray  # indices into test: the cross-encoder's test subset
    model: SeqRec
    space: ItemSpace
    counts: np.ndarray
    test_features: LikeFeatures
    titles: list[str]
    train_users: np.ndarray  # their implicit behaviour may be read for pretraining/meta-training
    info: dict
    cache: dict = field(default_factory=dict)  # lazily built: encoder, tokenizer, test tokens


@dataclass(frozen=True)
class Fitted:
    method: str
    budget: int
    seed: int
    adapted: bool  # False: the method's start, before any fitting on the draw
    auc: float | None  # whole test set; None where not scored on it
    auc_subset: float  # the cross-encoder's test subset
    seconds: float = 0.0


def run_budget(cfg, data: RunData, budget: int, seed: int, log: Callable[[str], None]):
    """Every configured method on one draw of ``budget`` labelled train-user samples."""
    draw = draw_budget(data.pool, budget, seed)
    fits: list[Fitted] = []
    for method in cfg.methods:
        start = time.perf_counter()
        scored = METHOD_FNS[method](cfg, data, draw)  # [(adapted, scores)]
        seconds = time.perf_counter() - start
        for adapted, scores, on_subset in scored:
            fits.append(_record(data, method, budget, seed, adapted, scores, on_subset, seconds))
        after = fits[-1]
        shown = after.auc if after.auc is not None else after.auc_subset
        log(f"[n={budget} seed={seed}] {method}: AUC {shown:.4f} ({seconds:.1f} s)")
    return fits


def _record(data, method, budget, seed, adapted, scores, on_subset, seconds) -> Fitted:
    labels = data.test.label
    if on_subset:  # scores cover the subset only
        return Fitted(
            method, budget, seed, adapted, None, auc(labels[data.subset], scores), seconds
        )
    sub = auc(labels[data.subset], scores[data.subset])
    return Fitted(method, budget, seed, adapted, auc(labels, scores), sub, seconds)


def _history_mean(cfg, data: RunData, draw: LikeSamples):
    return [(True, data.test.history_mean(), False)]


def _popularity(cfg, data: RunData, draw: LikeSamples):
    return [(True, data.counts[data.test.item].astype(np.float64), False)]


def _baseline_inputs(samples: LikeSamples, counts: np.ndarray) -> np.ndarray:
    """(S, 2): history mean rating and log(1 + popularity among train users)."""
    return np.column_stack([samples.history_mean(), np.log1p(counts[samples.item])])


def _logreg(cfg, data: RunData, draw: LikeSamples):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression())
    model.fit(_baseline_inputs(draw, data.counts), draw.label)
    return [(True, model.decision_function(_baseline_inputs(data.test, data.counts)), False)]


def _head(cfg, data: RunData, samples: LikeSamples, meta: bool):
    feats = like_features(samples, data.space, data.model)
    head = LikeHead(LikeHeadConfig(feats.item.shape[1]))
    if meta:
        head = reptile_start(head, feats, cfg.reptile)
    before = predict(head, data.test_features)
    fit_head(head, feats, cfg.head)
    return [(False, before, False), (True, predict(head, data.test_features), False)]


def _seqrec_head(cfg, data: RunData, draw: LikeSamples):
    return _head(cfg, data, with_history_targets(draw, cfg.threshold), meta=False)


def _labels_only(cfg, data: RunData, draw: LikeSamples):
    return _head(cfg, data, draw, meta=False)


def _reptile(cfg, data: RunData, draw: LikeSamples):
    return _head(cfg, data, with_history_targets(draw, cfg.threshold), meta=True)


def _cross_encoder(cfg, data: RunData, draw: LikeSamples):
    model = _new_cross_encoder(cfg, data)
    with torch.no_grad():  # the start: the text head is zero, so the numeric prior alone
        before = model.score_numeric(_numeric_subset(data)).numpy().astype(np.float64)
    return [(False, before, True), (True, _fit_and_score(cfg, data, draw, model), True)]


def _cross_encoder_reptile(cfg, data: RunData, draw: LikeSamples):
    start, before = cross_encoder_meta_start(cfg, data)
    model = _new_cross_encoder(cfg, data)
    load_trainable(model, start)
    return [(False, before, True), (True, _fit_and_score(cfg, data, draw, model), True)]


def cross_encoder_meta_start(cfg, data: RunData, log: Callable[[str], None] | None = None):
    """(trainable tensors, (subset,) start scores) of the Reptile-started cross-encoder: meta-
    trained once per run on the train users' implicit tasks (no rating), shared by every draw."""
    if "ce_meta" not in data.cache:
        model = _new_cross_encoder(cfg, data)
        _, tokenizer, test_tokens = _ce_cache(cfg, data)
        render = prompt_renderer(cfg.cross, tokenizer, data.titles, data.dataset.items.text)
        inter = data.dataset.interactions
        window, m = cfg.cross.history_items, cfg.ce_meta
        tasks = implicit_tasks(
            inter, data.train_users, render, data.dataset.n_items, window, m.support, m.seed
        )
        res = meta_train_cross_encoder(model, tasks, m)
        start = time.perf_counter()
        before = predict_cross_encoder(model, test_tokens, _numeric_subset(data))
        score_s = time.perf_counter() - start
        data.info["ce_meta"] = {
            "seconds": res["seconds"],
            "score_start_seconds": score_s,
            "query_losses": res["query_losses"],
        }
        if log is not None:
            log(f"cross-encoder start meta-learned in {res['seconds']:.0f} s")
        data.cache["ce_meta"] = (trainable_state(model), before)
    return data.cache["ce_meta"]


def _new_cross_encoder(cfg, data: RunData) -> CrossEncoder:
    encoder, _, _ = _ce_cache(cfg, data)
    return add_lora(CrossEncoder(cfg.cross, copy.deepcopy(encoder)), cfg.lora)


def _numeric_subset(data: RunData) -> torch.Tensor:
    return data.test_features.numeric[torch.from_numpy(data.subset)]


def _fit_and_score(cfg, data: RunData, draw: LikeSamples, model: CrossEncoder) -> np.ndarray:
    """LoRA fine-tuning on the draw, then (subset,) logits on the test subset."""
    _, tokenizer, test_tokens = _ce_cache(cfg, data)
    feats = like_features(draw, data.space, data.model)
    tokens = tokenize(tokenizer, _prompts(cfg, data, draw), cfg.cross.max_length)
    fit_cross_encoder(model, tokens, feats.numeric, feats.labels, cfg.lora)
    return predict_cross_encoder(model, test_tokens, _numeric_subset(data))


def _ce_cache(cfg, data: RunData):
    if "encoder" not in data.cache:
        encoder, tokenizer = load_encoder(cfg.cross.text_model)
        sub = data.test.take(data.subset)
        data.cache["encoder"], data.cache["tokenizer"] = encoder, tokenizer
        data.cache["tokens"] = tokenize(tokenizer, _prompts(cfg, data, sub), cfg.cross.max_length)
    return data.cache["encoder"], data.cache["tokenizer"], data.cache["tokens"]


def _prompts(cfg, data: RunData, samples: LikeSamples) -> list[str]:
    return build_prompts(
        cfg.cross,
        data.titles,
        samples.history,
        samples.history_rating,
        samples.item,
        data.dataset.items.text,
    )


METHOD_FNS = {
    "history-mean": _history_mean,
    "popularity": _popularity,
    "logreg-baseline": _logreg,
    "seqrec-head": _seqrec_head,
    "seqrec-head-labels-only": _labels_only,
    "seqrec-head-reptile": _reptile,
    "cross-encoder": _cross_encoder,
    "cross-encoder-reptile": _cross_encoder_reptile,
}
