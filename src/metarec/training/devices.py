"""Device names in configs: "auto" (CUDA when available, else CPU), "cpu" or "cuda[:N]"."""

from __future__ import annotations

import torch

from metarec.errors import ConfigError


def check_device_name(device: str) -> None:
    """ValueError for anything but auto, cpu or cuda[:N] (for config ``__post_init__``)."""
    if device not in ("auto", "cpu") and not str(device).startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")


def resolve_device(device: str) -> torch.device:
    """The torch device a config's name stands for here; ConfigError if CUDA is asked for and
    absent."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here")
    return torch.device(device)
