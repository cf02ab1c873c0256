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


@pytest.fixture(scope="session")
def postgres():
    """URL of a PostgreSQL server on loopback for this test session (see tests/pg_server.py)."""
    from pg_server import postgres_url

    with postgres_url() as url:
        yield url


@pytest.fixture
def pg_database(postgres):
    """A fresh, empty database on that server; dropped afterwards."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, _ = postgres.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
