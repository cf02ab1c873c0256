"""The batch every recommender model takes: small dataclasses of tensors."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

PAD = -1  # padding value in item sequences (left-padded)


@dataclass
class SeqBatch:
    """A batch of users and their recent histories.

    users: (B,) int64 user indices (``-1`` for users the model has not seen).
    items: (B, L) int64 item indices, left-padded with ``PAD``; the last column is the most recent.
    targets: (B, L) int64 next item at every position (``PAD`` where there is none); training only.
    negatives: sampled negative items, only for sampled losses: (B, L, S) int64 per position
        ("bce") or (S,) shared by the batch ("sampled").
    """

    users: torch.Tensor
    items: torch.Tensor
    targets: torch.Tensor | None = None
    negatives: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> SeqBatch:
        return SeqBatch(
            **{
                f.name: (None if (v := getattr(self, f.name)) is None else v.to(device))
                for f in fields(self)
            }
        )


@dataclass
class PairBatch:
    """(user, positive item, negative item) triples for pairwise losses such as BPR; all (B,)."""

    users: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(
            self.users.to(device), self.positives.to(device), self.negatives.to(device)
        )


@dataclass
class LikeBatch:
    """Pointwise like/click samples: a history, one candidate item and its 0/1 label per row.

    users: (B,) int64; items: (B, L) left-padded histories (``PAD``), most recent last;
    candidates: (B,) int64 item indices; labels: (B,) float 0/1.
    """

    users: torch.Tensor
    items: torch.Tensor
    candidates: torch.Tensor
    labels: torch.Tensor

    def history(self) -> SeqBatch:
        """The histories as a ``SeqBatch`` (what ``score`` takes)."""
        return SeqBatch(self.users, self.items)

    def to(self, device: torch.device | str) -> LikeBatch:
        return LikeBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


@dataclass
class FeedbackBatch:
    """A support set with feedback: next-item windows over the items plus, for the same items,
    like / dislike samples; the loss is next-item + ``like_weight`` x binary cross-entropy
    (``meta.functional.functional_loss``). What adaptation can learn from how the user felt
    about the items, which the history encoder never sees."""

    next_item: SeqBatch
    like: LikeBatch
    like_weight: float = 1.0

    def to(self, device: torch.device | str) -> FeedbackBatch:
        return FeedbackBatch(self.next_item.to(device), self.like.to(device), self.like_weight)


@dataclass
class FeatureBatch:
    """Pointwise samples already turned into feature rows (a frozen model's vectors).

    x: (B, F) float32 features of (user, candidate); labels: (B,) float 0/1.
    """

    x: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> FeatureBatch:
        return FeatureBatch(self.x.to(device), self.labels.to(device))
