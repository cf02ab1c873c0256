"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` + DistributedDataParallel,
launched by ``torchrun`` (gloo on CPU, nccl on CUDA).

``session(device)`` reads the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK), starts the
process group and tears it down; without that environment it does nothing, so a plain run is
exactly the single-process run. The training loop asks ``current()`` which rank it is; every
helper here is a no-op on a world of one. ``torchrun_command`` is what ``metarec pretrain
--nproc N`` re-launches itself as.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from metarec.errors import ConfigError
from metarec.training.devices import resolve_device


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank ``rank`` of ``world`` (``local_rank`` on this machine)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, reports and progress bars."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The device of this rank: ``cuda`` (or any cuda:N) becomes cuda:LOCAL_RANK."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device


SINGLE = Dist()


def from_env(env: dict[str, str] | None = None) -> Dist:
    """The torchrun environment as a ``Dist`` (a world of one without it)."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise ConfigError(f"invalid torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {e}") from e
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"invalid torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return Dist(rank, world, local)


def current() -> Dist:
    """This process's place in the initialised process group (a world of one when there is
    none): what the training loop reads, so that it needs no extra argument."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return Dist(dist.get_rank(), dist.get_world_size(), from_env().local_rank)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def session(device_name: str = "auto") -> Iterator[Dist]:
    """Start the process group when launched by torchrun with WORLD_SIZE > 1 (init from the
    environment's MASTER_ADDR / MASTER_PORT), and destroy it at the end; else a no-op."""
    env = from_env()
    if not env.enabled or dist.is_initialized():
        yield current()
        return
    device = env.device(resolve_device(device_name))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), rank=env.rank, world_size=env.world)
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if current().enabled:
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (say, filling a disk cache), the others after it."""
    here = current()
    if here.enabled and not here.is_main():
        dist.barrier()
    yield
    if here.enabled and here.is_main():
        dist.barrier()


def from_main(*values: float) -> tuple[float, ...]:
    """Rank 0's ``values`` on every rank (float64 broadcast), so that decisions taken on them
    (early stopping, time budget) are the same everywhere."""
    here = current()
    if not here.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.broadcast(t, src=0)
    return tuple(t.tolist())


def mean_over_ranks(value: float) -> float:
    """The mean of ``value`` over the ranks (all-reduce)."""
    here = current()
    if not here.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.item() / here.world


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if _nccl() else torch.device("cpu")


def _nccl() -> bool:
    return dist.get_backend() == "nccl"


class LossForward(nn.Module):
    """``model.loss`` as a forward pass, so that DistributedDataParallel sees the call (its
    forward prepares the gradient all-reduce of the backward that follows)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.model.loss(batch)


def loss_function(model: nn.Module, device: torch.device) -> Callable[[Any], torch.Tensor]:
    """``model.loss`` itself on a world of one; else through DDP, which averages the gradients
    over the ranks in the backward pass. Buffers (the frozen text table) are not re-broadcast
    each step: nothing trains them; DDP copies rank 0's parameters and buffers once here."""
    if not current().enabled:
        return model.loss
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(LossForward(model), device_ids=ids, forward_sync_buffers=False)


@dataclass(frozen=True)
class Shard:
    """This rank's rows of a global batch and the factor on their mean loss: ``world *
    terms_here / terms_total``. DDP averages gradients over the ranks, so the factor makes the
    step that of the mean loss over the whole global batch, however its loss terms (positions
    with a target) fall across the ranks."""

    batch: Any
    scale: float


def shard_rows(n: int, rank: int, world: int) -> tuple[slice, bool]:
    """Rank ``rank``'s contiguous, disjoint block of ``n`` rows (sizes differ by at most one);
    with fewer rows than ranks a rank that has none gets row 0 and ``False`` (weight it 0)."""
    start, stop = rank * n // world, (rank + 1) * n // world
    if start == stop:
        return slice(0, 1), False
    return slice(start, stop), True


def torchrun_command(nproc: int, argv: Sequence[str], python: str | None = None) -> list[str]:
    """The command that runs ``python -m metarec ARGV`` in ``nproc`` processes under torchrun
    (``--standalone``: one machine, a free rendezvous port); ARGV without its ``--nproc``."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer, got {nproc}")
    return [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "metarec",
        *strip_option(argv, "--nproc"),
    ]


def strip_option(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def relaunch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``torchrun_command`` and return its exit status; refused inside a torchrun run."""
    if from_env().enabled:
        raise ConfigError("--nproc is for launching; this process already runs under torchrun")
    return subprocess.call(torchrun_command(nproc, argv))
