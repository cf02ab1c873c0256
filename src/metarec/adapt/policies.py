"""Fast-parameter policies: which tensors move in the inner loop, and how they enter the model.

A policy never touches the model. ``init_fast`` returns the tensors the inner loop adapts (the
"fast parameters") and ``effective_params`` turns them into the full parameter dict that is passed
to ``torch.func.functional_call``. So every policy works with every meta-learner and every model
whose parameters it can name.

- ``all``: every parameter.
- ``head``: the model's declared head (``adaptation_surfaces().head``; SeqRec: the last transformer
  block and final LayerNorm); for a model that declares none, the parameters of the last module
  that owns any.
- ``bias``: every parameter whose name ends in ``bias`` plus every LayerNorm/RMSNorm parameter.
- ``lora``: rank-r matrices A (r, in) and B (out, r) per chosen ``nn.Linear``; the effective weight
  is ``W + (alpha / r) * B @ A`` (default targets: the model's declared ``lora`` surface; SeqRec:
  attention qkv/out and both feed-forward layers). B starts at zero, so an unadapted LoRA leaves
  the model's output unchanged.
- ``user-embedding``: one vector u (D,) per user, added to the model's declared ``user_vector``
  parameter(s). For SeqRec that is the bias of the final LayerNorm, which shifts every hidden
  state (the user vector at each position) by u and leaves item vectors alone; for BPR every row
  of the user table (a task holds one user).

Policies are found by name in ``POLICIES`` (name -> builder): a new policy is one class and one
line there. ``DEFAULT_POLICY`` and the LoRA rank / alpha are the product's defaults, here once.

For ``all``, ``head`` and ``bias`` the initial fast parameters are the model's own Parameter
objects (not copies), so a meta-gradient through them reaches the model; nothing writes into them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol

import torch
from torch import nn

from metarec.models.surfaces import AdaptationSurfaces

# the product's fast-parameter policy: fast enough for request-time adaptation, and the one
# coldstart-ml validated for every meta-learner (bench/README.md, 2026-12-03)
DEFAULT_POLICY = "head"
# LoRA's rank and alpha everywhere LoRA is applied (this policy and LoRA fine-tuning): the
# transfer-scientific setting where LoRA reached 97% of full fine-tuning (2026-12-03)
LORA_RANK = 4
LORA_ALPHA = 16.0
USER_VECTOR = "user_vector"  # the one fast tensor of the user-embedding policy

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PolicyConfig:
    """A policy is a name plus options.

    ``targets`` are ``fnmatch`` patterns over parameter or module names (a pattern matches a name
    or any of its dotted prefixes: ``"norm"`` matches ``norm.weight``); ``()`` means the policy's
    default for the model. Used by ``head``, ``lora`` and ``user-embedding``.
    """

    name: str = DEFAULT_POLICY
    rank: int = LORA_RANK  # lora
    alpha: float = LORA_ALPHA  # lora: delta = (alpha / rank) * B @ A
    targets: tuple[str, ...] = ()
    seed: int = 0  # lora: initialisation of A

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"policy must be one of {tuple(POLICIES)}, got {self.name!r}")
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"lora rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"lora alpha must be > 0, got {self.alpha}")
        if not isinstance(self.targets, tuple) or not all(
            isinstance(t, str) and t for t in self.targets
        ):
            raise ValueError(f"targets must be a tuple of non-empty patterns, got {self.targets!r}")
        if self.targets and self.name in ("all", "bias"):
            raise ValueError(f"policy {self.name!r} takes no targets, got {self.targets}")


class FastPolicy(Protocol):
    """What the inner loop needs from a policy.

    ``touched`` names the model parameters whose effective value can differ from the model's own.
    """

    name: str
    touched: tuple[str, ...]

    def init_fast(self, model: nn.Module) -> Params: ...

    def effective_params(self, model: nn.Module, fast: Params) -> Params: ...

    def describe(self) -> dict[str, int | str]: ...


def make_policy(config: PolicyConfig, model: nn.Module) -> FastPolicy:
    """Resolve a policy against a model's parameter names (errors are raised here, eagerly)."""
    return POLICIES[config.name](config, model)


def surfaces(model: nn.Module) -> AdaptationSurfaces:
    """The adaptation surfaces ``model`` declares (none declared: an empty set)."""
    declare = getattr(model, "adaptation_surfaces", None)
    return declare() if callable(declare) else AdaptationSurfaces()


def _subset_policy(config: PolicyConfig, model: nn.Module) -> SubsetPolicy:
    names = _subset_names(config, model)
    if not names:
        raise ValueError(f"policy {config.name!r} selects no parameter of {type(model).__name__}")
    return SubsetPolicy(config.name, model, names)


class SubsetPolicy:
    """Fast parameters are a subset of the model's own parameters (``all``, ``head``, ``bias``)."""

    def __init__(self, name: str, model: nn.Module, names: tuple[str, ...]):
        params = dict(model.named_parameters())
        self.name = name
        self.touched = names
        self._numel = sum(params[n].numel() for n in names)

    def init_fast(self, model: nn.Module) -> Params:
        params = dict(model.named_parameters())
        return {n: _leaf(params[n]) for n in self.touched}

    def effective_params(self, model: nn.Module, fast: Params) -> Params:
        _check_keys(self.name, fast, self.touched)
        return {**dict(model.named_parameters()), **fast}

    def describe(self) -> dict[str, int | str]:
        return {"policy": self.name, "tensors": len(self.touched), "parameters": self._numel}


class LoraPolicy:
    """Low-rank deltas on chosen ``nn.Linear`` weights, applied functionally (nothing wrapped)."""

    name = "lora"

    def __init__(self, config: PolicyConfig, model: nn.Module):
        patterns = config.targets or surfaces(model).lora or ("*",)
        self.layers = {  # module name -> (out_features, in_features)
            name: (mod.out_features, mod.in_features)
            for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and _matches(name, patterns)
        }
        if not self.layers:
            raise ValueError(
                f"lora targets {patterns} match no nn.Linear layer of {type(model).__name__}"
            )
        self.rank, self.seed = config.rank, config.seed
        self.scale = config.alpha / config.rank
        self.touched = tuple(f"{n}.weight" for n in self.layers)

    def init_fast(self, model: nn.Module) -> Params:
        """A (r, in) uniform in +-1/sqrt(in) (as peft's kaiming init), B (out, r) zero."""
        gen = torch.Generator().manual_seed(self.seed)
        weights = dict(model.named_parameters())
        fast = {}
        for name, (n_out, n_in) in self.layers.items():
            w = weights[f"{name}.weight"]
            u = torch.rand(self.rank, n_in, generator=gen, dtype=w.dtype)  # (r, in)
            a = (2 * u - 1) / math.sqrt(n_in)
            fast[f"{name}.lora_A"] = a.to(w.device).requires_grad_()
            fast[f"{name}.lora_B"] = w.new_zeros(n_out, self.rank).requires_grad_()
        return fast

    def effective_params(self, model: nn.Module, fast: Params) -> Params:
        _check_keys(self.name, fast, [f"{n}.lora_{ab}" for n in self.layers for ab in "AB"])
        params = dict(model.named_parameters())
        for name in self.layers:
            delta = fast[f"{name}.lora_B"] @ fast[f"{name}.lora_A"]  # (out, in)
            params[f"{name}.weight"] = params[f"{name}.weight"] + self.scale * delta
        return params

    def describe(self) -> dict[str, int | str]:
        n = sum(self.rank * (o + i) for o, i in self.layers.values())
        return {"policy": self.name, "tensors": 2 * len(self.layers), "parameters": n}


class UserEmbeddingPolicy:
    """One vector u (D,) broadcast-added to the parameter(s) that form the user representation."""

    name = "user-embedding"

    def __init__(self, config: PolicyConfig, model: nn.Module):
        patterns = config.targets or _default_user_targets(model)
        params = dict(model.named_parameters())
        self.touched = tuple(n for n in params if _matches(n, patterns))
        if not self.touched:
            raise ValueError(f"user-embedding targets {patterns} match no parameter")
        widths = {params[n].shape[-1] for n in self.touched}
        if len(widths) != 1:
            raise ValueError(f"user-embedding targets {self.touched} differ in last dimension")
        self.dim = widths.pop()

    def init_fast(self, model: nn.Module) -> Params:
        ref = dict(model.named_parameters())[self.touched[0]]
        return {USER_VECTOR: ref.new_zeros(self.dim).requires_grad_()}

    def effective_params(self, model: nn.Module, fast: Params) -> Params:
        _check_keys(self.name, fast, [USER_VECTOR])
        params = dict(model.named_parameters())
        for n in self.touched:
            params[n] = params[n] + fast[USER_VECTOR]  # broadcast over leading dims
        return params

    def describe(self) -> dict[str, int | str]:
        return {"policy": self.name, "tensors": 1, "parameters": self.dim}


def _subset_names(config: PolicyConfig, model: nn.Module) -> tuple[str, ...]:
    names = [n for n, _ in model.named_parameters()]
    if config.name == "all":
        return tuple(names)
    if config.name == "bias":
        norms = (nn.LayerNorm, nn.RMSNorm)
        picked = {
            f"{mod_name}.{p}" if mod_name else p
            for mod_name, mod in model.named_modules()
            for p, _ in mod.named_parameters(recurse=False)
            if p.endswith("bias") or isinstance(mod, norms)
        }
        return tuple(n for n in names if n in picked)
    patterns = config.targets or _default_head(model)
    return tuple(n for n in names if _matches(n, patterns))


def _default_head(model: nn.Module) -> tuple[str, ...]:
    if declared := surfaces(model).head:
        return declared
    owners = [
        (name, mod)
        for name, mod in model.named_modules()
        if next(mod.parameters(recurse=False), None) is not None
    ]
    if not owners:
        return ()
    name, mod = owners[-1]
    return tuple(f"{name}.{p}" if name else p for p, _ in mod.named_parameters(recurse=False))


def _default_user_targets(model: nn.Module) -> tuple[str, ...]:
    if declared := surfaces(model).user_vector:
        return declared
    raise ValueError(
        f"policy 'user-embedding' has no default target for {type(model).__name__}; "
        "set targets to the parameter(s) the user vector is added to"
    )


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """True when a pattern matches ``name`` or one of its dotted prefixes."""
    parts = name.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatchcase(p, pat) for p in prefixes for pat in patterns)


def _leaf(p: torch.Tensor) -> torch.Tensor:
    """The model's own tensor when it is trainable; a trainable detached copy when frozen."""
    return p if p.requires_grad else p.detach().requires_grad_()


def _check_keys(policy: str, fast: Params, expected: Iterable[str]) -> None:
    expected = set(expected)
    if set(fast) != expected:
        missing, extra = sorted(expected - set(fast)), sorted(set(fast) - expected)
        raise ValueError(
            f"fast parameters do not fit policy {policy!r}: missing {missing}, unexpected {extra}"
        )


# name -> builder(config, model); a new policy is one class and one line here
POLICIES: dict[str, Callable[[PolicyConfig, nn.Module], FastPolicy]] = {
    "all": _subset_policy,
    "head": _subset_policy,
    "bias": _subset_policy,
    "lora": LoraPolicy,
    "user-embedding": UserEmbeddingPolicy,
}
