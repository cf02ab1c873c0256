"""Tiny models and tasks shared by the meta-learning and adaptation tests (plus their own checks).

Everything here is small enough that a full meta step takes milliseconds on one CPU core.
"""

from __future__ import annotations

import pytest
import torch

from metarec.models import BPR, PAD, BPRConfig, PairBatch, SeqBatch, SeqRec, SeqRecConfig

N_ITEMS, DIM, TEXT_DIM, LENGTH = 7, 8, 4, 5


@pytest.fixture(autouse=True)
def one_thread():
    """Import into a test module to run its tests on one thread: for models this small, waking
    torch's thread pool costs far more than it saves, and more so on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_seqrec(
    seed: int = 0, dtype: torch.dtype = torch.float32, item_repr: str = "hybrid"
) -> SeqRec:
    """One-block SeqRec without dropout (so every call is deterministic)."""
    torch.manual_seed(seed)
    text = torch.randn(N_ITEMS, TEXT_DIM) if item_repr != "id" else None
    cfg = SeqRecConfig(
        n_items=N_ITEMS,
        dim=DIM,
        n_layers=1,
        n_heads=2,
        max_len=LENGTH,
        dropout=0.0,
        item_repr=item_repr,
        text_dim=TEXT_DIM if text is not None else 0,
    )
    return SeqRec(cfg, text).to(dtype)


def user_batch(seed: int, pad: int = 0) -> SeqBatch:
    """One user's history (1, LENGTH), left-padded with ``pad`` PADs, and its next items."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, N_ITEMS, (LENGTH + 1,), generator=g)
    items, targets = seq[:-1].clone(), seq[1:].clone()
    items[:pad] = PAD
    targets[:pad] = PAD
    return SeqBatch(torch.zeros(1, dtype=torch.long), items[None], targets[None])


def tasks(n: int, seed: int = 0) -> list[tuple[SeqBatch, SeqBatch]]:
    """``n`` (support, query) pairs; the first support set is padded."""
    return [
        (user_batch(seed + 2 * i, pad=1 if i == 0 else 0), user_batch(seed + 2 * i + 1))
        for i in range(n)
    ]


def tiny_bpr(seed: int = 0) -> BPR:
    torch.manual_seed(seed)
    return BPR(BPRConfig(n_users=3, n_items=N_ITEMS, dim=DIM))


def pair_batch(seed: int) -> PairBatch:
    g = torch.Generator().manual_seed(seed)
    pos, neg = torch.randint(0, N_ITEMS, (2, 4), generator=g)
    return PairBatch(torch.zeros(4, dtype=torch.long), pos, neg)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_tasks_are_valid_next_item_data():
    model = tiny_seqrec()
    for support, query in tasks(3):
        for batch in (support, query):
            assert batch.items.shape == batch.targets.shape == (1, LENGTH)
            assert torch.isfinite(model.loss(batch))
    assert (tasks(1)[0][0].items[0, 0] == PAD).item()
