"""Shared fixtures: the real data in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("METAREC_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not path.is_dir():
        raise RuntimeError(
            f"shared data folder not found at {path}; set METAREC_SHARED_DATA to ../shared/data"
        )
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder holding ml-latest-small, amazon-office and amazon-scientific."""
    return _shared_data()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep every test's on-disk caches out of the user's home."""
    monkeypatch.setenv("METAREC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
