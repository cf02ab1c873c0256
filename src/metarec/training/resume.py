"""Resume state: last weights, optimizer tensors and loop state, written so that a crash at any
point leaves the previous resume state usable.

Each save goes to a new ``resume/epoch-NNNNN/`` folder; ``resume/latest.json`` is replaced
atomically to point at it last, and older folders are removed after that.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from metarec.atomic_io import atomic_json, save_tensors
from metarec.errors import CheckpointError
from metarec.training.checkpoint import WEIGHTS, load_weights, read_json

LATEST = "latest.json"


def save_resume_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    root = Path(path) / "resume"
    folder = root / f"epoch-{int(state['epoch']):05d}"
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(model.state_dict(), folder / WEIGHTS)
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in opt["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    save_tensors(tensors, folder / "optimizer.safetensors")
    meta = {"train_state": state, "param_groups": opt["param_groups"], "scalars": scalars}
    atomic_json(folder / "state.json", meta)
    atomic_json(root / LATEST, {"folder": folder.name})
    for old in root.glob("epoch-*"):
        if old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)


def has_resume_state(path: Path) -> bool:
    return (Path(path) / "resume" / LATEST).is_file()


def load_resume_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore what ``save_resume_state`` wrote into ``model`` and ``optimizer``; returns the
    loop state dict. Anything unreadable or inconsistent raises CheckpointError."""
    root = Path(path) / "resume"
    if not has_resume_state(path):
        raise CheckpointError(f"checkpoint {path} has no resume state ({root / LATEST})")
    name = read_json(root / LATEST, "resume pointer").get("folder")
    if not isinstance(name, str) or not name.startswith("epoch-") or "/" in name or ".." in name:
        raise CheckpointError(f"{root / LATEST} names an invalid folder: {name!r}")
    folder = root / name
    load_weights(folder / WEIGHTS, model)
    meta = read_json(folder / "state.json", "resume state")
    try:
        tensors = load_file(str(folder / "optimizer.safetensors"))
        state: dict = {}
        for key, value in [*tensors.items(), *meta["scalars"].items()]:
            pid, field = key.split(".", 1)
            state.setdefault(int(pid), {})[field] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        train_state = meta["train_state"]
        if not isinstance(train_state, dict):
            raise TypeError("train_state is not an object")
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"resume state in {folder} is unreadable or does not fit: {e}") from e
    return train_state
