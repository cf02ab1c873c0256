"""Bottleneck adapters (Houlsby et al., 2019) attached to a SeqRec's transformer blocks.

``peft`` has no bottleneck adapter for custom modules, so this is the one tuner metarec carries
itself. Each block gets a residual ``x + up(gelu(down(x)))`` on its output, as a child module
named ``adapter`` and a forward hook; ``up`` starts at zero, so an untrained adapter leaves the
model's output unchanged. The model class is untouched: the adapter lives in the module tree
(so it is in ``state_dict`` and survives ``copy.deepcopy``) and acts through the hook.
"""

from __future__ import annotations

import torch
from torch import nn

from metarec.errors import ConfigError
from metarec.models.seqrec import SeqRec

ADAPTER = "adapter"


class BottleneckAdapter(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.nn.functional.gelu(self.down(x)))  # (B, T, D)


def _apply_adapter(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return getattr(module, ADAPTER)(output)


def attach_adapters(model: SeqRec, hidden: int) -> list[str]:
    """Give every block of ``model`` a bottleneck adapter of width ``hidden`` (in place);
    returns the names of the new parameters."""
    if hidden < 1:
        raise ConfigError(f"adapter width must be a positive integer, got {hidden}")
    names = []
    for i, block in enumerate(model.blocks):
        if hasattr(block, ADAPTER):
            raise ConfigError(f"block {i} already has an adapter")
        ref = next(block.parameters())
        adapter = BottleneckAdapter(model.config.dim, hidden).to(ref.device, ref.dtype)
        block.add_module(ADAPTER, adapter)
        block.register_forward_hook(_apply_adapter)
        names += [f"blocks.{i}.{ADAPTER}.{n}" for n, _ in adapter.named_parameters()]
    return names
