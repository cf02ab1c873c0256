"""New items for a trained model: a checkpoint whose catalogue grows, scored from text alone.

``add_items`` encodes the new items' text with the encoder the model was trained with (cached on
disk), appends them to the model (``models.seqrec.with_new_items``: old items score exactly as
before) and writes the grown model as a new checkpoint, leaving the base untouched.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from metarec.errors import CheckpointError, DataError
from metarec.meta.checkpoint import META_CONFIG
from metarec.models.seqrec import with_new_items
from metarec.text.cache import encode_with_cache
from metarec.training.checkpoint import (
    Checkpoint,
    load_checkpoint,
    read_item_text,
    save_checkpoint,
    write_item_text,
)


def add_items(
    base: str | Path, ids: list[str], texts: list[str], out: str | Path, progress: bool = True
) -> tuple[Checkpoint, int]:
    """Write ``base`` + the new items (ids not in its catalogue) to ``out``; returns the new
    checkpoint and how many items were added. Items the base knows already are refused."""

    base = Path(base)
    if (base / META_CONFIG).is_file():
        raise CheckpointError(
            f"{base} is a meta checkpoint; add items to its base model (or through the service's "
            "POST /items) and meta-train again"
        )
    ckpt = load_checkpoint(base)
    if ckpt.model_type != "seqrec" or ckpt.model.config.item_repr == "id":
        raise CheckpointError(
            f"{base} scores items by id only ({ckpt.model_type}, "
            f"{getattr(ckpt.model.config, 'item_repr', '-')}); new items need a text or hybrid "
            "seqrec model"
        )
    known = set(ckpt.items)
    if clash := [i for i in ids if i in known]:
        raise DataError(f"item id(s) {clash[:5]} are already in the catalogue of {base}")
    if not ids:
        raise DataError("no items to add")
    spec = ckpt.meta.get("model_spec") or {}
    vectors = encode_with_cache(texts, model=spec.get("text_model"), progress=progress)
    model = with_new_items(ckpt.model, vectors).eval()
    added = ckpt.meta.get("items_added", 0) + len(ids)
    meta = {**ckpt.meta, "items_added": added, "grown_from": ckpt.meta.get("weights_sha256")}
    grown = replace(ckpt, model=model, items=list(ckpt.items) + list(ids), meta=meta)
    save_checkpoint(out, grown)
    old_text = read_item_text(base, ckpt.items) or [""] * len(ckpt.items)
    write_item_text(out, grown.items, old_text + list(texts))
    return grown, len(ids)
