"""Adapter-only checkpoints: the tensors a strategy trained, on top of a base checkpoint.

An adapter folder holds
- ``adapter.safetensors``: only the trained tensors (LoRA A/B, adapters, adaptor, head), named as
  in the prepared model's ``state_dict``; its size is the "adapter size on disk" reports show;
- ``catalogue.safetensors``: the target catalogue's text embeddings, when fine-tuning moved the
  model to another domain (``adapt.transfer``); not trained, so kept apart from the adapter;
- ``adapter.json``: the strategy config, the base's weights sha256 (checked on load: an adapter
  only makes sense on the weights it was trained against), the catalogue's ids and user ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from metarec.adapt.finetune import FinetuneConfig, prepare, stored_tensors
from metarec.adapt.transfer import to_catalogue
from metarec.atomic_io import atomic_json, save_tensors, sha256_file
from metarec.errors import CheckpointError
from metarec.models.seqrec import SeqRec
from metarec.training.checkpoint import Checkpoint, load_checkpoint, read_json, versions

ADAPTER_FORMAT = "metarec-adapter-v1"
ADAPTER_WEIGHTS, CATALOGUE, ADAPTER_CONFIG = (
    "adapter.safetensors",
    "catalogue.safetensors",
    "adapter.json",
)


@dataclass
class Adapter:
    """A prepared model with its trained tensors, and what it was trained for."""

    model: SeqRec
    config: FinetuneConfig
    users: list[str]
    items: list[str]
    meta: dict = field(default_factory=dict)


def save_adapter(
    out: Path, adapter: Adapter, trainable: list[str], base: Checkpoint, new_catalogue: bool
) -> Path:
    """Write ``adapter`` to folder ``out``; ``base`` is the loaded checkpoint it was trained
    from and ``new_catalogue`` says whether the model was moved to another catalogue first."""
    if base.path is None:
        raise CheckpointError("an adapter's base must be a checkpoint saved on disk")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = adapter.model.state_dict()
    stored = stored_tensors(adapter.model, adapter.config, trainable)
    save_tensors({n: state[n] for n in stored}, out / ADAPTER_WEIGHTS)
    save_tensors({"text_embeddings": adapter.model.items.text_embeddings}, out / CATALOGUE)
    doc = {
        **adapter.meta,
        "format": ADAPTER_FORMAT,
        "base": str(Path(base.path).resolve()),
        "base_sha256": base.meta.get("weights_sha256"),
        "finetune": adapter.config.to_dict(),
        "new_catalogue": new_catalogue,
        "trainable": list(trainable),
        "users": list(adapter.users),
        "items": list(adapter.items),
        "adapter_sha256": sha256_file(out / ADAPTER_WEIGHTS),
        "catalogue_sha256": sha256_file(out / CATALOGUE),
        "versions": versions(),
    }
    atomic_json(out / ADAPTER_CONFIG, doc)
    return out


def adapter_size_bytes(out: Path) -> int:
    return (Path(out) / ADAPTER_WEIGHTS).stat().st_size


def load_adapter(path: Path, base: Path | None = None) -> Adapter:
    """The base checkpoint (``base``, else the one recorded at save time) with the adapter's
    catalogue and trained tensors; CheckpointError when anything does not match."""
    path = Path(path)
    doc = read_json(path / ADAPTER_CONFIG, "adapter config")
    if doc.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(
            f"{path / ADAPTER_CONFIG} is not a metarec adapter ({ADAPTER_FORMAT})"
        )
    base = Path(base) if base is not None else Path(str(doc.get("base", "")))
    ckpt = load_checkpoint(base)
    if ckpt.meta.get("weights_sha256") != doc.get("base_sha256"):
        raise CheckpointError(
            f"adapter {path} was trained on base weights {str(doc.get('base_sha256'))[:16]}, "
            f"but {base} holds {str(ckpt.meta.get('weights_sha256'))[:16]}"
        )
    config = _finetune_config(doc, path)
    if ckpt.model_type != "seqrec":
        raise CheckpointError(f"base {base} is not a SeqRec checkpoint ({ckpt.model_type})")
    model = ckpt.model
    if doc.get("new_catalogue"):
        text = _tensors(path, CATALOGUE, doc.get("catalogue_sha256"))["text_embeddings"]
        if len(text) != len(doc.get("items", [])):
            raise CheckpointError(f"{path}: {len(text)} catalogue embeddings for the item ids")
        # a restarted adaptor is recomputed from the stored text (deterministic)
        model = to_catalogue(model, text, config.uses_item_ids, config.restart_adaptor)
    trainable = prepare(model, config)
    tensors = _tensors(path, ADAPTER_WEIGHTS, doc.get("adapter_sha256"))
    stored = stored_tensors(model, config, trainable)
    if sorted(tensors) != sorted(stored) or sorted(trainable) != sorted(doc.get("trainable", [])):
        raise CheckpointError(f"{path / ADAPTER_WEIGHTS} does not hold the tensors of its strategy")
    state = model.state_dict()
    for name, t in tensors.items():
        if t.shape != state[name].shape:
            raise CheckpointError(f"{path}: tensor {name} has shape {tuple(t.shape)}")
    model.load_state_dict(tensors, strict=False)
    meta = {k: v for k, v in doc.items() if k not in ("users", "items")}
    return Adapter(model.eval(), config, doc.get("users", []), doc.get("items", []), meta)


def _finetune_config(doc: dict, path: Path) -> FinetuneConfig:
    try:
        values = dict(doc["finetune"])
        values["lora_targets"] = tuple(values["lora_targets"])
        return FinetuneConfig(**values)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / ADAPTER_CONFIG} has an invalid finetune config: {e}") from e


def _tensors(path: Path, name: str, digest: str | None) -> dict[str, torch.Tensor]:
    file = path / name
    if not file.is_file():
        raise CheckpointError(f"adapter {path} has no {name}")
    if sha256_file(file) != digest:
        raise CheckpointError(f"{file} does not match the sha256 in {ADAPTER_CONFIG}: corrupt")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors file: {e}") from e
