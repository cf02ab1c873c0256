"""``ServeSettings``: what one service process serves and the limits it enforces on requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from metarec.evaluation.retrieval import RETRIEVALS, IndexConfig


@dataclass(frozen=True)
class ServeSettings:
    models: tuple[Path, ...]  # checkpoint folders; the first is active at start-up
    registry: tuple[Path, ...] = ()  # folders whose subfolders are more versions (refresh)
    db: str = "metarec-events.db"  # sqlite:///PATH or a file path
    api_key: str | None = None
    max_body_bytes: int = 1_000_000
    max_batch: int = 1_000  # events per POST /events
    max_k: int = 100
    max_items: int = 200  # interactions per POST /recommendations
    max_new_items: int = 1_000  # items per POST /items
    adapt_cache_ttl_s: float = 300.0
    adapt_cache_size: int = 10_000
    history_limit: int = 200  # newest events of a user read from the store
    # top-k: "exact" (the full score row) or "faiss" (an index over item keys per version)
    retrieval: str = "exact"
    index: IndexConfig = field(default_factory=IndexConfig)

    def __post_init__(self) -> None:
        if self.retrieval not in RETRIEVALS:
            raise ValueError(
                f"retrieval must be one of {', '.join(RETRIEVALS)}, got {self.retrieval!r}"
            )
