"""The event store: users' behaviour and added items, in SQLite (default) or PostgreSQL.

One schema, created and upgraded by numbered migrations (``migrations(dialect)``; the applied
version is kept in ``schema_version``). A batch of events is written in one transaction and
``add_events`` returns only after the commit: SQLite runs in WAL mode with ``synchronous=FULL``
and PostgreSQL with ``synchronous_commit`` on (its default), so an acknowledged event is a
stored event even if the process or the machine dies right after.

The store is shared by the request threads: connections are opened per thread
(``threading.local``); concurrent writers are serialised by the database itself.
``open_store(url)`` picks the backend from the URL.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metarec.errors import ConfigError, DataError

EVENT_TYPES = ("view", "click", "like", "dislike", "rating")
NEGATIVE_TYPES = ("dislike",)  # events that never make an item part of a user's history


def migrations(dialect: str) -> tuple[tuple[str, ...], ...]:
    """The schema, one tuple of statements per version, for ``sqlite`` or ``postgresql``."""
    key = (
        "INTEGER PRIMARY KEY AUTOINCREMENT"
        if dialect == "sqlite"
        else "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    )
    real = "REAL" if dialect == "sqlite" else "DOUBLE PRECISION"
    return (
        (  # 1: events and added items
            f"""CREATE TABLE events (
                id {key},
                user_id TEXT NOT NULL,
                item TEXT NOT NULL,
                type TEXT NOT NULL,
                value {real},
                ts {real} NOT NULL,
                received {real} NOT NULL
            )""",
            "CREATE INDEX events_user_ts ON events (user_id, ts, id)",
            "CREATE INDEX events_received ON events (received)",
            f"""CREATE TABLE items (
                item TEXT PRIMARY KEY,
                text TEXT NOT NULL,
                added {real} NOT NULL
            )""",
        ),
    )


@dataclass(frozen=True)
class Event:
    user: str
    item: str
    type: str
    timestamp: float
    value: float | None = None


class EventStore:
    """The queries, shared by both backends; subclasses open connections and transactions.

    SQL is written with ``?`` placeholders; ``_sql`` turns them into the driver's style.
    """

    dialect = ""
    placeholder = "?"

    def __init__(self) -> None:
        self._local = threading.local()
        self.migrate()

    # -- backend ---------------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        raise NotImplementedError
        yield  # pragma: no cover

    def _lock_schema(self, cur: Any) -> None:
        """Keep two processes from migrating at once (inside the migration transaction)."""

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        conn = self._conn()
        cur = conn.execute(self._sql(sql), tuple(params))
        return list(cur.fetchall())

    def _insert(self, sql: str, rows: list[tuple]) -> int:
        """All ``rows`` in one transaction (committed before this returns); how many."""
        with self._transaction() as cur:
            cur.executemany(self._sql(sql), rows)
        return len(rows)

    @property
    def where(self) -> str:
        raise NotImplementedError

    # -- schema ----------------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply the migrations not yet applied; returns the schema version."""
        steps = migrations(self.dialect)
        with self._transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            self._lock_schema(cur)
            current = cur.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            if current > len(steps):
                raise DataError(
                    f"event store {self.where} has schema version {current}, newer than this "
                    f"metarec knows ({len(steps)}); upgrade metarec"
                )
            for version in range(current + 1, len(steps) + 1):
                for statement in steps[version - 1]:
                    cur.execute(statement)
                cur.execute(
                    self._sql("INSERT INTO schema_version (version) VALUES (?)"), (version,)
                )
        return len(steps)

    def schema_version(self) -> int:
        return int(self._query("SELECT MAX(version) FROM schema_version")[0][0] or 0)

    # -- events ----------------------------------------------------------------------------
    def add_events(self, events: Sequence[Event]) -> int:
        """Store a batch in one transaction; returns how many, after the commit."""
        for e in events:
            if e.type not in EVENT_TYPES:
                raise DataError(f"event type must be one of {EVENT_TYPES}, got {e.type!r}")
        now = time.time()
        rows = [(e.user, e.item, e.type, e.value, e.timestamp, now) for e in events]
        return self._insert(
            "INSERT INTO events (user_id, item, type, value, ts, received) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    def user_items(self, user: str, limit: int | None = None) -> list[str]:
        """The user's history: items of non-negative events, oldest first (the last ``limit``)."""
        marks = ",".join("?" * len(NEGATIVE_TYPES))
        sql = (
            f"SELECT item FROM events WHERE user_id = ? AND type NOT IN ({marks}) "
            "ORDER BY ts DESC, id DESC"
        )
        params: list = [user, *NEGATIVE_TYPES]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [r[0] for r in reversed(self._query(sql, params))]

    def user_ratings(self, user: str) -> dict[str, float]:
        """The user's latest rating of each item it rated (``rating`` events with a value)."""
        rows = self._query(
            "SELECT item, value FROM events WHERE user_id = ? AND type = 'rating' "
            "AND value IS NOT NULL ORDER BY ts, id",
            (user,),
        )
        return {item: float(value) for item, value in rows}

    def count_events(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM events")[0][0])

    def events_since(self, received_after: float = 0.0) -> list[Event]:
        """Events received after ``received_after`` (seconds since the epoch), in time order."""
        rows = self._query(
            "SELECT user_id, item, type, ts, value FROM events WHERE received > ? ORDER BY ts, id",
            (received_after,),
        )
        return [Event(u, i, t, ts, v) for u, i, t, ts, v in rows]

    def last_received(self) -> float:
        """When the newest event was received (0.0 for an empty store)."""
        return float(self._query("SELECT MAX(received) FROM events")[0][0] or 0.0)

    def item_counts(self, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` items with most non-negative events, most first."""
        marks = ",".join("?" * len(NEGATIVE_TYPES))
        rows = self._query(
            f"SELECT item, COUNT(*) AS n FROM events WHERE type NOT IN ({marks}) "
            "GROUP BY item ORDER BY n DESC, item LIMIT ?",
            (*NEGATIVE_TYPES, int(limit)),
        )
        return [(r[0], int(r[1])) for r in rows]

    # -- items -----------------------------------------------------------------------------
    def add_items(self, items: Iterable[tuple[str, str]]) -> int:
        """Insert or update (id, text) pairs; returns how many."""
        rows = [(item, text, time.time()) for item, text in items]
        return self._insert(
            "INSERT INTO items (item, text, added) VALUES (?, ?, ?) "
            "ON CONFLICT (item) DO UPDATE SET text = excluded.text",
            rows,
        )

    def items(self) -> list[tuple[str, str]]:
        return [
            (r[0], r[1]) for r in self._query("SELECT item, text FROM items ORDER BY added, item")
        ]

    def ping(self) -> bool:
        try:
            self._query("SELECT 1")
            return True
        except Exception:  # any driver error means "not reachable"
            return False


class SQLiteStore(EventStore):
    """Events and items in one SQLite file (WAL mode)."""

    dialect = "sqlite"

    def __init__(self, path: str | Path):
        if str(path) == ":memory:":
            raise ConfigError("the event store needs a file path, not ':memory:'")
        self.path = Path(path)
        if self.path.is_dir():
            raise ConfigError(f"event store {self.path} is a folder, not a database file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__()

    @property
    def where(self) -> str:
        return str(self.path)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.DatabaseError as e:
            raise DataError(f"event store {self.path}: not a usable SQLite file ({e})") from e
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as e:
            raise DataError(f"event store {self.path}: {e}") from e
        try:
            yield conn.cursor()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class PostgresStore(EventStore):
    """Events and items in a PostgreSQL database (``postgresql://user@host:port/db``)."""

    dialect = "postgresql"
    placeholder = "%s"

    def __init__(self, url: str):
        self.url = url
        super().__init__()

    @property
    def where(self) -> str:
        return _without_password(self.url)

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            raise DataError(f"event store {self.where}: cannot connect ({e})") from e

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def _lock_schema(self, cur: Any) -> None:
        cur.execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")


def _without_password(url: str) -> str:
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, creds = head.partition("//")
    return f"{scheme}//{creds.split(':', 1)[0]}:***@{tail}"


def open_store(url: str | Path) -> EventStore:
    """A store from a URL or path: ``postgresql://...``, ``sqlite:///PATH`` or a file path."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresStore(text)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
    elif "://" in text:
        raise ConfigError(
            f"event store URL {url!r}: expected postgresql://..., sqlite:///PATH or a file path"
        )
    return SQLiteStore(text)
