"""The one in-memory form every loader produces: interactions + item catalogue + id maps.

Users and items are contiguous integer indices ``0..n-1``; the raw ids (strings, as in the source
files) are kept in ``Dataset.users`` and ``Dataset.items.ids`` so that checkpoints can store the
maps and the edges of the system (CLI, service) can speak raw ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from metarec.errors import DataError

SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST = 0, 1, 2


@dataclass(frozen=True, eq=False)
class Interactions:
    """Columnar interaction log; every column has the same length N.

    user, item: (N,) int64 indices. timestamp: (N,) int64 unix seconds, or the position in the
    user's sequence where the source has order but no time (see ``Dataset.has_time``).
    rating: (N,) float32 rating or 0/1 label, if the source has one. domain: (N,) int64 index into
    ``Dataset.domains``. split: (N,) int8 ``SPLIT_*`` codes from given split files.
    """

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray | None = None
    rating: np.ndarray | None = None
    domain: np.ndarray | None = None
    split: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("item", "timestamp", "rating", "domain", "split"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise DataError(f"interactions column '{name}' has {len(col)} rows, 'user' has {n}")

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray) -> Interactions:
        """Rows selected by a boolean mask or an integer index array."""
        return Interactions(
            **{name: (None if col is None else col[index]) for name, col in self._columns().items()}
        )

    def concat(self, other: Interactions) -> Interactions:
        """Rows of ``self`` then ``other``; a column missing on either side is dropped."""
        cols = {}
        for name, col in self._columns().items():
            theirs = getattr(other, name)
            cols[name] = None if col is None or theirs is None else np.concatenate([col, theirs])
        return Interactions(**cols)

    def sort_by_user_time(self) -> Interactions:
        """Order by (user, timestamp, item): ties in time broken by item index."""
        keys = [self.item]
        if self.timestamp is not None:
            keys.append(self.timestamp)
        keys.append(self.user)
        return self.take(np.lexsort(keys))

    def _columns(self) -> dict[str, np.ndarray | None]:
        return {
            "user": self.user,
            "item": self.item,
            "timestamp": self.timestamp,
            "rating": self.rating,
            "domain": self.domain,
            "split": self.split,
        }


@dataclass(frozen=True, eq=False)
class ItemCatalog:
    """Items by index: raw id and text ('' where the source has none); for a multi-domain
    dataset, ``domain``: (N,) int64 each item's index into ``Dataset.domains``."""

    ids: list[str]
    text: list[str]
    domain: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.text):
            raise DataError(f"item catalogue has {len(self.ids)} ids but {len(self.text)} texts")
        if self.domain is not None and self.domain.shape != (len(self.ids),):
            raise DataError(
                f"item catalogue has {len(self.ids)} ids but {self.domain.shape} item domains"
            )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def text_coverage(self) -> float:
        """Fraction of items with non-empty text."""
        if not self.ids:
            return 0.0
        return sum(1 for t in self.text if t.strip()) / len(self.ids)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset. ``interactions`` are sorted by (user, time, item)."""

    name: str
    interactions: Interactions
    users: list[str]
    items: ItemCatalog
    has_time: bool = True
    domains: tuple[str, ...] = ()
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def describe(self) -> str:
        """'NAME: U users, I items, N interactions' for logs."""
        return (
            f"{self.name}: {self.n_users:,} users, {self.n_items:,} items, "
            f"{len(self.interactions):,} interactions"
        )

    def with_interactions(self, interactions: Interactions) -> Dataset:
        return replace(self, interactions=interactions)

    def user_index(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.users)}

    def item_index(self) -> dict[str, int]:
        return {it: i for i, it in enumerate(self.items.ids)}
