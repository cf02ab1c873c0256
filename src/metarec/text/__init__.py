"""Item text -> embeddings with a local pretrained language model, cached on disk."""

from __future__ import annotations

from metarec.text.cache import EncodeStats, cache_key, cache_root, encode_with_cache
from metarec.text.encoder import DEFAULT_TEXT_MODEL, TextEncoder, resolve_model_path

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "EncodeStats",
    "TextEncoder",
    "cache_key",
    "cache_root",
    "encode_with_cache",
    "resolve_model_path",
]
