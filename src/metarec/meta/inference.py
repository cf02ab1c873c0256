"""Adaptation at inference: a user's K interactions -> adapted parameters -> recommendations.

``adapt_user`` is the one function the CLI, the benchmarks and the service call to adapt a model
to a user; ``recommend`` ranks the catalogue under the result. The adapted parameters are
returned as *overrides*: model parameter name -> tensor, for exactly the parameters the policy
changes (``policy.touched``), so ``recommend`` (or any ``functional_call``) needs neither the
policy nor the learner, and a service can cache them per user. Both functions run the model in
eval mode and never change it; two threads must not call them on one model object at once (see
``meta.functional``).

What a meta checkpoint adapts with is what ``metarec meta-train`` chose on held-out users
(``meta.choice``): ``chosen_adapter`` turns the choice into no adapter (no adaptation: the base
model's ranking), plain fine-tuning (``finetune_bundle``: AdamW at the chosen rate for
``FINETUNE_STEPS`` steps) or the meta-learner itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metarec.adapt.policies import FastPolicy, PolicyConfig, make_policy
from metarec.evaluation.next_item import model_device
from metarec.evaluation.retrieval import ItemIndex
from metarec.meta.choice import FINETUNE, NO_ADAPT, Choice
from metarec.meta.core import INNER_LR, INNER_STEPS
from metarec.meta.functional import call_method, frozen_item_vectors, functional_score
from metarec.meta.inner import adapt_detached
from metarec.meta.inner_optim import InnerOptimizer, adamw, sgd
from metarec.meta.learners import Learner, LearnerSpec
from metarec.meta.tasks import feedback_support, history_batch, support_batch
from metarec.meta.train import eval_mode

Params = dict[str, torch.Tensor]
# plain fine-tuning as a candidate of the automatic choice (and coldstart-ml's baselines):
# AdamW at one of these rates, picked on validation users, for this many steps
FINETUNE_LRS = (1e-4, 1e-3, 1e-2)
FINETUNE_STEPS = 5


@dataclass(frozen=True, eq=False)
class PolicyBundle:
    """Adaptation without a meta-learner (the fine-tuning baselines): a policy, an inner
    optimizer and a step count; ``start`` None means ``policy.init_fast(model)``."""

    policy: FastPolicy
    inner_opt: InnerOptimizer
    steps: int = 5
    start: Params | None = None


def default_bundle(model: nn.Module) -> PolicyBundle:
    """Plain adaptation with the product's defaults: the default policy (head), plain SGD at
    ``INNER_LR`` for ``INNER_STEPS`` steps. What a model without a meta-learner adapts with."""
    return PolicyBundle(make_policy(PolicyConfig(), model), sgd(INNER_LR), INNER_STEPS)


def finetune_bundle(
    model: nn.Module, policy: PolicyConfig, lr: float, steps: int = FINETUNE_STEPS
) -> PolicyBundle:
    """Plain fine-tuning of ``policy``'s fast parameters from their ordinary start (no
    meta-learned anything): AdamW at ``lr`` for ``steps`` steps."""
    return PolicyBundle(make_policy(policy, model), adamw(lr), steps)


def chosen_adapter(
    model: nn.Module, learner: Learner | None, spec: LearnerSpec, choice: Choice | None
) -> Learner | PolicyBundle | None:
    """What a meta checkpoint adapts ``model`` with: ``learner`` when nothing was chosen (a
    checkpoint from before the choice: the meta-learner, unjudged) or the choice is the
    meta-learner; None for no adaptation; the chosen plain fine-tuning bundle (over
    ``spec.policy``). ValueError when the choice names another method."""
    method = spec.algorithm if choice is None else choice.method
    if method == NO_ADAPT:
        return None
    if method == FINETUNE:
        s = choice.candidate(FINETUNE).settings if choice is not None else {}
        try:
            return finetune_bundle(model, spec.policy, float(s["lr"]), int(s["steps"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"the finetune choice needs settings lr and steps, got {s}") from e
    if method != spec.algorithm:
        raise ValueError(
            f"the choice {method!r} is neither {NO_ADAPT}, {FINETUNE} nor the "
            f"meta-learner {spec.algorithm!r}"
        )
    if learner is None:
        raise ValueError(f"the choice is the meta-learner {method!r} but none was given")
    return learner


def adapt_user(
    model: nn.Module,
    adapter: Learner | PolicyBundle | None,
    items: Sequence[int],
    steps: int | None = None,
    labels: Sequence[float] | None = None,
    like_weight: float = 0.0,
) -> Params:
    """Parameter overrides (name -> tensor, detached) after adapting to ``items``.

    items: item indices of the user's K interactions in time order; the support loss is
    next-item prediction inside them (``meta.tasks.support_batch``). ``steps`` None: the
    adapter's own (a learner's eval/inner steps, the bundle's ``steps``). With fewer than 2
    items there is nothing to adapt on and the start of the fast parameters is returned.
    ``adapter`` None: no adaptation, no overrides ({}: the model as it is). ``labels`` (0/1 per
    item: disliked / liked) with ``like_weight`` > 0: the support loss adds the like/dislike
    cross-entropy (``meta.tasks.feedback_support``), as the learner was meta-trained with.
    """
    if adapter is None:
        _check_items(model, items)
        return {}
    if getattr(adapter, "model", model) is not model:
        raise ValueError("the learner was built over another model object than the one given")
    _check_items(model, items)
    with eval_mode(model):
        if len(items) < 2 or steps == 0:
            fast = _start(model, adapter)
        else:
            if labels is not None and like_weight > 0:
                support = feedback_support(items, labels, model_max_len(model), like_weight)
            else:
                support = support_batch(items, model_max_len(model))
            support = support.to(model_device(model))
            fast = _adapt(model, adapter, support, steps)
        with torch.no_grad():
            params = adapter.policy.effective_params(model, fast)
    return {name: params[name].detach() for name in adapter.policy.touched}


@torch.no_grad()
def recommend(
    model: nn.Module,
    fast: Params | None,
    history: Sequence[int],
    k: int = 10,
    exclude: Iterable[int] | None = None,
    index: ItemIndex | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item indices (k,) and scores (k,) from ``history`` (time order) under ``fast``
    (``adapt_user``'s overrides; None or {}: the model as it is). ``exclude`` None excludes the
    history's items; pass ``()`` to rank everything. Fewer than k come back when fewer remain.

    ``index`` (an ``ItemIndex`` over the model's ``retrieval_keys``): the top-k comes from it
    instead of the full score row, wherever ``fast`` leaves the item tower as it is (the keys
    are then still the index's); an adapted item tower is always ranked exactly."""
    _check_items(model, history)
    banned = sorted(set(history if exclude is None else exclude))
    _check_items(model, banned)
    device = model_device(model)
    with eval_mode(model):
        batch = history_batch(history, model_max_len(model)).to(device)
        params = dict(fast or {})
        vectors = frozen_item_vectors(model, tuple(params))
        if index is not None and vectors is not None and hasattr(model, "retrieval_queries"):
            query = call_method(
                model, "retrieval_queries", params, (batch,), {"item_vectors": vectors}
            )
            idx, values = index.search(query, k, banned)
            keep = idx[0] >= 0
            return idx[0][keep], values[0][keep]
        scores = functional_score(model, params, batch, None, vectors)[0].float()  # (N,)
    if banned:
        scores[torch.as_tensor(banned, device=device)] = -torch.inf
    k = max(0, min(k, scores.numel() - len(banned)))
    values, idx = torch.topk(scores, k)
    return idx.cpu().numpy(), values.cpu().numpy()


def adapt_latency(
    model: nn.Module,
    adapter: Learner | PolicyBundle,
    users: Sequence[Sequence[int]],
    steps: int | None = None,
    warmup: int = 3,
) -> dict[str, float]:
    """Median and p95 milliseconds of ``adapt_user`` over ``users`` (each a list of item
    indices), after ``warmup`` untimed calls; single process, the current torch threads."""
    if not users:
        raise ValueError("adapt_latency needs at least one user")
    for items in list(users)[:warmup]:
        adapt_user(model, adapter, items, steps)
    times = []
    for items in users:
        start = time.perf_counter()
        adapt_user(model, adapter, items, steps)
        times.append(1000.0 * (time.perf_counter() - start))
    return {
        "adapt_ms_median": float(np.median(times)),
        "adapt_ms_p95": float(np.percentile(times, 95)),
        "users": float(len(times)),
    }


def _start(model: nn.Module, adapter: Learner | PolicyBundle) -> Params:
    start = getattr(adapter, "start", None)
    if start is None:
        start = adapter.policy.init_fast(model)
    return {k: v.detach() for k, v in start.items()}


def _adapt(model: nn.Module, adapter: Learner | PolicyBundle, support, steps: int | None) -> Params:
    if not isinstance(adapter, PolicyBundle):
        return adapter.adapt_task(support, steps)
    steps = adapter.steps if steps is None else steps
    return adapt_detached(
        model, adapter.policy, _start(model, adapter), support, adapter.inner_opt, steps
    )


def model_max_len(model: nn.Module) -> int:
    """The history window of a sequential model (50 where it names none)."""
    return int(getattr(getattr(model, "config", None), "max_len", 50))


def _check_items(model: nn.Module, items: Iterable[int]) -> None:
    n = getattr(getattr(model, "config", None), "n_items", None)
    bad = [i for i in items if not isinstance(i, int | np.integer) or i < 0 or (n and i >= n)]
    if bad:
        raise ValueError(f"item indices must be integers in [0, {n}), got {bad[:5]}")
