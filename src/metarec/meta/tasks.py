"""Meta-learning tasks: (support, query) pairs for one user or one domain, and a task sampler.

**Next-item user task** (``next_item_tasks``). A user's interactions in time order (ties broken
by item, as ``data.splits``) are x_1 .. x_n, and the user needs n >= K + 1 (``support_query``).

- support = x_1 .. x_K as next-item training windows over the support sequence alone
  (``data.windows.training_windows`` with the model's ``max_len``): the input at position t is
  x_t and its target x_{t+1}, t = 1 .. K-1. The support loss is the model's own next-item loss
  inside the K items; nothing after x_K is seen. K >= 2: one item holds no transition.
- query = x_{K+1} .. x_{K+Q}, Q = min(n_query, n - K). Row j of the query batch is the history
  window of the item x_{K+j}: the last ``max_len`` items of x_1 .. x_{K+j-1} (support plus the
  earlier query items), left-padded, with target x_{K+j} in the last column and PAD elsewhere.
  The query loss is the mean next-item loss of the Q query items, each predicted from all that
  precedes it, as a ranking of it from its history window would see it.
- ranking (meta-validation, the coldstart protocol): one row whose history is the last
  ``max_len`` support items; the positives are the query items, the support items are excluded;
  ranked over the full catalogue.

**Like/click user task** (``like_tasks``): the same users, support and query, but every
interaction is a pointwise sample (history before it, the item, label y) and the loss is binary
cross-entropy on the dot-product logit (``meta.functional.pointwise_loss``). y = rating > 3
(``threshold``), or the value itself where every rating is 0 or 1 (a label/click column). The
first support item is no sample: with an empty history the user vector, hence its gradient, is 0.

**Domain task** (``domain_tasks``): a seeded sample of one domain's users (those with at least
two interactions in it), split into support users and query users; their sequences keep only
that domain's interactions. Support and query are next-item training windows over those
sequences; the ranking holds one row per query user: its last in-domain item from the ones
before it (excluded).

Batches are cut to the widest history they hold (leading all-PAD columns dropped): SeqRec's
positions are aligned to the right and PAD is masked, so the scores are the same and the
inner loop is cheaper. ``SeqBatch.users`` holds the dataset's user index (SeqRec ignores it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import count
from typing import Generic, TypeVar

import numpy as np
import torch

from metarec.data.schema import Interactions
from metarec.data.sequences import in_time_order, user_sequences
from metarec.data.splits import support_query
from metarec.data.windows import training_windows, trim_padding
from metarec.errors import ConfigError, DataError
from metarec.models.batch import PAD, FeedbackBatch, LikeBatch, SeqBatch

TASK_KINDS = ("next-item", "like", "domain")
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Ranking:
    """What a task is evaluated on: R history rows, each with its positives and excluded items.

    history: SeqBatch (R, L); positives, exclude: R arrays of item indices each.
    """

    history: SeqBatch
    positives: tuple[np.ndarray, ...]
    exclude: tuple[np.ndarray, ...]


@dataclass(frozen=True, eq=False)
class Task:
    """One task: ``kind`` in ``TASK_KINDS``, ``key`` the user (or domain) index, the support and
    query batches, the ranking it is evaluated on (None for like tasks) and, for user tasks, the
    support and query items (K,), (Q,) in time order."""

    kind: str
    key: int
    support: SeqBatch | LikeBatch
    query: SeqBatch | LikeBatch
    ranking: Ranking | None = None
    support_items: np.ndarray | None = None
    query_items: np.ndarray | None = None

    @property
    def pair(self) -> tuple[SeqBatch | LikeBatch, SeqBatch | LikeBatch]:
        """(support, query), the form the meta-learners' ``meta_step`` takes."""
        return self.support, self.query


def check_task_sizes(k: int, n_query: int, max_len: int) -> None:
    """ConfigError unless k >= 2, n_query >= 1 and max_len >= 1."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(
            f"k must be an integer >= 2 for meta-learning tasks, got {k!r}: a support set of one "
            "item holds no next-item transition to adapt on"
        )
    if n_query < 1 or max_len < 1:
        raise ConfigError(f"n_query and max_len must be >= 1, got {n_query} and {max_len}")


def history_batch(items: Sequence[int] | np.ndarray, max_len: int, user: int = -1) -> SeqBatch:
    """(1, W) SeqBatch of the last ``max_len`` of ``items`` (time order), W = min(len, max_len);
    an empty history is one PAD."""
    seq = np.asarray(items, dtype=np.int64)
    window = prefix_windows(seq, np.array([len(seq)]), max_len)
    return SeqBatch(users=torch.tensor([user]), items=torch.from_numpy(window))


def support_batch(items: Sequence[int] | np.ndarray, max_len: int, user: int = -1) -> SeqBatch:
    """Next-item training windows (W, L) over one support sequence (time order, >= 2 items)."""
    seq = np.asarray(items, dtype=np.int64)
    if len(seq) < 2:
        raise ValueError(f"a support set needs at least 2 items (one transition), got {len(seq)}")
    _, inputs, targets = training_windows(np.array([0, len(seq)]), seq, max_len)
    inputs, targets = trim_padding(inputs, targets)
    users = torch.full((len(inputs),), user, dtype=torch.long)
    return SeqBatch(users, torch.from_numpy(inputs), torch.from_numpy(targets))


def feedback_support(
    items: Sequence[int] | np.ndarray,
    labels: Sequence[float] | np.ndarray,
    max_len: int,
    like_weight: float,
    user: int = -1,
) -> FeedbackBatch:
    """A support set with feedback: ``support_batch`` over ``items`` plus one like/dislike sample
    per item after the first (``labels`` 0/1, one per item; each item scored from the ones
    before it; the first has an empty history, hence no gradient), weighted ``like_weight``."""
    seq = np.asarray(items, dtype=np.int64)
    y = np.asarray(labels, dtype=np.float32)
    if y.shape != seq.shape:
        raise ValueError(f"{len(y)} labels for {len(seq)} support items")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("support labels must be 0 (disliked) or 1 (liked)")
    like = _like_batch(seq, y, np.arange(1, len(seq)), max_len, user)
    return FeedbackBatch(support_batch(seq, max_len, user), like, float(like_weight))


def prefix_windows(seq: np.ndarray, ends: np.ndarray, max_len: int) -> np.ndarray:
    """(R, W) rows seq[max(0, e - max_len):e] for each end e, right-aligned, PAD on the left;
    W = min(max_len, max(ends)), at least 1."""
    ends = np.asarray(ends, dtype=np.int64)
    return span_windows(seq, np.zeros_like(ends), ends, max_len)


def span_windows(
    items: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int
) -> np.ndarray:
    """(R, W) rows items[max(s, e - max_len):e], right-aligned, PAD on the left;
    W = min(max_len, longest span), at least 1."""
    width = max(1, min(max_len, int((ends - starts).max(initial=0))))
    idx = ends[:, None] - width + np.arange(width)[None, :]  # (R, W)
    out = np.full(idx.shape, PAD, dtype=np.int64)
    valid = idx >= starts[:, None]
    out[valid] = items[idx[valid]]
    return out


def next_item_tasks(
    inter: Interactions,
    k: int,
    n_query: int = 20,
    max_len: int = 50,
    like_weight: float = 0.0,
    threshold: float = 3.0,
) -> list[Task]:
    """One next-item task per user with at least k + 1 interactions (see the module docstring).
    ``like_weight`` > 0: the support set carries the user's feedback (``feedback_support``:
    liked = rating > ``threshold``), the query stays next-item; the data needs ratings."""
    check_task_sizes(k, n_query, max_len)
    if like_weight < 0:
        raise ConfigError(f"like_weight must be >= 0, got {like_weight}")
    if like_weight > 0 and inter.rating is None:
        raise DataError(
            "a like weight needs ratings or 0/1 labels among the support items; this data has none"
        )
    if like_weight > 0:
        inter = replace(inter, rating=like_labels(inter.rating, threshold))
    tasks = []
    for user, s, q, ys, _ in user_parts(inter, k, n_query):
        task = _next_item_task(user, s, q, max_len)
        if like_weight > 0:
            task = replace(task, support=feedback_support(s, ys, max_len, like_weight, user))
        tasks.append(task)
    return tasks


def like_tasks(
    inter: Interactions, k: int, n_query: int = 20, max_len: int = 50, threshold: float = 3.0
) -> list[Task]:
    """One like/click task per user with at least k + 1 rated interactions."""
    check_task_sizes(k, n_query, max_len)
    if inter.rating is None:
        raise DataError("like/click tasks need a rating or 0/1 label column; this data has none")
    labelled = replace(inter, rating=like_labels(inter.rating, threshold))
    tasks = []
    for user, s, q, ys, yq in user_parts(labelled, k, n_query):
        seq, y = np.concatenate([s, q]), np.concatenate([ys, yq])
        support = _like_batch(seq, y, np.arange(1, k), max_len, user)
        query = _like_batch(seq, y, np.arange(k, len(seq)), max_len, user)
        tasks.append(Task("like", user, support, query, None, s, q))
    return tasks


def like_labels(rating: np.ndarray, threshold: float = 3.0) -> np.ndarray:
    """(N,) float32 0/1: the values themselves when all are 0 or 1, else rating > threshold."""
    rating = np.asarray(rating)
    if np.isin(rating, (0, 1)).all():
        return rating.astype(np.float32)
    return (rating > threshold).astype(np.float32)


def domain_tasks(
    inter: Interactions,
    max_len: int = 50,
    users_per_task: int = 32,
    tasks_per_domain: int = 8,
    seed: int = 0,
) -> list[Task]:
    """``tasks_per_domain`` tasks per domain, each a seeded sample of ``users_per_task`` of the
    domain's users (support gets the larger half); domains with fewer than 2 users are skipped."""
    if inter.domain is None:
        raise DataError("domain tasks need a domain column; this data has none")
    if users_per_task < 2 or tasks_per_domain < 1 or max_len < 1:
        raise ConfigError("users_per_task must be >= 2, tasks_per_domain and max_len >= 1")
    inter = in_time_order(inter)
    rng = np.random.default_rng(seed)
    n_users = int(inter.user.max(initial=-1)) + 1
    tasks = []
    for domain in np.unique(inter.domain):
        indptr, items = user_sequences(inter.take(inter.domain == domain), n_users)
        eligible = np.flatnonzero(np.diff(indptr) >= 2)
        if len(eligible) < 2:
            continue
        for _ in range(tasks_per_domain):
            pick = rng.choice(eligible, size=min(users_per_task, len(eligible)), replace=False)
            tasks.append(_domain_task(int(domain), indptr, items, pick, max_len))
    return tasks


class TaskSampler(Generic[T]):
    """Meta-batches of ``meta_batch_size`` tasks, deterministic in ``seed``.

    Epoch e is a permutation of the tasks drawn from ``(seed, e)``, cut into full meta-batches
    (the remainder is dropped, so every meta step averages the same number of tasks; a list
    shorter than a meta-batch gives one batch of all). Iterating goes on epoch after epoch.
    """

    def __init__(self, tasks: Sequence[T], meta_batch_size: int, seed: int = 0):
        if not tasks:
            raise ConfigError("no tasks to sample from: no user has enough interactions")
        if isinstance(meta_batch_size, bool) or meta_batch_size < 1:
            raise ConfigError(f"meta_batch_size must be >= 1, got {meta_batch_size!r}")
        self.tasks, self.seed = list(tasks), seed
        self.size = min(meta_batch_size, len(self.tasks))

    def __len__(self) -> int:
        """Meta-batches per epoch."""
        return len(self.tasks) // self.size

    def epoch(self, index: int) -> list[list[T]]:
        order = np.random.default_rng([self.seed, index]).permutation(len(self.tasks))
        starts = range(0, len(self) * self.size, self.size)
        return [[self.tasks[i] for i in order[s : s + self.size]] for s in starts]

    def __iter__(self) -> Iterator[list[T]]:
        for index in count():
            yield from self.epoch(index)


def user_parts(inter: Interactions, k: int, n_query: int):
    """Per kept user: (user, support items, query items, support ratings, query ratings)."""
    support, query, users = support_query(inter, k, n_query)
    s_lo, s_hi = np.searchsorted(support.user, users), np.searchsorted(support.user, users, "right")
    q_lo, q_hi = np.searchsorted(query.user, users), np.searchsorted(query.user, users, "right")
    for u, a, b, c, d in zip(users, s_lo, s_hi, q_lo, q_hi, strict=True):
        ys = None if support.rating is None else support.rating[a:b]
        yq = None if query.rating is None else query.rating[c:d]
        s, q = support.item[a:b].astype(np.int64), query.item[c:d].astype(np.int64)
        yield int(u), s, q, ys, yq


def _next_item_task(user: int, s: np.ndarray, q: np.ndarray, max_len: int) -> Task:
    seq = np.concatenate([s, q])
    hist = prefix_windows(seq, np.arange(len(s), len(seq)), max_len)  # (Q, W)
    targets = np.full_like(hist, PAD)
    targets[:, -1] = q
    query = SeqBatch(torch.full((len(q),), user), torch.from_numpy(hist), torch.from_numpy(targets))
    ranking = Ranking(history_batch(s, max_len, user), (np.unique(q),), (s,))
    return Task("next-item", user, support_batch(s, max_len, user), query, ranking, s, q)


def _like_batch(
    seq: np.ndarray, labels: np.ndarray, ends: np.ndarray, max_len: int, user: int
) -> LikeBatch:
    """Rows predicting ``seq[e]`` (label ``labels[e]``) from ``seq[:e]`` for each e in ends."""
    return LikeBatch(
        users=torch.full((len(ends),), user),
        items=torch.from_numpy(prefix_windows(seq, ends, max_len)),
        candidates=torch.from_numpy(seq[ends]),
        labels=torch.from_numpy(np.asarray(labels[ends], dtype=np.float32)),
    )


def _domain_task(
    domain: int, indptr: np.ndarray, items: np.ndarray, pick: np.ndarray, max_len: int
) -> Task:
    n_query = len(pick) // 2
    query_users, support_users = pick[:n_query], pick[n_query:]
    starts, ends = indptr[query_users], indptr[query_users + 1] - 1  # ends: the last item
    history = span_windows(items, starts, ends, max_len)  # (R, W) everything before it
    ranking = Ranking(
        SeqBatch(torch.from_numpy(query_users), torch.from_numpy(history)),
        tuple(items[[e]] for e in ends),
        tuple(items[a:e] for a, e in zip(starts, ends, strict=True)),
    )
    support = _windows(indptr, items, support_users, max_len)
    query = _windows(indptr, items, query_users, max_len)
    return Task("domain", domain, support, query, ranking)


def _windows(indptr: np.ndarray, items: np.ndarray, users: np.ndarray, max_len: int) -> SeqBatch:
    """Next-item training windows over the listed users' sequences."""
    lengths = indptr[users + 1] - indptr[users]
    sub_ptr = np.r_[0, np.cumsum(lengths)]
    sub_items = np.concatenate([items[indptr[u] : indptr[u + 1]] for u in users])
    rows, inputs, targets = training_windows(sub_ptr, sub_items, max_len)
    inputs, targets = trim_padding(inputs, targets)
    return SeqBatch(
        torch.from_numpy(users[rows]), torch.from_numpy(inputs), torch.from_numpy(targets)
    )
