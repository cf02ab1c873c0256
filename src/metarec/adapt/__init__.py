"""Adaptation: which parameters move (fast-parameter policies) and how they enter the model."""

from __future__ import annotations

from metarec.adapt.policies import (
    POLICIES,
    USER_VECTOR,
    FastPolicy,
    LoraPolicy,
    PolicyConfig,
    SubsetPolicy,
    UserEmbeddingPolicy,
    make_policy,
)

__all__ = [
    "POLICIES",
    "USER_VECTOR",
    "FastPolicy",
    "LoraPolicy",
    "PolicyConfig",
    "SubsetPolicy",
    "UserEmbeddingPolicy",
    "make_policy",
]
