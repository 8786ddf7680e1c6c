"""Durable state of the scheduler: one small interface; in-memory, SQLite and PostgreSQL
implementations."""

from __future__ import annotations

from boruta_scheduler.store.base import CannotOpenStore, HistoryPage, Purged, Store, safe_url
from boruta_scheduler.store.memory import MemoryStore
from boruta_scheduler.store.sqlite import SQLiteStore

__all__ = [
    "CannotOpenStore",
    "HistoryPage",
    "MemoryStore",
    "Purged",
    "SQLiteStore",
    "Store",
    "open_store",
    "safe_url",
]


POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


def open_store(url: str) -> Store:
    """Open a store from a URL: ``memory:``, ``sqlite:///path/to/file.db`` or
    ``postgresql://user@host/database`` (any URL libpq takes)."""
    if url == "memory:":
        return MemoryStore()
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path:
            raise ValueError("sqlite store URL needs a path: sqlite:///var/lib/boruta/boruta.db")
        return SQLiteStore(path)
    if url.startswith(POSTGRESQL_SCHEMES):
        try:
            from boruta_scheduler.store.postgresql import PostgreSQLStore
        except ImportError as exc:
            raise ValueError(
                f"a PostgreSQL store needs psycopg ({exc.name} is missing): "
                "pip install 'boruta-scheduler[postgresql]'"
            ) from None
        return PostgreSQLStore(url)
    raise ValueError(
        f"unknown store URL {safe_url(url)!r}; use memory:, sqlite:///path or postgresql://..."
    )
