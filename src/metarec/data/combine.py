"""Several datasets as one: the multi-domain form that pretraining on many scenarios reads.

Users and items of each dataset keep their raw ids behind a ``"<domain>:"`` prefix, so a movie
and a product that share an id stay apart, and every row carries its domain index
(``Interactions.domain``; names in ``Dataset.domains``), as does every item
(``ItemCatalog.domain``). All items share one catalogue and hence
one text space: the text encoder embeds a film's title and an office product's description with
the same model. ``domain_tag`` prefixes each item's text with its domain name as well, which gives
a text-based model the domain as a token it can read, without any domain-specific parameter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metarec.data.schema import Dataset, Interactions, ItemCatalog
from metarec.data.sequences import in_time_order
from metarec.errors import DataError

SEPARATOR = ":"


def combine_datasets(
    datasets: Sequence[Dataset], name: str | None = None, domain_tag: bool = False
) -> Dataset:
    """One ``Dataset`` holding every row of ``datasets``; domain i is ``datasets[i].name``.

    A dataset that is already multi-domain keeps its own domain names. Timestamps are kept as
    they are (users never span datasets, so each user's order is unchanged). The given split
    column survives only when every dataset has one.
    """
    if len(datasets) < 2:
        raise DataError(f"combining needs at least two datasets, got {len(datasets)}")
    names = [ds.name for ds in datasets]
    if len(set(names)) != len(names):
        raise DataError(f"datasets to combine must have distinct names, got {names}")
    domains: list[str] = []
    users: list[str] = []
    item_ids: list[str] = []
    texts: list[str] = []
    item_domain: list[np.ndarray] = []
    parts: list[Interactions] = []
    rated = any(ds.interactions.rating is not None for ds in datasets)
    for ds in datasets:
        local = list(ds.domains) if ds.domains else [ds.name]
        offset = len(domains)
        domains += local
        inter = ds.interactions
        own = np.zeros(len(inter), np.int64) if inter.domain is None else inter.domain
        parts.append(
            Interactions(
                user=inter.user + len(users),
                item=inter.item + len(item_ids),
                timestamp=inter.timestamp,
                rating=_column(inter.rating, len(inter)) if rated else None,
                domain=own + offset,
                split=inter.split,
            )
        )
        users += [f"{ds.name}{SEPARATOR}{u}" for u in ds.users]
        item_ids += [f"{ds.name}{SEPARATOR}{i}" for i in ds.items.ids]
        own_items = ds.items.domain if ds.items.domain is not None else np.zeros(ds.n_items)
        item_domain.append(own_items.astype(np.int64) + offset)
        texts += [f"{ds.name}: {t}" if domain_tag else t for t in ds.items.text]
    inter = _concat(parts, keep_split=all(ds.interactions.split is not None for ds in datasets))
    return Dataset(
        name=name or "+".join(names),
        interactions=in_time_order(inter),
        users=users,
        items=ItemCatalog(ids=item_ids, text=texts, domain=np.concatenate(item_domain)),
        has_time=all(ds.has_time for ds in datasets),
        domains=tuple(domains),
        source=" + ".join(ds.source or ds.name for ds in datasets),
        extra={"combined": names, "domain_tag": domain_tag},
    )


def _column(col: np.ndarray | None, n: int) -> np.ndarray:
    """A dataset without ratings gets NaN, so that the combined column exists for the others."""
    return np.full(n, np.nan, dtype=np.float32) if col is None else col.astype(np.float32)


def _concat(parts: list[Interactions], keep_split: bool) -> Interactions:
    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    return Interactions(
        user=cat("user"),
        item=cat("item"),
        timestamp=cat("timestamp"),
        rating=cat("rating") if parts[0].rating is not None else None,
        domain=cat("domain"),
        split=cat("split") if keep_split else None,
    )


def load_combined(names: Sequence[str | None], domain_tag: bool = False) -> Dataset:
    """``load_dataset`` of one name or path; several are loaded and combined into one."""
    from metarec.data.loaders.registry import load_dataset

    if len(names) <= 1:
        return load_dataset(names[0] if names else None)
    return combine_datasets([load_dataset(n) for n in names], domain_tag=domain_tag)
