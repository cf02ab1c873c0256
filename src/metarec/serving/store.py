"""The event store: users' behaviour and added items, in SQLite (WAL) by default.

One schema, created and upgraded by numbered migrations (``MIGRATIONS``; the applied version is
kept in ``schema_version``). A batch of events is written in one transaction and ``add_events``
returns only after the commit, with ``synchronous=FULL`` so a committed batch survives a crash
of the process or of the machine: an acknowledged event is a stored event.

The store is shared by the request threads: SQLite connections are opened per thread
(``threading.local``), writes are serialised by SQLite's own lock (``busy_timeout``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from metarec.errors import ConfigError, DataError

EVENT_TYPES = ("view", "click", "like", "dislike", "rating")
NEGATIVE_TYPES = ("dislike",)  # events that never make an item part of a user's history

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: events and added items
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user TEXT NOT NULL,
            item TEXT NOT NULL,
            type TEXT NOT NULL,
            value REAL,
            ts REAL NOT NULL,
            received REAL NOT NULL
        )""",
        "CREATE INDEX events_user_ts ON events (user, ts, id)",
        "CREATE INDEX events_received ON events (received)",
        """CREATE TABLE items (
            item TEXT PRIMARY KEY,
            text TEXT NOT NULL,
            added REAL NOT NULL
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


class SQLiteStore:
    """Events and items in one SQLite file (``:memory:`` is refused: threads would not share
    it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if str(path) == ":memory:":
            raise ConfigError("the event store needs a file path, not ':memory:'")
        if self.path.exists() and self.path.is_dir():
            raise ConfigError(f"event store {self.path} is a folder, not a database file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.migrate()

    # -- connections -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.DatabaseError as e:
                raise DataError(f"event store {self.path}: not a usable SQLite file ({e})") from e
            self._local.conn = conn
        return conn

    def migrate(self) -> int:
        """Apply the migrations not yet applied; returns the schema version."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > len(MIGRATIONS):
                conn.execute("ROLLBACK")
                raise DataError(
                    f"event store {self.path} has schema version {current}, newer than this "
                    f"metarec knows ({len(MIGRATIONS)}); upgrade metarec"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise DataError(f"event store {self.path}: {e}") from e
        return len(MIGRATIONS)

    def schema_version(self) -> int:
        row = self._conn().execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    # -- events ------------------------------------------------------------------------------
    def add_events(self, events: Sequence[Event]) -> int:
        """Store a batch in one transaction; returns how many, after the commit."""
        for e in events:
            if e.type not in EVENT_TYPES:
                raise DataError(f"event type must be one of {EVENT_TYPES}, got {e.type!r}")
        now = time.time()
        rows = [(e.user, e.item, e.type, e.value, e.timestamp, now) for e in events]
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO events (user, item, type, value, ts, received) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(rows)

    def user_items(self, user: str, limit: int | None = None) -> list[str]:
        """The user's history: items of non-negative events, oldest first (the last ``limit``)."""
        marks = ",".join("?" * len(NEGATIVE_TYPES))
        sql = (
            f"SELECT item FROM events WHERE user = ? AND type NOT IN ({marks}) "
            "ORDER BY ts DESC, id DESC"
        )
        params: list = [user, *NEGATIVE_TYPES]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        rows = self._conn().execute(sql, params).fetchall()
        return [r[0] for r in reversed(rows)]

    def count_events(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def events_since(self, received_after: float = 0.0) -> list[Event]:
        """Events received after ``received_after`` (seconds since the epoch), in time order."""
        rows = self._conn().execute(
            "SELECT user, item, type, ts, value FROM events WHERE received > ? ORDER BY ts, id",
            (received_after,),
        )
        return [Event(u, i, t, ts, v) for u, i, t, ts, v in rows]

    def item_counts(self, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` items with most non-negative events, most first."""
        marks = ",".join("?" * len(NEGATIVE_TYPES))
        rows = self._conn().execute(
            f"SELECT item, COUNT(*) AS n FROM events WHERE type NOT IN ({marks}) "
            "GROUP BY item ORDER BY n DESC, item LIMIT ?",
            (*NEGATIVE_TYPES, int(limit)),
        )
        return [(r[0], int(r[1])) for r in rows]

    # -- items -------------------------------------------------------------------------------
    def add_items(self, items: Iterable[tuple[str, str]]) -> int:
        rows = [(item, text, time.time()) for item, text in items]
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO items (item, text, added) VALUES (?, ?, ?) "
                "ON CONFLICT(item) DO UPDATE SET text = excluded.text",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(rows)

    def items(self) -> list[tuple[str, str]]:
        rows = self._conn().execute("SELECT item, text FROM items ORDER BY added, item")
        return [(r[0], r[1]) for r in rows]

    def ping(self) -> bool:
        try:
            self._conn().execute("SELECT 1").fetchone()
            return True
        except sqlite3.DatabaseError:
            return False


def open_store(url: str | Path) -> SQLiteStore:
    """A store from a URL or path: ``sqlite:///path/to/file.db`` or a plain file path."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "PostgreSQL event stores are not supported yet by this version; use a SQLite file"
        )
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
    elif "://" in text:
        raise ConfigError(f"event store URL {url!r}: expected sqlite:///PATH or a file path")
    return SQLiteStore(text)
