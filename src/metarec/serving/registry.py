"""Served model versions: loading, the active version, atomic hot swap and rollback.

A version is named by the first 16 hex digits of its weights' sha256 (the checkpoint's
content-addressed weights file), so the same weights are the same version wherever they lie.
The folders are given when the service starts; requests name versions only, never paths.

A meta checkpoint (``metarec meta-train``) adapts as meta-train chose on held-out users
(``meta.choice``): not at all (the base model's ranking), by plain fine-tuning at the chosen rate,
or with its meta-learner (also what a checkpoint without a recorded choice does); a plain
pretrained checkpoint with a default fine-tuning bundle (head policy, a few SGD steps);
``adaptation_of`` says which, per version, for ``GET /models``. A ``like-head/`` folder inside
the checkpoint (``metarec like fit``) is loaded with it and checked against its weights; the
service then answers ``p_like`` beside each recommendation.
Activation loads the new version first and then replaces one reference, so a request either
sees the old version or the new one, never a half-loaded model; the previous version stays
loaded for rollback.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from metarec.errors import CheckpointError, ConfigError
from metarec.evaluation.retrieval import IndexConfig, ItemIndex
from metarec.like.fit import ItemSpace
from metarec.like.workflow import HEAD_DIR, LikeModel, load_like_head
from metarec.meta.checkpoint import META_CONFIG, load_meta_checkpoint, stored_adaptation
from metarec.meta.choice import Choice
from metarec.meta.inference import PolicyBundle, chosen_adapter, default_bundle
from metarec.meta.learners import Learner, LearnerSpec, build_learner, live_meta_tensors
from metarec.models.seqrec import with_new_items
from metarec.training.checkpoint import (
    CONFIG,
    Checkpoint,
    load_checkpoint,
    read_item_text,
    read_json,
)

Encoder = Callable[["ServedModel", list[str]], torch.Tensor]  # (model, texts) -> (M, T)
DEFAULT_ADAPTATION = "default"  # a plain checkpoint's: meta.inference.default_bundle


@dataclass(eq=False)
class ServedModel:
    version: str
    path: Path
    checkpoint: Checkpoint
    adapter: Learner | PolicyBundle | None  # None: the choice was no adaptation
    item_text: list[str]
    item_index: dict[str, int]
    spec: LearnerSpec | None = None  # the meta-learner's (None: the default fine-tuning)
    choice: Choice | None = None  # what meta-train chose (None: none recorded)
    added: int = 0  # items added after training (scored from their text)
    like: LikeModel | None = None  # the like head in <checkpoint>/like-head, if there is one
    # the like head's item features over this version's catalogue, built at the first p_like
    # (a version's weights never change; with_items makes a new version, with its own)
    like_space: ItemSpace | None = field(default=None, repr=False)
    # FAISS index over this version's item keys (serve --retrieval faiss); None: exact top-k
    index: ItemIndex | None = field(default=None, repr=False)
    loaded_at: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one model call at a time

    @property
    def max_len(self) -> int:
        return int(self.checkpoint.model.config.max_len)

    @property
    def kind(self) -> str:
        return "meta" if self.spec is not None else "pretrained"

    @property
    def text_model(self) -> str | None:
        """The text encoder the item tower was trained with (None: the bundled default)."""
        spec = self.checkpoint.meta.get("model_spec")
        return spec.get("text_model") if isinstance(spec, dict) else None

    def with_items(self, items: Sequence[tuple[str, str]], vectors: torch.Tensor) -> ServedModel:
        """This version with ``items`` (id, text) appended, scored from ``vectors`` (M, T) of
        their text; ValueError when the model cannot take new items."""
        model = with_new_items(self.checkpoint.model, vectors).eval()
        index = self.index
        if index is not None:  # a copy with the new keys: this version keeps its own
            with torch.no_grad():
                index = index.extended(model.retrieval_keys()[index.n_items :])
        ids = [i for i, _ in items]
        ckpt = replace(self.checkpoint, model=model, items=list(self.checkpoint.items) + ids)
        return ServedModel(
            self.version,
            self.path,
            ckpt,
            _adapter_for(model, self.spec, self.adapter, self.choice),
            list(self.item_text) + [t for _, t in items],
            {**self.item_index, **{raw: len(self.item_index) + j for j, raw in enumerate(ids)}},
            self.spec,
            self.choice,
            self.added + len(ids),
            self.like,
            index=index,
        )


def with_index(model: ServedModel, config: IndexConfig) -> ServedModel:
    """``model`` with a FAISS index over its item keys (built once per loaded version, before
    the version can become active); ConfigError for a model that declares no keys."""
    net = model.checkpoint.model
    if not hasattr(net, "retrieval_keys"):
        raise ConfigError(f"model version {model.version} declares no retrieval keys for FAISS")
    with torch.no_grad():
        keys = net.retrieval_keys()
    model.index = ItemIndex.build(keys, config)
    return model


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
    spec, choice = None, None
    if (path / META_CONFIG).is_file():
        mc = load_meta_checkpoint(path)
        ckpt, text, spec, choice = mc.checkpoint, mc.item_text, mc.spec, mc.choice
        adapter = mc.adapter()
    else:
        ckpt = load_checkpoint(path)
        if ckpt.model_type != "seqrec":
            raise CheckpointError(
                f"{path} holds a {ckpt.model_type} model; the service needs a seqrec checkpoint"
            )
        adapter, text = default_bundle(ckpt.model), read_item_text(path, ckpt.items)
    text = text or [""] * len(ckpt.items)
    index = {raw: i for i, raw in enumerate(ckpt.items)}
    like = load_like_head(path / HEAD_DIR, ckpt) if (path / HEAD_DIR).is_dir() else None
    version = checkpoint_version(path)
    return ServedModel(version, path, ckpt, adapter, text, index, spec, choice, like=like)


def adaptation_of(path: Path) -> dict:
    """How a checkpoint folder adapts, from its files alone (no weights loaded): ``method``
    (no-adapt | finetune | a meta-learner | ``DEFAULT_ADAPTATION``), ``judged`` (whether
    meta-train chose it on held-out users), and the chosen method's NDCG@10 gain over no
    adaptation, 95% interval and number of judging users (None where not judged)."""
    info = {"method": DEFAULT_ADAPTATION, "judged": False}
    info |= {"gain_ndcg10": None, "ci95": None, "n_users": None}
    if not (path / META_CONFIG).is_file():
        return info
    method, choice = stored_adaptation(path)
    info["method"] = method
    if choice is not None:
        ci = None if choice.ci95 is None else list(choice.ci95)
        info.update(judged=True, gain_ndcg10=choice.gain, ci95=ci, n_users=choice.n_users)
    return info


def _adapter_for(
    model, spec: LearnerSpec | None, old, choice: Choice | None = None
) -> Learner | PolicyBundle | None:
    """The adapter over ``model``: the default fine-tuning bundle, what ``choice`` chose when it
    is not the meta-learner, or the meta-learner of ``spec`` with the meta-learned tensors of
    ``old`` (same shapes) copied in."""
    if spec is None:
        return default_bundle(model)
    if choice is not None and choice.method != spec.algorithm:
        return chosen_adapter(model, None, spec, choice)
    learner = build_learner(model, spec)
    if old is not None:
        new, before = live_meta_tensors(learner), live_meta_tensors(old)
        with torch.no_grad():
            for name, tensor in new.items():
                if tensor.shape != before[name].shape:
                    raise ValueError(
                        f"the meta-learned {name} has one entry per catalogue item; new items "
                        "need the model meta-trained again"
                    )
                tensor.copy_(before[name])
    return learner


class ModelRegistry:
    """The versions a service may serve, the active one and the one before it."""

    def __init__(
        self,
        paths: list[Path],
        active: str | None = None,
        added_items: Callable[[], list[tuple[str, str]]] = list,
        encode: Encoder | None = None,
        folders: Sequence[Path] = (),
        index: IndexConfig | None = None,
    ):
        self._added_items, self._encode = added_items, encode
        self._index = index  # None: exact top-k; else every loaded version gets its index
        self._folders = [Path(f) for f in folders]
        if not paths:
            raise ConfigError("the service needs at least one model checkpoint")
        self._paths: dict[str, Path] = {}
        for p in paths:
            self._paths.setdefault(checkpoint_version(Path(p)), Path(p))
        self.rescan()
        self._loaded: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        first = active or checkpoint_version(Path(paths[0]))
        self._active = self._load(first)
        self._previous: str | None = None

    def rescan(self) -> int:
        """Pick up checkpoint folders that appeared in the registry folders (``metarec refresh``
        writes new versions there); returns how many versions are known."""
        for folder in self._folders:
            if not folder.is_dir():
                continue
            for sub in sorted(folder.iterdir()):
                if sub.name.startswith(".") or not (sub / CONFIG).is_file():
                    continue
                with contextlib.suppress(CheckpointError):  # half-written or foreign: skip
                    self._paths.setdefault(checkpoint_version(sub), sub)
        return len(self._paths)

    def _load(self, version: str) -> ServedModel:
        if version not in self._paths:
            self.rescan()
        if version not in self._paths:
            raise KeyError(version)
        model = self._loaded.get(version)
        if model is None:
            model = load_served_model(self._paths[version])
            if self._index is not None:
                model = with_index(model, self._index)
            # a version that cannot take the added items serves its own catalogue
            with contextlib.suppress(ValueError):
                model = self._grown(model, self._added_items())
            self._loaded[version] = model
        return model

    def _grown(self, model: ServedModel, items: Sequence[tuple[str, str]]) -> ServedModel:
        """``model`` with those of ``items`` it does not know yet (text-only models skip none;
        an id-only model stays as it is)."""
        new = [(i, t) for i, t in items if i not in model.item_index]
        if not new or self._encode is None or model.checkpoint.model.config.item_repr == "id":
            return model
        return model.with_items(new, self._encode(model, [t for _, t in new]))

    def add_items(self, items: Sequence[tuple[str, str]]) -> int:
        """Make ``items`` recommendable in every loaded version at once; returns how many are
        new to the active one. ValueError when the active model cannot take new items."""
        with self._lock:
            active = self._active
            if active.checkpoint.model.config.item_repr == "id":
                raise ValueError(
                    f"model version {active.version} knows items by id only; it cannot score "
                    "new items from their text"
                )
            fresh = sum(i not in active.item_index for i, _ in items)
            for version, model in list(self._loaded.items()):
                grown = self._grown(model, items)
                self._loaded[version] = grown
                if model is self._active:
                    self._active = grown
            return fresh

    @property
    def active(self) -> ServedModel:
        return self._active  # one reference read: a request holds whichever version it got

    @property
    def previous(self) -> str | None:
        return self._previous

    def versions(self) -> list[dict]:
        """Each known version: active, loaded, previous, and how it adapts
        (``adaptation_of``; None where its folder can no longer be read)."""
        out = []
        for v, path in self._paths.items():
            try:
                adaptation: dict | None = adaptation_of(path)
            except CheckpointError:
                adaptation = None
            out.append(
                {
                    "version": v,
                    "active": v == self._active.version,
                    "loaded": v in self._loaded,
                    "previous": v == self._previous,
                    "adaptation": adaptation,
                }
            )
        return out

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
