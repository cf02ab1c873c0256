"""Top-k retrieval over a catalogue: exact (the full score row) or FAISS (approximate).

A model that declares ``retrieval_keys`` / ``retrieval_queries`` (SeqRec) scores an item by
the inner product of a query and the item's key, so the top-k of a history is a maximum inner
product search over the keys. ``ItemIndex`` holds the keys in a FAISS index (faiss-cpu, the
kept library; nothing here is a home-made index):

- ``hnsw`` (the default): a graph over the keys (``IndexHNSWFlat``, inner product), no training,
  recall set by ``ef_search``; adding items needs no rebuild.
- ``ivf``: keys clustered into ``nlist`` cells (``IndexIVFFlat``), ``nprobe`` cells searched; it
  trains on the keys it is built from (cheaper to build than HNSW on 10^6 items).
- ``flat``: exact inner-product search through FAISS (``IndexFlatIP``): the reference.

``search`` asks FAISS for k plus the number of excluded items, so that after dropping those
(the user's history) k remain. An index never changes after it is built: ``extended`` returns a
copy with more items, so a served model version swaps its index with its weights, atomically.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from metarec.errors import ConfigError

RETRIEVALS = ("exact", "faiss")
INDEX_KINDS = ("hnsw", "ivf", "flat")


@dataclass(frozen=True)
class IndexConfig:
    """How a FAISS index over item keys is built and searched."""

    kind: str = "hnsw"
    hnsw_m: int = 32  # graph neighbours per node
    ef_construction: int = 80
    ef_search: int = 128  # candidates kept while searching: recall against time
    nlist: int | None = None  # ivf cells; None: about 4 * sqrt(N)
    nprobe: int = 32
    threads: int | None = None  # FAISS OpenMP threads; None: FAISS's own default

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ConfigError(
                f"index kind must be one of {', '.join(INDEX_KINDS)}, got {self.kind!r}"
            )
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"index {name} must be a positive integer, got {value!r}")
        if self.nlist is not None and (not isinstance(self.nlist, int) or self.nlist < 1):
            raise ConfigError(f"index nlist must be a positive integer, got {self.nlist!r}")


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise ConfigError(
            "retrieval 'faiss' needs the faiss-cpu package (pip install faiss-cpu)"
        ) from e
    return faiss


class ItemIndex:
    """A FAISS index over (N, E) item keys; item i of the catalogue is row i."""

    def __init__(self, index, config: IndexConfig, dim: int):
        self._index, self.config, self.dim = index, config, dim

    @classmethod
    def build(cls, keys: torch.Tensor | np.ndarray, config: IndexConfig | None = None) -> ItemIndex:
        """An index over ``keys`` (N, E), N >= 1."""
        config = config or IndexConfig()
        faiss = _faiss()
        if config.threads is not None:
            faiss.omp_set_num_threads(config.threads)
        x = _matrix(keys, "item keys")
        n, dim = x.shape
        if n < 1:
            raise ConfigError("an item index needs at least one item")
        if config.kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif config.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.ef_construction
            index.hnsw.efSearch = config.ef_search
        else:
            nlist = config.nlist or max(1, min(n // 39, int(4 * np.sqrt(n))))
            index = faiss.IndexIVFFlat(
                faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT
            )
            index.train(x)
            index.nprobe = min(config.nprobe, nlist)
        index.add(x)
        return cls(index, config, dim)

    @property
    def n_items(self) -> int:
        return int(self._index.ntotal)

    def extended(self, keys: torch.Tensor | np.ndarray) -> ItemIndex:
        """A copy of this index with ``keys`` (M, E) appended as items N .. N + M - 1 (this one is
        left as it is: a version that still serves it keeps its catalogue)."""
        x = _matrix(keys, "new item keys")
        if x.shape[1] != self.dim:
            raise ConfigError(f"new item keys have width {x.shape[1]}, the index {self.dim}")
        copy = _faiss().clone_index(self._index)
        if len(x):
            copy.add(x)
        return ItemIndex(copy, self.config, self.dim)

    def search(
        self, queries: torch.Tensor | np.ndarray, k: int, exclude: Iterable[int] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores of each query row, ``exclude`` left out: (B, k')
        arrays with k' = min(k, N - excluded); rows FAISS could not fill (a sparse IVF probe)
        are padded with index -1 and score -inf."""
        q = _matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise ConfigError(f"queries have width {q.shape[1]}, the index {self.dim}")
        banned = set(int(i) for i in exclude)
        want = max(0, min(k, self.n_items - len(banned)))
        if want == 0 or len(q) == 0:
            return np.zeros((len(q), 0), dtype=np.int64), np.zeros((len(q), 0), dtype=np.float32)
        scores, idx = self._index.search(q, min(self.n_items, want + len(banned)))
        out_i = np.full((len(q), want), -1, dtype=np.int64)
        out_s = np.full((len(q), want), -np.inf, dtype=np.float32)
        for row in range(len(q)):
            keep = [
                (i, s)
                for i, s in zip(idx[row], scores[row], strict=True)
                if i >= 0 and i not in banned
            ]
            keep = keep[:want]
            if keep:
                out_i[row, : len(keep)] = [i for i, _ in keep]
                out_s[row, : len(keep)] = [s for _, s in keep]
        return out_i, out_s


def recall_at(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over rows of |approx_row ∩ exact_row| / |exact_row| (top-k sets, -1 ignored)."""
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(f"{approx.shape[0]} approximate rows against {exact.shape[0]} exact ones")
    hits = []
    for a, e in zip(approx, exact, strict=True):
        truth = {int(i) for i in e if i >= 0}
        if truth:
            hits.append(len(truth & {int(i) for i in a if i >= 0}) / len(truth))
    return float(np.mean(hits)) if hits else 0.0


def _matrix(x: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ConfigError(f"{what} must be a 2-D matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ConfigError(f"{what} hold non-finite values")
    return x
