"""ANIL ("almost no inner loop"): MAML whose inner loop moves only the head.

It is exactly ``maml`` with the ``head`` policy (SeqRec: last transformer block and final
LayerNorm) and ``meta_learn="all"``: the body is learned by the outer loop only, the head's start
by the outer loop and its per-task value by the inner loop.
"""

from __future__ import annotations

from torch import nn

from metarec.adapt.policies import PolicyConfig, make_policy
from metarec.meta.core import MetaLearner, OuterFactory
from metarec.meta.inner_optim import InnerOptimizer
from metarec.meta.maml import MAMLConfig, maml


def anil(
    model: nn.Module,
    config: MAMLConfig | None = None,
    head: tuple[str, ...] = (),
    inner_opt: InnerOptimizer | None = None,
    outer_opt: OuterFactory | None = None,
) -> MetaLearner:
    """``head``: name patterns of the head (``()``: the model's default head)."""
    policy = make_policy(PolicyConfig("head", targets=head), model)
    return maml(model, policy, config, inner_opt=inner_opt, outer_opt=outer_opt)
