"""On-disk cache of text embeddings, keyed by model identity and text hash.

Layout: ``<root>/text/<model-key>/shard-*.safetensors``; each shard holds ``hashes`` (M, 32)
uint8 sha256 digests of the UTF-8 texts and ``embeddings`` (M, D) float32 (L2-normalised).
Shards are written atomically and never rewritten; a shard that cannot be read is renamed
to ``*.corrupt`` with a warning and its texts are encoded again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from metarec.atomic_io import atomic_bytes
from metarec.text.encoder import TextEncoder, check_texts, resolve_model_path

logger = logging.getLogger(__name__)

CACHE_FORMAT = "metarec-text-cache-v1"
_SMALL_FILE = 4 * 2**20  # files below this size are hashed whole, larger ones sampled
_SAMPLES, _BLOCK = 16, 4096
_SKIPPED = {"README.md", ".gitattributes"}


@dataclass(frozen=True)
class EncodeStats:
    """What one ``encode_with_cache`` call did; counts of unique texts except ``n_total``."""

    n_total: int
    n_unique: int
    n_cached: int
    n_encoded: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"encoded {self.n_encoded:,} texts ({self.n_cached:,} cached) in {self.seconds:.1f} s"
        )


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Cache root: ``cache_dir``, else $METAREC_CACHE_DIR, else ~/.cache/metarec."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("METAREC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metarec"


def _fingerprint(path: Path) -> str:
    """sha256 over the model folder: small files whole, large (weight) files by name, size and
    16 sampled 4 KiB blocks, so weights rewritten in place (fine-tuning) get a new key."""
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name not in _SKIPPED)
    for file in files:
        size = file.stat().st_size
        digest.update(f"\0{file.relative_to(path).as_posix()}\0{size}\0".encode())
        if size < _SMALL_FILE:
            digest.update(file.read_bytes())
            continue
        with open(file, "rb") as fh:
            for i in range(_SAMPLES):
                fh.seek(i * (size - _BLOCK) // (_SAMPLES - 1))
                digest.update(fh.read(_BLOCK))
    return digest.hexdigest()


def _model_key(model: str | Path | None) -> tuple[str, Path, str]:
    """(model id, local path, fingerprint) of a model name or folder."""
    model_id, path = resolve_model_path(model)
    return model_id, path, _fingerprint(path)


def cache_key(model: str | Path | None = None) -> str:
    """String naming model and version, e.g. ``sentence-transformers/all-MiniLM-L6-v2@<hash>``.

    Checkpoints record it so that loading can tell whether cached embeddings still match.
    """
    model_id, _, fingerprint = _model_key(model)
    return f"{model_id}@{fingerprint[:16]}"


def _model_dir(root: Path, model_id: str, fingerprint: str) -> Path:
    """``<root>/text/<sanitized model name>-<short hash>``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id.rstrip("/").rsplit("/", 1)[-1])
    return root / "text" / f"{name[:64]}-{fingerprint[:12]}"


def _text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _read_shard(path: Path, dim: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load and validate one shard -> (hashes (M, 32) uint8, embeddings (M, D) float32)."""
    tensors = load_file(path)
    hashes, emb = tensors.get("hashes"), tensors.get("embeddings")
    if hashes is None or emb is None:
        raise ValueError(f"expected tensors 'hashes' and 'embeddings', found {sorted(tensors)}")
    if hashes.dtype != torch.uint8 or hashes.ndim != 2 or hashes.shape[1] != 32:
        raise ValueError(
            f"'hashes' is {hashes.dtype} {tuple(hashes.shape)}; expected uint8 (M, 32)"
        )
    ok_rows = emb.ndim == 2 and emb.shape[0] == hashes.shape[0]
    if emb.dtype != torch.float32 or not ok_rows or (dim is not None and emb.shape[1] != dim):
        raise ValueError(
            f"'embeddings' is {emb.dtype} {tuple(emb.shape)}; expected float32 "
            f"({hashes.shape[0]}, {dim if dim is not None else 'D'})"
        )
    return hashes, emb


def _set_aside(path: Path, err: Exception) -> None:
    """Rename a shard that cannot be read to ``*.corrupt`` and warn, naming the file."""
    target = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, target)
        where = f"renamed to {target.name}"
    except OSError as move_err:
        where = f"could not rename it ({move_err})"
    warnings.warn(
        f"ignoring corrupt text-embedding cache shard {path} ({err}); {where}; "
        "its texts will be encoded again",
        stacklevel=3,
    )


def _lookup(model_dir: Path, digests: list[bytes]) -> tuple[list[int], torch.Tensor | None]:
    """Find cached rows -> (positions in ``digests``, their embeddings (K, D) or None)."""
    want = {d: i for i, d in enumerate(digests)}
    positions: list[int] = []
    pieces: list[torch.Tensor] = []
    dim: int | None = None
    for shard in sorted(model_dir.glob("shard-*.safetensors")):
        if not want:
            break
        try:
            hashes, emb = _read_shard(shard, dim)
        except (SafetensorError, ValueError, OSError) as err:
            _set_aside(shard, err)
            continue
        dim = emb.shape[1]
        raw = hashes.numpy().tobytes()
        rows = []
        for row in range(hashes.shape[0]):
            pos = want.pop(raw[32 * row : 32 * row + 32], None)
            if pos is not None:
                rows.append(row)
                positions.append(pos)
        if rows:
            pieces.append(emb[torch.tensor(rows, dtype=torch.long)])
    return positions, torch.cat(pieces) if pieces else None


def _write_shard(model_dir: Path, digests: list[bytes], emb: torch.Tensor, model_id: str) -> None:
    """Append a shard atomically (``atomic_bytes``); warn instead of failing."""
    hashes = torch.frombuffer(bytearray(b"".join(digests)), dtype=torch.uint8).view(-1, 32)
    meta = {"format": CACHE_FORMAT, "model_id": model_id}
    data = save({"hashes": hashes, "embeddings": emb.contiguous()}, metadata=meta)
    tag = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        atomic_bytes(model_dir / f"shard-{tag}.safetensors", data)
    except OSError as err:
        warnings.warn(f"could not write text-embedding cache in {model_dir}: {err}", stacklevel=3)


@overload
def encode_with_cache(
    texts: Sequence[str],
    model: str | Path | None = ...,
    cache_dir: str | Path | None = ...,
    batch_size: int = ...,
    progress: bool = ...,
    *,
    device: str = ...,
    return_stats: Literal[False] = ...,
) -> torch.Tensor: ...


@overload
def encode_with_cache(
    texts: Sequence[str],
    model: str | Path | None = ...,
    cache_dir: str | Path | None = ...,
    batch_size: int = ...,
    progress: bool = ...,
    *,
    device: str = ...,
    return_stats: Literal[True],
) -> tuple[torch.Tensor, EncodeStats]: ...


def encode_with_cache(
    texts: Sequence[str],
    model: str | Path | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    progress: bool = True,
    *,
    device: str = "cpu",
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, EncodeStats]:
    """Embed ``texts`` -> (N, D) float32, L2-normalised, rows in input order.

    Only texts missing from the cache are encoded (each distinct text once), and the model is
    loaded only if something is missing. Stats are logged at INFO and returned on request.
    No texts give a (0, 0) tensor (the model is not loaded just to learn D).
    """
    start = time.perf_counter()
    check_texts(texts)
    model_id, path, fingerprint = _model_key(model)
    model_dir = _model_dir(cache_root(cache_dir), model_id, fingerprint)
    unique = list(dict.fromkeys(texts))
    digests = [_text_digest(t) for t in unique]
    positions, cached = _lookup(model_dir, digests)
    missing = sorted(set(range(len(unique))) - set(positions))
    parts = [(positions, cached)] if cached is not None else []
    if missing:
        encoder = TextEncoder(path, device=device)
        fresh = encoder.encode([unique[i] for i in missing], batch_size, progress)  # (K, D)
        _write_shard(model_dir, [digests[i] for i in missing], fresh, model_id)
        parts.append((missing, fresh))
    out = _assemble(parts, len(unique), texts, unique)
    stats = EncodeStats(
        len(texts), len(unique), len(positions), len(missing), time.perf_counter() - start
    )
    logger.info("%s: %s", model_id, stats)
    return (out, stats) if return_stats else out


def _assemble(
    parts: list[tuple[list[int], torch.Tensor]],
    n_unique: int,
    texts: Sequence[str],
    unique: list[str],
) -> torch.Tensor:
    """Scatter (positions, (K, D)) parts into unique order, then expand to input order (N, D)."""
    if not parts:  # no texts at all; nothing tells D without loading the model
        return torch.empty(0, 0)
    dim = parts[0][1].shape[1]
    by_unique = torch.empty(n_unique, dim)  # (U, D)
    for positions, emb in parts:
        by_unique[torch.tensor(positions, dtype=torch.long)] = emb
    index = {text: i for i, text in enumerate(unique)}
    return by_unique[torch.tensor([index[t] for t in texts], dtype=torch.long)]  # (N, D)
