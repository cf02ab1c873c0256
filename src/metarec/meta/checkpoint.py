"""Meta checkpoints: a model checkpoint plus what the meta-learner learned, in one folder.

- ``model-<sha>.safetensors`` + ``config.json``: the model, written by ``save_checkpoint`` (so the
  folder is also a plain checkpoint that ``load_checkpoint`` and ``metarec evaluate`` read);
- ``meta-<sha>.safetensors``: the learner-owned meta tensors (``learner.meta_tensors()``: the
  start of LoRA / user-vector fast parameters, Meta-SGD rates, learned inner lr and decay);
- ``item_text.json`` (optional): the catalogue's item text, for showing recommendations;
- ``meta.json``, replaced atomically last: format version, the learner spec (algorithm, policy,
  config), the task settings and training summary, the sha256 of the meta tensors and of the
  model weights they belong to, and ``choice`` (``meta.choice.Choice.to_dict``): the method
  ``metarec meta-train`` chose on held-out users (no adaptation, plain fine-tuning or the
  meta-learner), its NDCG@10 gain over no adaptation and 95% interval. A checkpoint without
  ``choice`` (written before the choice, or with ``--no-choose``) adapts with its meta-learner,
  unjudged. Where a baseline was chosen the folder holds the base model's weights (what was
  judged) and the meta-learner's own tensors only as a record: ``MetaCheckpoint.adapter``, not
  ``learner``, is what adapts.

Loading validates each piece and raises ``CheckpointError`` naming the file and the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from metarec.atomic_io import atomic_json, save_tensors, sha256_file
from metarec.errors import CheckpointError
from metarec.meta.choice import Choice
from metarec.meta.inference import PolicyBundle, chosen_adapter
from metarec.meta.learners import Learner, LearnerSpec, build_learner, live_meta_tensors
from metarec.training.checkpoint import (
    Checkpoint,
    load_checkpoint,
    read_item_text,
    read_json,
    save_checkpoint,
    write_item_text,
)

META_FORMAT_VERSION = 1
META_CONFIG = "meta.json"
META_NAME = re.compile(r"meta-[0-9a-f]{16}\.safetensors")
# config.json keys save_checkpoint writes itself; a loaded checkpoint's meta carries the old ones
_WRITTEN = ("format_version", "model_type", "versions", "weights_file", "weights_sha256")


@dataclass
class MetaCheckpoint:
    checkpoint: Checkpoint
    learner: Learner
    spec: LearnerSpec
    info: dict = field(default_factory=dict)  # task settings, training summary, ...
    item_text: list[str] | None = None
    choice: Choice | None = None  # None: no choice recorded (the meta-learner, unjudged)

    def adapter(self) -> Learner | PolicyBundle | None:
        """What adapting this model follows: the choice (None: no adaptation)."""
        return chosen_adapter(self.checkpoint.model, self.learner, self.spec, self.choice)

    def describe_choice(self) -> str:
        """One line on how this model adapts and why (what ``metarec adapt`` prints)."""
        if self.choice is None:
            return (
                f"adaptation: {self.spec.algorithm} (unjudged: no choice recorded in {META_CONFIG})"
            )
        return f"adaptation: chosen on held-out users: {self.choice.summary()}"


def save_meta_checkpoint(
    path: str | Path,
    ckpt: Checkpoint,
    learner: Learner,
    spec: LearnerSpec,
    info: dict | None = None,
    item_text: list[str] | None = None,
    choice: Choice | None = None,
) -> Path:
    """Write the model (``ckpt``, whose model is ``learner.model``), the learner and the choice
    of how to adapt (None: none recorded) to ``path``."""
    if ckpt.model is not learner.model:
        raise ValueError("the checkpoint's model is not the learner's model")
    if choice is not None:
        chosen_adapter(ckpt.model, learner, spec, choice)  # a choice this checkpoint can follow
    meta = {k: v for k, v in ckpt.meta.items() if k not in _WRITTEN}
    path = save_checkpoint(path, replace(ckpt, meta=meta))
    model_sha = read_json(path / "config.json", "checkpoint config")["weights_sha256"]
    staging = path / "meta.safetensors.new"
    save_tensors(learner.meta_tensors(), staging)
    digest = sha256_file(staging)
    tensors_file = f"meta-{digest[:16]}.safetensors"
    staging.replace(path / tensors_file)
    if item_text is not None:
        if len(item_text) != len(ckpt.items):
            raise ValueError(f"{len(item_text)} item texts for {len(ckpt.items)} items")
        write_item_text(path, ckpt.items, item_text)
    doc = {
        "format_version": META_FORMAT_VERSION,
        "learner": spec.to_dict(),
        "tensors_file": tensors_file,
        "tensors_sha256": digest,
        "model_weights_sha256": model_sha,
        "info": info or {},
    }
    if choice is not None:
        doc["choice"] = choice.to_dict()
    atomic_json(path / META_CONFIG, doc)
    for old in path.glob("meta-*.safetensors"):
        if old.name != tensors_file:
            old.unlink(missing_ok=True)
    return path


def load_meta_checkpoint(path: str | Path) -> MetaCheckpoint:
    """Load and validate a folder written by ``save_meta_checkpoint``."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    doc = _read_meta_config(path, ckpt)
    try:
        spec = LearnerSpec.from_dict(doc["learner"])
        learner = build_learner(ckpt.model, spec)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / META_CONFIG}: invalid learner settings: {e}") from e
    _load_meta_tensors(path, doc, learner)
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    choice = _read_choice(path, doc, ckpt, learner, spec)
    return MetaCheckpoint(ckpt, learner, spec, info, read_item_text(path, ckpt.items), choice)


def stored_adaptation(path: str | Path) -> tuple[str, Choice | None]:
    """How the meta checkpoint in ``path`` adapts, from its meta.json alone (no weights
    loaded): the method (the choice's, else the learner's algorithm) and the choice (None:
    none recorded). CheckpointError when meta.json is missing or malformed."""
    where = Path(path) / META_CONFIG
    if not where.is_file():
        raise CheckpointError(f"{path} has no {META_CONFIG}: it is not a meta-trained model")
    doc = read_json(where, "meta checkpoint config")
    learner = doc.get("learner")
    algorithm = learner.get("algorithm") if isinstance(learner, dict) else None
    if not isinstance(algorithm, str):
        raise CheckpointError(f"{where}: learner.algorithm is missing or not a str")
    if doc.get("choice") is None:
        return algorithm, None
    try:
        choice = Choice.from_dict(doc["choice"])
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from e
    return choice.method, choice


def _read_choice(
    path: Path, doc: dict, ckpt: Checkpoint, learner: Learner, spec: LearnerSpec
) -> Choice | None:
    if doc.get("choice") is None:
        return None
    try:
        choice = Choice.from_dict(doc["choice"])
        chosen_adapter(ckpt.model, learner, spec, choice)
    except ValueError as e:
        raise CheckpointError(f"{path / META_CONFIG}: {e}") from e
    return choice


def _read_meta_config(path: Path, ckpt: Checkpoint) -> dict:
    where = path / META_CONFIG
    if not where.exists():
        raise CheckpointError(
            f"{path} holds a model but no {META_CONFIG}: it is not a meta-trained model "
            "(make one with metarec meta-train)"
        )
    doc = read_json(where, "meta checkpoint config")
    expected = {
        "format_version": int,
        "learner": dict,
        "tensors_file": str,
        "tensors_sha256": str,
        "model_weights_sha256": str,
    }
    for key, kind in expected.items():
        if not isinstance(doc.get(key), kind):
            raise CheckpointError(f"{where}: {key} is missing or not a {kind.__name__}")
    if doc["format_version"] != META_FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has format version {doc['format_version']}, this metarec reads "
            f"version {META_FORMAT_VERSION}"
        )
    if doc["model_weights_sha256"] != ckpt.meta.get("weights_sha256"):
        raise CheckpointError(
            f"{where} belongs to other model weights than {path}'s (an interrupted or mixed "
            "save); meta-train again or restore the folder"
        )
    return doc


def _load_meta_tensors(path: Path, doc: dict, learner: Learner) -> None:
    name = doc["tensors_file"]
    if not META_NAME.fullmatch(name):
        raise CheckpointError(f"{path / META_CONFIG} has an invalid tensors_file: {name!r}")
    file = path / name
    if not file.is_file():
        raise CheckpointError(f"{path} has no {name} (named in {META_CONFIG})")
    if sha256_file(file) != doc["tensors_sha256"]:
        raise CheckpointError(f"{file} does not match the sha256 in {META_CONFIG}: corrupt")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors file: {e}") from e
    live = live_meta_tensors(learner)
    if set(tensors) != set(live):
        missing, extra = sorted(set(live) - set(tensors)), sorted(set(tensors) - set(live))
        raise CheckpointError(
            f"{file} does not fit the learner: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    with torch.no_grad():
        for key, t in live.items():
            if tensors[key].shape != t.shape:
                raise CheckpointError(
                    f"{file}: tensor {key} has shape {tuple(tensors[key].shape)}, "
                    f"expected {tuple(t.shape)}"
                )
            t.copy_(tensors[key])
