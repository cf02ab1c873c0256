"""A meta-learned start for the cross-encoder like scorer: Reptile on train users' implicit tasks.

What moves: the cross-encoder's trainable tensors after ``add_lora`` (LoRA A/B in the adapted
layers, ``text_head``, and the ``numeric`` head when ``CrossEncoderConfig.numeric``); the frozen
MiniLM weights are never in the outer optimizer and never change.

How: ``meta.reptile.Reptile`` with a ``SubsetPolicy`` over exactly those tensors, so the inner
loop is the project's one functional loop (``meta.inner.adapt``, ``torch.func.functional_call``
over a dict of fast tensors; AdamW with fresh state per task, the optimizer ``fit_cross_encoder``
uses downstream, or plain SGD) and the outer step is ``torch.optim.SGD`` on the model's own
parameters, i.e. ``start += step_size * (mean adapted - start)``. ``functional_loss`` calls
``model.loss(batch)`` with one batch argument, while ``CrossEncoder.loss`` takes four tensors;
``_PromptLoss`` is the small wrapper that bridges the two (``PromptBatch`` -> the four tensors),
so neither the model nor the meta-learner learns about the other.

Task source (PROTOCOLS.md fewshot-like allows "any unlabelled behaviour of train users for
pretraining or meta-training", never their ratings beyond the labelled budget): a task is one
train user. Its rows are windows of the user's time-ordered interactions: the prompt shows the
``history_items`` items just before position t (titles only, no rating: ``IMPLICIT_ITEM``) and a
candidate; label 1 when the candidate is the item at t, 0 for a uniformly drawn item the user
never interacted with (the same history, so every window gives one row of each label). The
numeric features are rating features, so they are zero in these tasks: the numeric weights get
no gradient and keep their prior exactly; only its bias moves. Support and query sets are
disjoint windows of the same user. The tasks read only which items and in what order, so the
start is learned once per run and shared by every seed and budget (default config: ~2.5 min on
one CPU thread); tasks cut from each draw's labelled budget (as ``like.fit.reptile_start`` does
for the light head) would repeat that meta-training for each of the 15 draws.

Caveat, measured on ml-latest-small: next item vs unseen item is not the like task. The text
score learned from it ranks liked items slightly below disliked ones, so the meta-learned start
scores below the numeric prior (test-subset AUC 0.72 vs 0.76) and small budgets do not repair it;
at 256 labels the fitted model ends level with or marginally above the plainly started one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from metarec.adapt.policies import SubsetPolicy
from metarec.data.schema import Interactions
from metarec.data.sequences import group_positions, in_time_order
from metarec.errors import DataError
from metarec.like.cross_encoder import CrossEncoder, CrossEncoderConfig, build_prompts
from metarec.like.cross_encoder_fit import tokenize
from metarec.like.head import NUMERIC
from metarec.meta.inner_optim import adamw, sgd
from metarec.meta.reptile import Reptile, ReptileConfig

INNER_OPTIMIZERS = ("adamw", "sgd")
IMPLICIT_ITEM = "{title}"  # history items of implicit tasks: no rating is shown (none is read)


@dataclass(frozen=True)
class CrossMetaConfig:
    meta_steps: int = 24
    tasks_per_step: int = 2
    support: int = 8  # windows per support set, each one positive and one negative row; query too
    inner_steps: int = 3
    inner_optimizer: str = "adamw"  # as fit_cross_encoder (no weight decay); or "sgd"
    inner_lr: float = 3e-3
    step_size: float = 1.0  # Reptile's epsilon: the outer SGD learning rate
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("meta_steps", "tasks_per_step", "support", "inner_steps"):
            value, low = getattr(self, name), 0 if name == "meta_steps" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(
                f"inner_optimizer must be one of {INNER_OPTIMIZERS}, got {self.inner_optimizer!r}"
            )
        if not self.inner_lr > 0:
            raise ValueError(f"invalid inner learning rate: {self.inner_lr}")
        if not self.step_size >= 0:
            raise ValueError(f"invalid step size: {self.step_size}")


@dataclass(frozen=True)
class PromptBatch:
    """input_ids, attention_mask: (B, T); numeric: (B, F) ``like.head.NUMERIC``; labels: (B,)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    numeric: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


class _PromptLoss(nn.Module):
    """``loss(batch)`` over a ``CrossEncoder``, the one-argument form ``functional_loss`` calls."""

    def __init__(self, model: CrossEncoder):
        super().__init__()
        self.ce = model

    def loss(self, batch: PromptBatch) -> torch.Tensor:
        return self.ce.loss(batch.input_ids, batch.attention_mask, batch.numeric, batch.labels)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the tensors that require grad (LoRA A/B and the heads)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``trainable_state`` output into a model built the same way (in place)."""
    params = dict(model.named_parameters())
    if missing := sorted(set(state) - set(params)):
        raise ValueError(f"the model has no parameter(s) {missing[:3]}: not built the same way")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def meta_train_cross_encoder(
    model: CrossEncoder, tasks: Iterator[tuple[PromptBatch, PromptBatch]], cfg: CrossMetaConfig
) -> dict[str, float | list[float]]:
    """Reptile on the trainable tensors of ``model`` (in place); returns query losses, seconds.

    ``tasks`` yields (support, query) pairs; ``cfg.tasks_per_step`` are drawn per meta step.
    """
    wrapper = _PromptLoss(model)
    names = tuple(n for n, p in wrapper.named_parameters() if p.requires_grad)
    if not names:
        raise ValueError("the cross-encoder has no trainable tensor (call add_lora first)")
    policy = SubsetPolicy("cross-encoder", wrapper, names)
    rc = ReptileConfig(cfg.inner_lr, cfg.inner_steps, step_size=cfg.step_size)
    inner = (
        adamw(cfg.inner_lr, weight_decay=0.0)
        if cfg.inner_optimizer == "adamw"
        else sgd(cfg.inner_lr)
    )
    learner = Reptile(wrapper, policy, rc, inner_opt=inner)
    torch.manual_seed(cfg.seed)  # dropout masks
    was_training, start = model.training, time.perf_counter()
    model.train()
    losses = []
    for _ in range(cfg.meta_steps):
        batch = [next(tasks) for _ in range(cfg.tasks_per_step)]
        losses.append(learner.meta_step(batch)["query_loss"])
    model.train(was_training)
    return {"query_losses": losses, "seconds": time.perf_counter() - start}


def implicit_tasks(
    inter: Interactions,
    users: np.ndarray,
    render: Callable[[np.ndarray, np.ndarray], PromptBatch],
    n_items: int,
    window: int,
    support: int,
    seed: int = 0,
) -> Iterator[tuple[PromptBatch, PromptBatch]]:
    """Endless seeded (support, query) tasks, one train user each, from implicit behaviour only.

    ``render(history (R, window), items (R,))`` turns rows into a batch (``prompt_renderer``);
    labels are then set here: each window gives (its next item, 1) and (an unseen item, 0).
    The rating column of ``inter`` is never read.
    """
    inter = in_time_order(inter.take(np.isin(inter.user, users)))
    pos = group_positions(inter.user)
    targets = np.flatnonzero(pos >= window)  # rows with a full window before them
    owner = inter.user[targets]
    eligible, counts = np.unique(owner, return_counts=True)
    eligible = eligible[counts >= 2 * support]
    if len(eligible) == 0:
        raise DataError(f"no train user has {2 * support} targets after {window} items")
    rng = np.random.default_rng(seed)
    while True:
        user = eligible[rng.integers(len(eligible))]
        rows = rng.permutation(targets[owner == user])[: 2 * support]
        seen = np.unique(inter.item[inter.user == user])
        sets = []
        for part in (rows[:support], rows[support:]):
            history = inter.item[part[:, None] - window + np.arange(window)]  # (W, window)
            negatives = _unseen(rng, seen, n_items, len(part))
            items = np.concatenate([inter.item[part], negatives])
            batch = render(np.concatenate([history, history]), items)
            labels = torch.cat([torch.ones(len(part)), torch.zeros(len(part))])
            sets.append(replace(batch, labels=labels))
        yield sets[0], sets[1]


def _unseen(rng: np.random.Generator, seen: np.ndarray, n_items: int, n: int) -> np.ndarray:
    """(n,) items drawn uniformly from those not in ``seen`` (sorted)."""
    if len(seen) >= n_items:
        raise DataError("a train user has interacted with every item: no negative to draw")
    out = np.empty(0, np.int64)
    while len(out) < n:
        draw = rng.integers(n_items, size=2 * n)
        out = np.concatenate([out, draw[~np.isin(draw, seen)]])
    return out[:n]


def prompt_renderer(
    config: CrossEncoderConfig,
    tokenizer,
    titles: Sequence[str],
    candidate_texts: Sequence[str] | None = None,
) -> Callable[[np.ndarray, np.ndarray], PromptBatch]:
    """Rows (history (R, H), items (R,)) -> a ``PromptBatch`` of rating-free prompts (the
    template of ``config`` with ``IMPLICIT_ITEM`` per history item), zero numeric features and
    zero labels (``implicit_tasks`` sets them)."""
    plain = replace(config, item_template=IMPLICIT_ITEM)

    def render(history: np.ndarray, items: np.ndarray) -> PromptBatch:
        no_rating = np.zeros(history.shape, np.float32)  # not shown by IMPLICIT_ITEM
        prompts = build_prompts(plain, titles, history, no_rating, items, candidate_texts)
        tokens = tokenize(tokenizer, prompts, config.max_length)
        ids, mask, n = tokens["input_ids"], tokens["attention_mask"], len(items)
        return PromptBatch(ids, mask, torch.zeros(n, len(NUMERIC)), torch.zeros(n))

    return render
