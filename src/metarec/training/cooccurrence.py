"""Start item id embeddings from how items co-occur in the training sequences.

A randomly initialised id table spends its first epochs discovering which items go together; the
training sequences already say so. ``cooccurrence_embeddings`` counts item pairs that appear
within ``window`` steps of each other in a user's sequence, keeps the positive pointwise mutual
information (PPMI) of each pair, and factorises that item x item matrix with a truncated SVD:
items that follow one another get nearby vectors before the first gradient step (the
word2vec-as-matrix-factorisation view of item2vec). On warm-ml it takes SASRec from the
popularity level after one epoch to its plateau (bench/README.md).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

DENSE_SVD_MAX_ITEMS = 2000  # below this a dense SVD is cheaper and exact


def cooccurrence_embeddings(
    indptr: np.ndarray,
    items: np.ndarray,
    n_items: int,
    dim: int,
    window: int = 3,
    std: float = 0.1,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, dim) vectors from the PPMI SVD of the sequences' co-occurrences, and an (N,) bool mask
    of the items that co-occur with any other (the others' rows are zero).

    indptr, items: the sequences in CSR form (``data.splits.user_sequences``), time-ordered.
    The vectors are U * sqrt(S) of the top ``dim`` singular directions, rescaled so the covered
    rows have standard deviation ``std``; signs are fixed so that runs are deterministic.
    """
    if window < 1 or dim < 1 or std <= 0:
        raise ValueError(f"window, dim and std must be positive, got {window}, {dim}, {std}")
    pmi = _ppmi(indptr, items, n_items, window)
    covered = np.asarray(pmi.getnnz(axis=1) > 0)
    out = torch.zeros(n_items, dim)
    k = min(dim, int(covered.sum()) - 1)
    if k < 1:
        return out, torch.from_numpy(covered)
    if n_items <= DENSE_SVD_MAX_ITEMS:
        u, s, _ = np.linalg.svd(pmi.toarray())
        u, s = u[:, :k], s[:k]
    else:
        u, s = _randomized_svd(pmi, k, np.random.default_rng(seed))
    vec = u * np.sqrt(s)  # (N, k)
    vec = vec * np.where(vec.sum(0) < 0, -1.0, 1.0)  # deterministic signs
    scale = std / max(float(vec[covered].std()), 1e-12)
    out[:, :k] = torch.from_numpy(vec * scale).float()
    return out, torch.from_numpy(covered)


def _randomized_svd(
    m: sp.csr_matrix, k: int, rng: np.random.Generator, oversample: int = 32, n_iter: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k singular vectors and values of the symmetric sparse ``m`` by subspace iteration
    (Halko et al. 2011); a few sparse products instead of ARPACK's many (seconds -> < 1 s)."""
    q, _ = np.linalg.qr(m @ rng.standard_normal((m.shape[1], k + oversample)))
    for _ in range(n_iter):
        q, _ = np.linalg.qr(m @ q)  # m is symmetric: m.T @ q == m @ q
    u, s, _ = np.linalg.svd((m @ q).T, full_matrices=False)  # (m q)^T = q^T m
    return (q @ u)[:, :k], s[:k]


def _ppmi(indptr: np.ndarray, items: np.ndarray, n_items: int, window: int) -> sp.csr_matrix:
    """Symmetric (N, N) positive PMI of item pairs at most ``window`` positions apart."""
    seq_id = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    rows, cols = [], []
    for d in range(1, window + 1):
        same = seq_id[:-d] == seq_id[d:]  # pairs inside one user's sequence
        rows.append(items[:-d][same])
        cols.append(items[d:][same])
    r, c = np.concatenate(rows), np.concatenate(cols)  # window >= 1: never empty lists
    counts = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(n_items, n_items)).tocsr()
    counts = (counts + counts.T).tocoo()  # order within the window does not matter
    if counts.nnz == 0:
        return counts.tocsr()
    total = counts.data.sum()
    marginal = np.asarray(counts.sum(axis=1)).ravel()
    pmi = np.log(counts.data * total / (marginal[counts.row] * marginal[counts.col]))
    keep = pmi > 0
    return sp.coo_matrix(
        (pmi[keep], (counts.row[keep], counts.col[keep])), shape=(n_items, n_items)
    ).tocsr()
