"""Data-parallel pretraining (torch.distributed + DDP, gloo on CPU) equals one process.

Two spawned gloo ranks, each with half of every global batch, must end at the weights one
process reaches with the whole batch: same batches (every rank draws them from the same epoch
seed), disjoint halves, and a loss scaled so that DDP's gradient average is the gradient of the
mean over the global batch. Tiny synthetic data and a tiny SeqRec with dropout 0, a few steps.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from metarec.data.splits import leave_one_out
from metarec.models import PAD, SeqBatch, SeqRec
from metarec.training import distributed
from metarec.training.checkpoint import load_checkpoint
from metarec.training.loop import TrainConfig
from metarec.training.pretrain import (
    prepare_next_item,
    seqrec_batches,
    split_seq_batch,
    train_seqrec,
)
from metarec.workflows.pretrain import ModelSpec, TextFeatures, build_seqrec, pretrain_seqrec
from test_training import _cyclic_dataset as _dataset

# max |w_ddp - w_single| after the steps below (float32 sums in another order), over every
# weight but the attention's key bias: it adds q.b_k to all of a query's scores, which softmax
# ignores, so its gradient is zero up to rounding and AdamW turns that rounding into steps of
# up to lr (1e-3 apart after 3 epochs) that change nothing; the scores are compared instead
TOLERANCE = 1e-5
SCORE_TOLERANCE = 1e-4
N_USERS, N_ITEMS, WORLD = 60, 30, 2

SPEC = ModelSpec(item_repr="id", dim=16, n_layers=1, n_heads=1, max_len=10, dropout=0.0)
NO_TEXT = TextFeatures(None, {"text_model": None})
# the other two objectives, on a hybrid model whose text adaptor trains too; an odd batch
# (7 + 8 rows) and per-position or shared negatives
VARIANTS = {
    "bce": (replace(SPEC, item_repr="hybrid", loss="bce", n_negatives=3), 15),
    "sampled": (replace(SPEC, item_repr="hybrid", loss="sampled", n_negatives=8), 16),
}


def _setup():
    ds = _dataset()
    return ds, prepare_next_item(leave_one_out(ds), ds.n_users, ds.n_items, max_len=10)


def _config(**kw) -> TrainConfig:
    base = dict(max_epochs=3, batch_size=16, lr=1e-2, patience=30, progress=False, seed=1)
    return TrainConfig(**{**base, "device": "cpu", **kw})


def _text() -> TextFeatures:
    return TextFeatures(torch.randn(N_ITEMS, 8, generator=torch.Generator().manual_seed(3)), {})


def _last_weights(spec: ModelSpec, batch_size: int) -> tuple[dict, dict]:
    """(start, last) weights of ``train_seqrec`` over 3 epochs (the model keeps the last)."""
    ds, data = _setup()
    torch.manual_seed(0)
    model: SeqRec = build_seqrec(spec, ds, _text())
    start = {k: v.clone() for k, v in model.state_dict().items()}
    train_seqrec(model, data, _config(batch_size=batch_size))
    return start, model.state_dict()


def _worker(rank: int, port: int, out: str) -> None:
    """One gloo rank, as torchrun would start it (the environment is all it gets)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    root = Path(out)
    with distributed.session("cpu") as here:
        assert here.rank == rank and here.world == WORLD and dist.get_backend() == "gloo"
        ds, data = _setup()
        res = pretrain_seqrec(ds, data, SPEC, _config(), out=root / "straight", text=NO_TEXT)
        pretrain_seqrec(ds, data, SPEC, _config(max_epochs=2), out=root / "cut", text=NO_TEXT)
        resumed = pretrain_seqrec(
            ds, data, SPEC, _config(), out=root / "cut", resume=True, text=NO_TEXT
        )
        summary = {"curve": res.state.curve, "resumed_curve": resumed.state.curve}
        summary |= {"test": res.test, "steps": res.state.steps}
        (root / f"rank{rank}.json").write_text(json.dumps(summary))
        for name, (spec, batch_size) in VARIANTS.items():
            _, last = _last_weights(spec, batch_size)
            save_file({k: v.contiguous() for k, v in last.items()}, root / f"{name}{rank}.st")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return out


def _without_key_bias(state: dict) -> dict:
    out = dict(state)
    for name in [k for k in state if k.endswith("attn.qkv.bias")]:
        q, _, v = state[name].chunk(3)
        out[name] = torch.cat([q, v])
    return out


def _max_diff(a: dict, b: dict) -> float:
    a, b = _without_key_bias(a), _without_key_bias(b)
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _score_diff(spec: ModelSpec, a: dict, b: dict, text: TextFeatures) -> float:
    """max |scores_a - scores_b| over the full catalogue for the first training batch."""
    ds, data = _setup()
    batch = next(seqrec_batches(data, 32)(0, np.random.default_rng(0)))
    scores = []
    for state in (a, b):
        model = build_seqrec(spec, ds, text)
        model.load_state_dict(state)
        with torch.no_grad():
            scores.append(model.eval().score(batch))
    return (scores[0] - scores[1]).abs().max().item()


def test_two_ranks_with_half_batches_reach_the_single_process_weights(ddp_run, tmp_path):
    ds, data = _setup()
    single = pretrain_seqrec(ds, data, SPEC, _config(), out=tmp_path / "one", text=NO_TEXT)
    torch.manual_seed(_config().seed)
    start = build_seqrec(SPEC, ds, NO_TEXT).state_dict()
    ddp = load_checkpoint(ddp_run / "straight").model.state_dict()  # rank 0 wrote it
    one = load_checkpoint(tmp_path / "one").model.state_dict()
    assert _max_diff(ddp, one) <= TOLERANCE
    assert _score_diff(SPEC, ddp, one, NO_TEXT) <= SCORE_TOLERANCE
    assert _max_diff(one, start) > 0.05  # the steps moved the weights
    rank0, rank1 = (json.loads((ddp_run / f"rank{r}.json").read_text()) for r in range(WORLD))
    assert single.state.steps == rank0["steps"] == rank1["steps"] > 10
    # every rank saw the same validation curve (rank 0's, broadcast), equal to one process's
    assert rank0["curve"] == rank1["curve"]
    assert [m for _, m in rank0["curve"]] == pytest.approx([m for _, m in single.state.curve])
    assert rank0["test"] == pytest.approx(single.test, abs=1e-6)
    assert rank1["test"] == {}  # only rank 0 evaluates and writes


def test_resume_under_ddp_continues_the_run(ddp_run):
    straight = load_checkpoint(ddp_run / "straight")
    resumed = load_checkpoint(ddp_run / "cut")
    assert resumed.meta["train_state"]["epoch"] == 3
    assert _max_diff(resumed.model.state_dict(), straight.model.state_dict()) <= TOLERANCE
    scores = _score_diff(SPEC, resumed.model.state_dict(), straight.model.state_dict(), NO_TEXT)
    assert scores <= SCORE_TOLERANCE
    rank0, rank1 = (json.loads((ddp_run / f"rank{r}.json").read_text()) for r in range(WORLD))
    assert [e for e, _ in rank0["resumed_curve"]] == [1, 2, 3]
    assert rank0["resumed_curve"] == rank1["resumed_curve"]
    assert [m for _, m in rank0["resumed_curve"]] == pytest.approx(
        [m for _, m in rank0["curve"]], abs=1e-6
    )


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_sampled_objectives_and_uneven_shards_match_too(ddp_run, name):
    spec, batch_size = VARIANTS[name]
    start, single = _last_weights(spec, batch_size)
    ranks = [load_file(ddp_run / f"{name}{r}.st") for r in range(WORLD)]
    assert _max_diff(ranks[0], ranks[1]) == 0.0  # DDP keeps the ranks in lockstep
    assert _max_diff(ranks[0], single) <= TOLERANCE
    assert _score_diff(spec, ranks[0], single, _text()) <= SCORE_TOLERANCE
    assert _max_diff(single, start) > 0.05
    assert any("text" in k and not torch.equal(single[k], start[k]) for k in single)


def test_shards_are_disjoint_cover_the_batch_and_weigh_its_positions():
    rng = np.random.default_rng(0)
    targets = torch.from_numpy(rng.integers(0, 9, (7, 5)))
    targets[:3, :2] = PAD  # rows with fewer targets: shards carry unequal loss terms
    batch = SeqBatch(torch.arange(7), targets.clone(), targets, torch.arange(4))
    shards = [split_seq_batch(batch, r, 3) for r in range(3)]
    assert torch.cat([s.batch.users for s in shards]).tolist() == list(range(7))
    assert all(torch.equal(s.batch.negatives, batch.negatives) for s in shards)  # shared (S,)
    terms = [int((s.batch.targets != PAD).sum()) for s in shards]
    assert sum(s.scale for s in shards) == pytest.approx(3.0)
    assert [s.scale for s in shards] == pytest.approx([3 * t / sum(terms) for t in terms])
    assert terms[0] < terms[2]
    # fewer rows than ranks: the rank without rows computes on row 0 with weight 0
    tiny = SeqBatch(batch.users[:1], batch.items[:1], batch.targets[:1])
    assert [split_seq_batch(tiny, r, 2).scale for r in range(2)] == [0.0, 2.0]
    assert distributed.shard_rows(10, 1, 4) == (slice(2, 5), True)


def test_without_torchrun_nothing_is_distributed(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    model = build_seqrec(SPEC, _dataset(), NO_TEXT)
    with distributed.session("cpu") as here:
        assert here == distributed.SINGLE and here.is_main() and not dist.is_initialized()
        assert distributed.loss_function(model, torch.device("cpu")) == model.loss
        assert distributed.from_main(0.25, 3.0) == (0.25, 3.0)
        assert distributed.mean_over_ranks(0.5) == 0.5
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    assert distributed.from_env(env) == distributed.Dist(1, 2, 1)
    assert distributed.Dist(1, 2, 1).device(torch.device("cuda")) == torch.device("cuda", 1)
    with pytest.raises(Exception, match="RANK=2 WORLD_SIZE=2"):
        distributed.from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_nproc_relaunches_the_same_command_under_torchrun(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from metarec.cli import app

    argv = ["--threads", "1", "pretrain", "--data", "d.csv", "--nproc", "2", "--out", "m"]
    expected = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    expected += ["--nproc_per_node=2", "-m", "metarec", "--threads", "1", "pretrain"]
    expected += ["--data", "d.csv", "--out", "m"]
    assert distributed.torchrun_command(2, argv) == expected
    assert distributed.torchrun_command(2, [*argv[:5], "--nproc=2", *argv[7:]]) == expected

    calls = []
    monkeypatch.setattr(distributed.subprocess, "call", lambda cmd: calls.append(cmd) or 3)
    monkeypatch.setattr(sys, "argv", ["metarec", *argv])
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, argv)
    assert calls == [expected]
    assert result.exit_code == 3  # torchrun's exit status comes back
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(app, argv)
    assert result.exit_code != 0 and len(calls) == 1  # no torchrun inside torchrun
