"""Meta-learners by name, and their state.

``LEARNERS`` maps an algorithm name to its entry: the config class, how to build its default
config, and the builder ``(model, policy, config, outer_opt) -> Learner``. Adding a meta-learner
is one module (its config dataclass and builder) and one line here; ``LearnerSpec``, the CLI's
``--algorithm``, TOML configs and meta checkpoints all read the registry. Every config defaults
to the validated inner loop (``meta.core.INNER_LR`` / ``INNER_STEPS`` / ``OUTER_LR``).

A ``LearnerSpec`` (algorithm name + fast-parameter policy + the algorithm's config) builds a
learner for a model (``build_learner``) and is what a meta checkpoint stores (``to_dict`` /
``from_dict``). ``learner_state`` / ``load_learner_state`` snapshot and restore everything a
learner meta-learns: the model's weights and the learner-owned tensors (``meta_tensors``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from metarec.adapt.policies import FastPolicy, PolicyConfig, make_policy
from metarec.meta.core import Learner, OuterFactory
from metarec.meta.learned_optim import LearnedOptimConfig, learned_optim
from metarec.meta.maml import MAMLConfig, maml
from metarec.meta.meta_sgd import MetaSGDConfig, meta_sgd
from metarec.meta.reptile import Reptile, ReptileConfig

Builder = Callable[[nn.Module, FastPolicy, Any, OuterFactory | None], Learner]


@dataclass(frozen=True)
class LearnerEntry:
    """One registered meta-learner. ``defaults``: keyword overrides of the config class's own
    defaults (``fomaml``: first order). ``policies``: the policies it accepts (None: any)."""

    config_class: type
    build: Builder
    defaults: dict[str, Any] = field(default_factory=dict)
    policies: tuple[str, ...] | None = None

    def default_config(self) -> Any:
        return self.config_class(**self.defaults)


def _maml(model, policy, config, outer_opt):
    return maml(model, policy, config, outer_opt=outer_opt)


def _reptile(model, policy, config, outer_opt):
    return Reptile(model, policy, config, outer_opt=outer_opt)


def _meta_sgd(model, policy, config, outer_opt):
    return meta_sgd(model, policy, config, outer_opt=outer_opt)


def _learned_optim(model, policy, config, outer_opt):
    return learned_optim(model, policy, config, outer_opt=outer_opt)


# name -> entry; a new meta-learner is one module and one line here
LEARNERS: dict[str, LearnerEntry] = {
    "maml": LearnerEntry(MAMLConfig, _maml, {"first_order": False}),
    "fomaml": LearnerEntry(MAMLConfig, _maml, {"first_order": True}),
    "reptile": LearnerEntry(ReptileConfig, _reptile),
    "meta-sgd": LearnerEntry(MetaSGDConfig, _meta_sgd),
    # ANIL: MAML whose inner loop moves only the head (Raghu et al., 2020)
    "anil": LearnerEntry(MAMLConfig, _maml, {"first_order": False}, policies=("head",)),
    "learned-optim": LearnerEntry(LearnedOptimConfig, _learned_optim),
}


def algorithms() -> tuple[str, ...]:
    """The registered algorithm names, in registry order."""
    return tuple(LEARNERS)


def entry(algorithm: str) -> LearnerEntry:
    if algorithm not in LEARNERS:
        raise ValueError(f"algorithm must be one of {algorithms()}, got {algorithm!r}")
    return LEARNERS[algorithm]


def accepted_policy(algorithm: str, policy: PolicyConfig) -> PolicyConfig:
    """``policy`` where the algorithm accepts it, else the first policy it does (``anil``: the
    head), so that a run over every algorithm with one ``--policy`` never stops half way."""
    allowed = entry(algorithm).policies
    if allowed is None or policy.name in allowed:
        return policy
    return PolicyConfig(allowed[0])


def default_config(algorithm: str) -> Any:
    """The algorithm's config with the product's defaults (first-order for ``fomaml``)."""
    return entry(algorithm).default_config()


@dataclass(frozen=True)
class LearnerSpec:
    """``config`` is the algorithm's config dataclass (None: its defaults). ``anil`` takes the
    ``head`` policy only; ``fomaml`` is MAML with ``first_order=True`` and ``maml`` without."""

    algorithm: str = "maml"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    config: Any = None

    def __post_init__(self) -> None:
        spec = entry(self.algorithm)
        if self.config is None:
            object.__setattr__(self, "config", spec.default_config())
        cls = spec.config_class
        if type(self.config) is not cls:
            raise ValueError(f"{self.algorithm} takes a {cls.__name__}, got {self.config!r}")
        for key, value in spec.defaults.items():  # what defines the algorithm (fomaml: first order)
            got = getattr(self.config, key)
            if got != value:
                other = [n for n, e in LEARNERS.items() if e.defaults.get(key, value) == got]
                hint = f"; {key}={got!r} is algorithm {other[0]!r}" if other else ""
                raise ValueError(f"{self.algorithm} needs {key}={value!r}{hint}")
        if spec.policies is not None and self.policy.name not in spec.policies:
            raise ValueError(
                f"{self.algorithm} adapts the {' or '.join(spec.policies)} only: policy must "
                f"be {' or '.join(map(repr, spec.policies))}, not {self.policy.name!r}"
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
        policy = _dataclass_from(PolicyConfig, data["policy"])
        config = _dataclass_from(entry(algorithm).config_class, data["config"])
        return cls(algorithm, policy, config)


def build_learner(
    model: nn.Module, spec: LearnerSpec, outer_opt: OuterFactory | None = None
) -> Learner:
    """The learner ``spec`` names, over ``model``."""
    return entry(spec.algorithm).build(
        model, make_policy(spec.policy, model), spec.config, outer_opt
    )


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
