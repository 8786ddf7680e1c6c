"""Durable state of the scheduler: one small interface, in-memory and SQLite implementations."""

from __future__ import annotations

from boruta_scheduler.store.base import CannotOpenStore, HistoryPage, Purged, Store
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
]


def open_store(url: str) -> Store:
    """Open a store from a URL: ``memory:`` or ``sqlite:///path/to/file.db``."""
    if url == "memory:":
        return MemoryStore()
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path:
            raise ValueError("sqlite store URL needs a path: sqlite:///var/lib/boruta/boruta.db")
        return SQLiteStore(path)
    raise ValueError(f"unknown store URL {url!r}; use memory: or sqlite:///path")
