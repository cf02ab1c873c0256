"""Id embeddings started from item co-occurrence (PPMI + truncated SVD)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from metarec.errors import ConfigError
from metarec.training.cooccurrence import _ppmi, _randomized_svd, cooccurrence_embeddings
from metarec.workflows.pretrain import ModelSpec


def _csr(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    return indptr, np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])


def _two_groups(n_users: int = 40) -> list[list[int]]:
    """Users walk either items 0-4 or items 5-9, never both; item 10 is never seen."""
    rng = np.random.default_rng(0)
    return [list(rng.integers(0, 5, 12) + 5 * (u % 2)) for u in range(n_users)]


def test_items_that_go_together_get_nearby_vectors():
    indptr, items = _csr(_two_groups())
    vec, covered = cooccurrence_embeddings(indptr, items, n_items=11, dim=4, window=2)
    assert covered.tolist() == [True] * 10 + [False]
    assert vec[10].abs().sum() == 0  # never seen: no vector, the caller keeps its own start
    cos = F.normalize(vec[:10], dim=1) @ F.normalize(vec[:10], dim=1).T
    same = torch.zeros(10, 10, dtype=torch.bool)
    same[:5, :5] = same[5:, 5:] = True
    off_diag = ~torch.eye(10, dtype=torch.bool)
    assert cos[~same].abs().max() < 1e-5  # the groups never meet: orthogonal
    assert cos[same & off_diag].min() > 0.2  # inside a group: alike
    assert vec[covered].std(correction=0).item() == pytest.approx(0.1, rel=1e-4)
    again, _ = cooccurrence_embeddings(indptr, items, n_items=11, dim=4, window=2)
    assert torch.equal(vec, again)


def test_ppmi_counts_pairs_inside_each_sequence_only():
    # one user 0 -> 1, another 2 -> 3: the boundary pair (1, 2) must not be counted
    m = _ppmi(*_csr([[0, 1], [2, 3]]), n_items=4, window=1).toarray()
    assert m[1, 2] == 0 and m[2, 1] == 0
    assert m[0, 1] == m[1, 0] == pytest.approx(np.log(4 * 1 / (1 * 1)))  # total 4 = 2 pairs x 2


def test_randomized_svd_matches_the_dense_one():
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.standard_normal((300, 6)))[0]
    dense = basis @ np.diag([50.0, 30, 20, 10, 5, 2]) @ basis.T + 0.01 * np.eye(300)
    u, s = _randomized_svd(sp.csr_matrix(dense), 4, rng)
    np.testing.assert_allclose(s, [50.01, 30.01, 20.01, 10.01], rtol=1e-6)
    np.testing.assert_allclose(np.abs(u.T @ basis[:, :4]), np.eye(4), atol=1e-6)


def test_bad_settings_are_refused():
    indptr, items = _csr(_two_groups())
    with pytest.raises(ValueError, match="positive"):
        cooccurrence_embeddings(indptr, items, 11, dim=4, window=0)
    with pytest.raises(ConfigError, match="id_init must be one of"):
        ModelSpec(id_init="svd")
    with pytest.raises(ConfigError, match="needs id embeddings"):
        ModelSpec(item_repr="text", id_init="cooccurrence")
