"""Meta-learners by name, and their state.

A ``LearnerSpec`` (algorithm name + fast-parameter policy + the algorithm's config) builds a
learner for a model (``build_learner``) and is what a meta checkpoint stores (``to_dict`` /
``from_dict``). ``learner_state`` / ``load_learner_state`` snapshot and restore everything a
learner meta-learns: the model's weights and the learner-owned tensors (``meta_tensors``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from metarec.adapt.policies import PolicyConfig, make_policy
from metarec.meta.core import MetaLearner, OuterFactory
from metarec.meta.learned_optim import LearnedOptimConfig, learned_optim
from metarec.meta.maml import MAMLConfig, maml
from metarec.meta.meta_sgd import MetaSGDConfig, meta_sgd
from metarec.meta.reptile import Reptile, ReptileConfig

ALGORITHMS = ("maml", "fomaml", "reptile", "meta-sgd", "anil", "learned-optim")
CONFIG_CLASSES: dict[str, type] = {
    "maml": MAMLConfig,
    "fomaml": MAMLConfig,
    "reptile": ReptileConfig,
    "meta-sgd": MetaSGDConfig,
    "anil": MAMLConfig,
    "learned-optim": LearnedOptimConfig,
}
Learner = MetaLearner | Reptile


def default_config(algorithm: str) -> Any:
    """The algorithm's config with its defaults (first-order for ``fomaml``)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    cls = CONFIG_CLASSES[algorithm]
    return cls(first_order=True) if algorithm == "fomaml" else cls()


@dataclass(frozen=True)
class LearnerSpec:
    """``config`` is the algorithm's config dataclass (None: its defaults). ``anil`` takes the
    ``head`` policy only; ``fomaml`` is MAML with ``first_order=True`` and ``maml`` without."""

    algorithm: str = "maml"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    config: Any = None

    def __post_init__(self) -> None:
        if self.config is None:
            object.__setattr__(self, "config", default_config(self.algorithm))
        elif self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        cls = CONFIG_CLASSES[self.algorithm]
        if type(self.config) is not cls:
            raise ValueError(f"{self.algorithm} takes a {cls.__name__}, got {self.config!r}")
        if self.algorithm in ("maml", "fomaml") and self.config.first_order != (
            self.algorithm == "fomaml"
        ):
            raise ValueError("first_order=True is the 'fomaml' algorithm, False is 'maml'")
        if self.algorithm == "anil" and self.policy.name != "head":
            raise ValueError(
                f"anil adapts the head only: policy must be 'head', not {self.policy.name!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "policy": asdict(self.policy),
            "config": asdict(self.config),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LearnerSpec:
        """Inverse of ``to_dict``; ValueError / TypeError name what does not fit."""
        if not isinstance(data, dict) or set(data) != {"algorithm", "policy", "config"}:
            raise ValueError("a learner spec holds exactly algorithm, policy and config")
        algorithm = data["algorithm"]
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        policy = _dataclass_from(PolicyConfig, data["policy"])
        config = _dataclass_from(CONFIG_CLASSES[algorithm], data["config"])
        return cls(algorithm, policy, config)


def build_learner(model: nn.Module, spec: LearnerSpec, outer_opt: OuterFactory | None = None):
    """The learner ``spec`` names, over ``model`` (``MetaLearner``, or ``Reptile``)."""
    policy = make_policy(spec.policy, model)
    if spec.algorithm in ("maml", "fomaml", "anil"):
        return maml(model, policy, spec.config, outer_opt=outer_opt)
    if spec.algorithm == "reptile":
        return Reptile(model, policy, spec.config, outer_opt=outer_opt)
    if spec.algorithm == "meta-sgd":
        return meta_sgd(model, policy, spec.config, outer_opt=outer_opt)
    return learned_optim(model, policy, spec.config, outer_opt=outer_opt)


def live_meta_tensors(learner: Learner) -> dict[str, torch.Tensor]:
    """The learner-owned meta-learned tensors themselves (not copies), keyed as
    ``learner.meta_tensors()``: ``start.<name>`` and ``hyper.<name>``."""
    own = {id(p) for p in learner.model.parameters()}
    out = {f"start.{k}": v for k, v in learner.start.items() if id(v) not in own}
    rule = getattr(learner, "rule", None)
    if rule is not None:
        out.update({f"hyper.{k}": v for k, v in rule.tensors().items()})
    return out


def learner_state(learner: Learner) -> dict[str, torch.Tensor]:
    """A copy of all a learner meta-learns: ``model.<k>`` (state dict) and ``meta.<k>``."""
    state = {f"model.{k}": v.detach().clone() for k, v in learner.model.state_dict().items()}
    state.update({f"meta.{k}": v.detach().clone() for k, v in live_meta_tensors(learner).items()})
    return state


def load_learner_state(learner: Learner, state: dict[str, torch.Tensor]) -> None:
    """Write ``state`` (from ``learner_state``) back into the learner, in place."""
    model = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    learner.model.load_state_dict(model)
    live = live_meta_tensors(learner)
    meta = {k[len("meta.") :]: v for k, v in state.items() if k.startswith("meta.")}
    if set(meta) != set(live):
        raise ValueError(f"meta tensors {sorted(meta)} do not fit the learner's {sorted(live)}")
    with torch.no_grad():
        for k, t in live.items():
            t.copy_(meta[k])


def _dataclass_from(cls: type, values: Any) -> Any:
    """``cls(**values)`` with JSON lists turned back into tuples; unknown keys are refused."""
    if not isinstance(values, dict):
        raise ValueError(f"{cls.__name__} must be an object, got {values!r}")
    known = {f.name for f in fields(cls)}
    if unknown := sorted(set(values) - known):
        raise ValueError(f"{cls.__name__} has no field {unknown[0]!r}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
