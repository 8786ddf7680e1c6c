"""The embedded default store: one SQLite file in WAL mode, synchronous=FULL by default.

The file holds private keys (see docs/security.md, "Keys at rest"): deleted content is
overwritten (secure_delete), and scrub() checkpoints and truncates the write-ahead log,
whose old frames would otherwise keep copies of keys long gone from the tables.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from boruta_scheduler.core import Changes, Snapshot
from boruta_scheduler.errors import StoreUnavailable
from boruta_scheduler.listing import Page, RequestQuery
from boruta_scheduler.store.base import CannotOpenStore, HistoryPage, Purged
from boruta_scheduler.store.codec import (
    Decoder,
    audit_event,
    commit_statements,
    history_entry,
    request_page,
    request_view,
    select_requests,
    stack_view,
    token_record,
    usage_params,
    usage_totals,
    worker_view,
)
from boruta_scheduler.store.sqlfile import load_migrations, load_queries
from boruta_scheduler.types import AuditEvent, RequestView, UsageQuery, UsageTotals

log = logging.getLogger(__name__)

_Q = load_queries("sqlite")
# Files written before this version may hold deleted keys in free space: rewrite them once.
_SECURE_DELETE_VERSION = 5
BUSY_TIMEOUT_MS = 10_000
# How long a scrub waits for readers to leave the log before it gives up for this time.
SCRUB_WAIT_MS = 200


class SQLiteStore:
    """Implements the Store contract on one SQLite file.

    One connection writes (from the engine's writer thread); each reading thread gets its
    own connection, which WAL lets read while a commit is in progress.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = Path(path)
        self._synchronous = synchronous
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            # SQLite creates its -wal and -shm files beside the database: try as it would.
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise CannotOpenStore(
                f"cannot write the store's directory {folder}: {exc.strerror or exc}"
            ) from None
        try:
            # The file holds private keys: create it readable by the owner only.
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            self._writer = self._connect()
            self._migrate()
        except OSError as exc:
            raise CannotOpenStore(f"cannot open the store {self.path}: {exc.strerror}") from None
        except sqlite3.Error as exc:
            raise CannotOpenStore(
                f"cannot open the store {self.path}: {_cause(exc)} ({exc})"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # Deleted and overwritten rows (keys among them) are zeroed, not left in free space.
        conn.execute("PRAGMA secure_delete=ON")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _migrate(self) -> None:
        conn = self._writer
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        for number, script in load_migrations("sqlite"):
            if number <= version:
                continue
            log.info("applying migration", extra={"store": str(self.path), "version": number})
            try:
                conn.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;"
                )
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        if 0 < version < _SECURE_DELETE_VERSION:
            log.info(
                "rewriting the store once to clear deleted keys", extra={"store": str(self.path)}
            )
            conn.execute("VACUUM")
            self.scrub()

    def load(self) -> Snapshot:
        conn = self._writer
        workers = [worker_view(row) for row in conn.execute(_Q["all_workers"])]
        (last_id,) = conn.execute(_Q["get_last_request_id"]).fetchone()
        (last_token_id,) = conn.execute(_Q["get_last_token_id"]).fetchone()
        tokens = [token_record(row) for row in conn.execute(_Q["select_tokens"])]
        stacks = [stack_view(row) for row in conn.execute(_Q["select_stacks"])]
        return Snapshot(self._live_requests(), workers, last_id, tokens, stacks, last_token_id)

    def _live_requests(self) -> Iterator[RequestView]:
        """Live requests read as they are restored, so that no list of them all is held."""
        decoder = Decoder()
        cursor = self._writer.execute(_Q["live_requests"])
        try:
            for row in cursor:
                yield request_view(row, decoder)
        finally:
            cursor.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn SQLite's refusal to write into StoreUnavailable naming the cause and path."""
        try:
            yield
        except sqlite3.Error as exc:
            cause = _cause(exc)
            raise StoreUnavailable(f"{cause}: cannot write {self.path} ({exc})", cause) from exc

    def commit(self, changes: Changes) -> None:
        with self._writing():
            self._commit(changes)

    def _commit(self, changes: Changes) -> None:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            for name, rows in commit_statements(changes):
                conn.executemany(_Q[name], rows)
            conn.execute("COMMIT")
        except BaseException:
            # On a full disk or an I/O error SQLite may have rolled back by itself.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def get_request(self, request_id: int) -> RequestView | None:
        row = self._reader().execute(_Q["get_request"], {"id": request_id}).fetchone()
        return request_view(row) if row else None

    def find_request(self, owner: str, idempotency_key: str) -> RequestView | None:
        params = {"owner": owner, "key": idempotency_key}
        row = self._reader().execute(_Q["find_request"], params).fetchone()
        return request_view(row) if row else None

    def list_requests(self, query: RequestQuery) -> Page[RequestView]:
        sql, params = select_requests(query, "?")
        return request_page(query, self._reader().execute(sql, params).fetchall())

    def worker_history(self, uuid: str, limit: int, before: int | None = None) -> HistoryPage:
        rows = (
            self._reader()
            .execute(
                _Q["worker_history"],
                {
                    "uuid": uuid,
                    "before": before if before is not None else 2**62,
                    "limit": limit + 1,
                },
            )
            .fetchall()
        )
        entries = [history_entry(row) for row in rows[:limit]]
        return HistoryPage(entries, rows[limit - 1]["seq"] if len(rows) > limit else None)

    def audit(self, limit: int, before: int | None = None) -> list[AuditEvent]:
        rows = self._reader().execute(
            _Q["select_audit"],
            {"before": before if before is not None else 2**63 - 1, "limit": limit},
        )
        return [audit_event(r) for r in rows]

    def purge(self, before: float, limit: int) -> Purged:
        with self._writing():
            return self._purge(before, limit)

    def _purge(self, before: float, limit: int) -> Purged:
        conn = self._writer
        params = {"before": before, "limit": limit}
        conn.execute("BEGIN IMMEDIATE")
        try:
            counts = [conn.execute(_Q[name], params).rowcount for name in _PURGES]
            conn.execute("COMMIT")
        except BaseException:
            # On a full disk SQLite may have rolled back by itself.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return Purged(*counts)

    def usage(self, query: UsageQuery) -> list[UsageTotals]:
        rows = self._reader().execute(_Q["usage_totals"], usage_params(query))
        return [usage_totals(row) for row in rows]

    def purge_usage(self, before: float, limit: int) -> int:
        with self._writing():
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                count = conn.execute(_Q["purge_usage"], {"before": before, "limit": limit}).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # on a full disk SQLite may have rolled back itself
                    conn.execute("ROLLBACK")
                raise
        return count

    def scrub(self) -> bool:
        conn = self._writer
        # Readers hold the log only for a query; waiting longer would hold up commits.
        conn.execute(f"PRAGMA busy_timeout={SCRUB_WAIT_MS}")
        try:
            (busy, _, _) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return not busy

    def close(self) -> None:
        self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


_PURGES = ("purge_requests", "purge_history", "purge_audit")


def _cause(exc: sqlite3.Error) -> str:
    """What an operator should look at, in a few words."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL":
        return "disk full"
    if name.startswith("SQLITE_READONLY"):
        return "read-only"
    if name.startswith("SQLITE_IOERR"):
        return "I/O error"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return "locked by another process"
    if name.startswith("SQLITE_CANTOPEN"):
        return "cannot open the file"
    return "store error"
