"""Checkpoints: weights as safetensors, everything else as JSON. Never pickle.

A checkpoint folder holds
- ``model.safetensors``: the (best) weights, buffers included (e.g. frozen text embeddings);
- ``config.json``: model type and resolved config, training config and state, id maps, the text
  model and its embedding-cache key, package versions, and a sha256 of the weights file;
- optionally ``resume/``: last weights, optimizer state and training state, to continue training.
Loading validates each of them and raises ``CheckpointError`` naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import metarec
from metarec.errors import CheckpointError
from metarec.models import MODEL_TYPES

FORMAT_VERSION = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _model_type(model: nn.Module) -> str:
    for name, (cls, _) in MODEL_TYPES.items():
        if type(model) is cls:
            return name
    raise CheckpointError(f"cannot save a {type(model).__name__}: not a metarec model type")


def _atomic_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def save_checkpoint(path: str | Path, ckpt: Checkpoint, weights: dict | None = None) -> Path:
    """Write ``ckpt`` (or ``weights`` in place of the model's current ones) to folder ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _save_tensors(weights if weights is not None else ckpt.model.state_dict(), path / WEIGHTS)
    config = {
        "format_version": FORMAT_VERSION,
        "model_type": _model_type(ckpt.model),
        "model_config": ckpt.model.config.to_dict(),
        "users": list(ckpt.users),
        "items": list(ckpt.items),
        "versions": versions(),
        "weights_sha256": _sha256(path / WEIGHTS),
        **ckpt.meta,
    }
    _atomic_json(path / CONFIG, config)
    return path


def _read_config(path: Path) -> dict:
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} has no {name}")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path / CONFIG} is not valid JSON: {e}") from e
    missing = [
        k
        for k in ("format_version", "model_type", "model_config", "users", "items")
        if k not in config
    ]
    if missing:
        raise CheckpointError(f"checkpoint {path / CONFIG} lacks keys: {', '.join(missing)}")
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
        model_config = config_cls(**config["model_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path / CONFIG} has an invalid model_config: {e}") from e
    return cls(model_config)


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
    if config.get("weights_sha256") and _sha256(path / WEIGHTS) != config["weights_sha256"]:
        raise CheckpointError(
            f"{path / WEIGHTS} does not match the sha256 in {CONFIG}: corrupt or replaced"
        )
    model = _build_model(config, path)
    load_weights(path / WEIGHTS, model)
    n_items = getattr(model.config, "n_items", len(config["items"]))
    if n_items != len(config["items"]):
        raise CheckpointError(
            f"checkpoint {path}: model has {n_items} items, id map has {len(config['items'])}"
        )
    meta = {k: v for k, v in config.items() if k not in ("users", "items", "model_config")}
    model.eval()
    return Checkpoint(model, config["model_type"], config["users"], config["items"], meta, path)


def save_resume_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    """Last weights + optimizer tensors (safetensors) + scalars (JSON) under ``path/resume``."""
    folder = Path(path) / "resume"
    folder.mkdir(parents=True, exist_ok=True)
    _save_tensors(model.state_dict(), folder / WEIGHTS)
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in opt["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    _save_tensors(tensors, folder / "optimizer.safetensors")
    _atomic_json(
        folder / "state.json",
        {"train_state": state, "param_groups": opt["param_groups"], "scalars": scalars},
    )


def load_resume_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore what ``save_resume_state`` wrote; returns the training state dict."""
    folder = Path(path) / "resume"
    if not (folder / "state.json").is_file():
        raise CheckpointError(f"checkpoint {path} has no resume state (resume/state.json)")
    load_weights(folder / WEIGHTS, model)
    try:
        meta = json.loads((folder / "state.json").read_text())
        tensors = load_file(str(folder / "optimizer.safetensors"))
    except (json.JSONDecodeError, SafetensorError, OSError) as e:
        raise CheckpointError(f"resume state in {folder} is unreadable: {e}") from e
    state: dict = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"optimizer state in {folder} does not fit the model: {e}") from e
    return meta["train_state"]
