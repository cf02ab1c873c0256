"""Writes that never leave a half-written file: temp file in the same folder, fsync, rename.

Every file metarec stores (checkpoints, resume state, meta checkpoints, text-cache shards) goes
through ``atomic_bytes``; a crash or a full disk leaves either the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save


def atomic_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (mode 0644); the temp file is removed on error."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_json(path: Path, data: dict) -> None:
    atomic_bytes(path, json.dumps(data, indent=1).encode("utf-8"))


def save_tensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Tensors (moved to CPU, made contiguous) as a safetensors file, atomically."""
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_bytes(path, save(cpu, metadata=metadata))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
