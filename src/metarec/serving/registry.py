"""Served model versions: loading, the active version, atomic hot swap and rollback.

A version is named by the first 16 hex digits of its weights' sha256 (the checkpoint's
content-addressed weights file), so the same weights are the same version wherever they lie.
The folders are given when the service starts; requests name versions only, never paths.

A meta checkpoint (``metarec meta-train``) adapts with its meta-learned learner; a plain
pretrained checkpoint with a default fine-tuning bundle (head policy, a few SGD steps).
Activation loads the new version first and then replaces one reference, so a request either
sees the old version or the new one, never a half-loaded model; the previous version stays
loaded for rollback.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from metarec.adapt.policies import PolicyConfig, make_policy
from metarec.errors import CheckpointError, ConfigError
from metarec.meta.checkpoint import META_CONFIG, load_meta_checkpoint
from metarec.meta.inference import PolicyBundle
from metarec.meta.inner_optim import sgd
from metarec.meta.learners import Learner
from metarec.training.checkpoint import CONFIG, Checkpoint, load_checkpoint, read_json

DEFAULT_STEPS, DEFAULT_LR = 3, 0.05  # adaptation of a checkpoint without a meta-learner


@dataclass(eq=False)
class ServedModel:
    version: str
    path: Path
    checkpoint: Checkpoint
    adapter: Learner | PolicyBundle
    item_text: list[str]
    item_index: dict[str, int]
    loaded_at: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one model call at a time

    @property
    def max_len(self) -> int:
        return int(self.checkpoint.model.config.max_len)

    @property
    def kind(self) -> str:
        return "meta" if not isinstance(self.adapter, PolicyBundle) else "pretrained"


def checkpoint_version(path: Path) -> str:
    """The version name of a checkpoint folder, from its config.json (no weights loaded)."""
    config = read_json(path / CONFIG, "checkpoint config")
    sha = config.get("weights_sha256")
    if not isinstance(sha, str) or len(sha) < 16:
        raise CheckpointError(f"{path / CONFIG}: no weights_sha256; not a metarec checkpoint")
    return sha[:16]


def load_served_model(path: str | Path) -> ServedModel:
    """Load a checkpoint folder for serving; CheckpointError names what is wrong."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise CheckpointError(f"{path}: no {CONFIG}; not a metarec checkpoint folder")
    if (path / META_CONFIG).is_file():
        mc = load_meta_checkpoint(path)
        ckpt, adapter, text = mc.checkpoint, mc.learner, mc.item_text
    else:
        ckpt = load_checkpoint(path)
        if ckpt.model_type != "seqrec":
            raise CheckpointError(
                f"{path} holds a {ckpt.model_type} model; the service needs a seqrec checkpoint"
            )
        policy = make_policy(PolicyConfig("head"), ckpt.model)
        adapter, text = PolicyBundle(policy, sgd(DEFAULT_LR), DEFAULT_STEPS), None
    text = text or [""] * len(ckpt.items)
    index = {raw: i for i, raw in enumerate(ckpt.items)}
    return ServedModel(checkpoint_version(path), path, ckpt, adapter, text, index)


class ModelRegistry:
    """The versions a service may serve, the active one and the one before it."""

    def __init__(self, paths: list[Path], active: str | None = None):
        if not paths:
            raise ConfigError("the service needs at least one model checkpoint")
        self._paths: dict[str, Path] = {}
        for p in paths:
            self._paths.setdefault(checkpoint_version(Path(p)), Path(p))
        self._loaded: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        first = active or checkpoint_version(Path(paths[0]))
        self._active = self._load(first)
        self._previous: str | None = None

    def _load(self, version: str) -> ServedModel:
        if version not in self._paths:
            raise KeyError(version)
        model = self._loaded.get(version)
        if model is None:
            model = load_served_model(self._paths[version])
            self._loaded[version] = model
        return model

    @property
    def active(self) -> ServedModel:
        return self._active  # one reference read: a request holds whichever version it got

    @property
    def previous(self) -> str | None:
        return self._previous

    def versions(self) -> list[dict]:
        return [
            {
                "version": v,
                "active": v == self._active.version,
                "loaded": v in self._loaded,
                "previous": v == self._previous,
            }
            for v in self._paths
        ]

    def activate(self, version: str) -> ServedModel:
        """Make ``version`` active (KeyError if unknown); loading happens before the swap."""
        with self._lock:
            model = self._load(version)
            if model is not self._active:
                self._previous, self._active = self._active.version, model
            return model

    def rollback(self) -> ServedModel:
        """Back to the version active before the last activation (LookupError if none)."""
        with self._lock:
            if self._previous is None:
                raise LookupError("no previous version to roll back to")
            model = self._load(self._previous)
            self._previous, self._active = self._active.version, model
            return model
