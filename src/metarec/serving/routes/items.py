"""``POST /items``: grow the catalogue at run time; new items are scored from their text."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from metarec.serving.deps import ActiveModel, KeyRequired, Registry, Settings, Store
from metarec.serving.schemas import ItemsAck, ItemsIn

router = APIRouter()


@router.post("/items", response_model=ItemsAck, dependencies=[KeyRequired])
def post_items(
    body: ItemsIn, store: Store, registry: Registry, model: ActiveModel, settings: Settings
) -> ItemsAck:
    """Add items with their text; they are recommendable at once, scored from the text."""
    if len(body.items) > settings.max_new_items:
        raise HTTPException(
            422, f"items: at most {settings.max_new_items} per request, got {len(body.items)}"
        )
    pairs = [(i.item, i.text) for i in body.items]
    if model.checkpoint.model.config.item_repr == "id":
        raise HTTPException(
            422, "items: the active model knows items by id only and cannot score new ones"
        )
    stored = store.add_items(pairs)
    try:
        new = registry.add_items(pairs)
    except ValueError as e:
        raise HTTPException(422, f"items: {e}") from None
    return ItemsAck(stored=stored, new=new)
