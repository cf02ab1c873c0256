"""Checkpoints: weights as safetensors, everything else as JSON. Never pickle.

A checkpoint folder holds
- ``model-<sha256 prefix>.safetensors``: the (best) weights, buffers included (e.g. the frozen
  text embeddings), under a content-addressed name so a new save never touches the file that
  ``config.json`` still points to;
- ``config.json``: model type and resolved config, training config and state, id maps, the text
  model and its embedding-cache key, package versions, and a sha256 of the weights file;
- optionally ``resume/``: last weights, optimizer state and training state (``training.resume``).
Loading validates each of them and raises ``CheckpointError`` naming what is wrong.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

import metarec
from metarec.atomic_io import atomic_json, save_tensors, sha256_file
from metarec.errors import CheckpointError
from metarec.models import MODEL_TYPES

FORMAT_VERSION = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"
WEIGHTS_NAME = re.compile(r"model-[0-9a-f]{16}\.safetensors")


@dataclass
class Checkpoint:
    model: nn.Module
    model_type: str
    users: list[str]
    items: list[str]
    meta: dict = field(default_factory=dict)  # training config/state, text model, dataset, ...
    path: Path | None = None


def versions() -> dict[str, str]:
    return {
        "metarec": metarec.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _model_type(model: nn.Module) -> str:
    for name, (cls, _) in MODEL_TYPES.items():
        if type(model) is cls:
            return name
    raise CheckpointError(f"cannot save a {type(model).__name__}: not a metarec model type")


def read_json(path: Path, what: str = "file") -> dict:
    """A JSON object from ``path``, or CheckpointError naming the file and the problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CheckpointError(f"{what} {path} is missing") from e
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{what} {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} {path} must hold a JSON object, not {type(data).__name__}")
    return data


def save_checkpoint(path: str | Path, ckpt: Checkpoint, weights: dict | None = None) -> Path:
    """Write ``ckpt`` (or ``weights`` in place of the model's current ones) to folder ``path``.

    The weights go to a new content-addressed file first and ``config.json`` is replaced
    atomically after it, so a failure at any point leaves the previous checkpoint loadable.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    staging = path / (WEIGHTS + ".new")
    save_tensors(weights if weights is not None else ckpt.model.state_dict(), staging)
    digest = sha256_file(staging)
    weights_file = f"model-{digest[:16]}.safetensors"
    os.replace(staging, path / weights_file)
    config = {
        **ckpt.meta,  # first: a loaded checkpoint's meta carries the keys written below
        "format_version": FORMAT_VERSION,
        "model_type": _model_type(ckpt.model),
        "model_config": ckpt.model.config.to_dict(),
        "users": list(ckpt.users),
        "items": list(ckpt.items),
        "versions": versions(),
        "weights_file": weights_file,
        "weights_sha256": digest,
    }
    atomic_json(path / CONFIG, config)
    for old in path.glob("model-*.safetensors"):
        if old.name != weights_file:
            old.unlink(missing_ok=True)
    return path


def _weights_path(path: Path, config: dict) -> Path:
    name = config.get("weights_file")
    if not isinstance(name, str) or not WEIGHTS_NAME.fullmatch(name):
        raise CheckpointError(f"checkpoint {path / CONFIG} has an invalid weights_file: {name!r}")
    if not (path / name).is_file():
        raise CheckpointError(f"checkpoint {path} has no {name} (named in {CONFIG})")
    return path / name


def _read_config(path: Path) -> dict:
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    config = read_json(path / CONFIG, "checkpoint config")
    expected = {
        "format_version": int,
        "model_type": str,
        "model_config": dict,
        "users": list,
        "items": list,
        "weights_sha256": str,
    }
    missing = [k for k in expected if k not in config]
    if missing:
        raise CheckpointError(f"checkpoint {path / CONFIG} lacks keys: {', '.join(missing)}")
    for key, kind in expected.items():
        if not isinstance(config[key], kind):
            raise CheckpointError(
                f"checkpoint {path / CONFIG}: {key} must be a {kind.__name__}, "
                f"got {type(config[key]).__name__}"
            )
    if config["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {config['format_version']}, "
            f"this metarec reads version {FORMAT_VERSION}"
        )
    if config["model_type"] not in MODEL_TYPES:
        raise CheckpointError(f"checkpoint {path} has unknown model type {config['model_type']!r}")
    return config


def _build_model(config: dict, path: Path) -> nn.Module:
    cls, config_cls = MODEL_TYPES[config["model_type"]]
    try:
        return cls(config_cls(**config["model_config"]))
    except Exception as e:  # any failure to build from stored values is a bad checkpoint
        raise CheckpointError(f"checkpoint {path / CONFIG} has an invalid model_config: {e}") from e


def load_weights(path: Path, model: nn.Module) -> None:
    """Load safetensors ``path`` into ``model``, checking names and shapes first."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    expected = model.state_dict()
    missing, extra = expected.keys() - tensors.keys(), tensors.keys() - expected.keys()
    if missing or extra:
        raise CheckpointError(
            f"{path} does not match the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(extra)[:5]}"
        )
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise CheckpointError(
                f"{path}: tensor {name} has shape {tuple(t.shape)}, "
                f"expected {tuple(expected[name].shape)}"
            )
    model.load_state_dict(tensors)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and validate a checkpoint folder written by ``save_checkpoint``."""
    path = Path(path)
    config = _read_config(path)
    weights = _weights_path(path, config)
    if sha256_file(weights) != config["weights_sha256"]:
        raise CheckpointError(
            f"{weights} does not match the sha256 in {CONFIG}: corrupt or replaced"
        )
    model = _build_model(config, path)
    load_weights(weights, model)
    n_items = getattr(model.config, "n_items", len(config["items"]))
    if n_items != len(config["items"]):
        raise CheckpointError(
            f"checkpoint {path}: model has {n_items} items, id map has {len(config['items'])}"
        )
    meta = {k: v for k, v in config.items() if k not in ("users", "items", "model_config")}
    model.eval()
    return Checkpoint(model, config["model_type"], config["users"], config["items"], meta, path)


ITEM_TEXT = "item_text.json"  # optional: the catalogue's text, for showing recommendations


def write_item_text(path: str | Path, items: list[str], text: list[str]) -> None:
    """``item_text.json`` beside a checkpoint: the item ids and their text, in catalogue order."""
    if len(text) != len(items):
        raise ValueError(f"{len(text)} item texts for {len(items)} items")
    atomic_json(Path(path) / ITEM_TEXT, {"items": list(items), "text": list(text)})


def read_item_text(path: str | Path, items: list[str]) -> list[str] | None:
    """The item text of a checkpoint folder (None when it has none); CheckpointError when the
    file does not match the model's catalogue."""
    path = Path(path)
    if not (path / ITEM_TEXT).exists():
        return None
    doc = read_json(path / ITEM_TEXT, "item text")
    text = doc.get("text")
    if doc.get("items") != items or not isinstance(text, list) or len(text) != len(items):
        raise CheckpointError(f"{path / ITEM_TEXT} does not match the model's item catalogue")
    if not all(isinstance(t, str) for t in text):
        raise CheckpointError(f"{path / ITEM_TEXT}: every item text must be a string")
    return text
