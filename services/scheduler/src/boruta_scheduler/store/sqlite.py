"""The embedded default store: one SQLite file in WAL mode, synchronous=FULL by default.

The file holds private keys (see docs/security.md, "Keys at rest"): deleted content is
overwritten (secure_delete), and scrub() checkpoints and truncates the write-ahead log,
whose old frames would otherwise keep copies of keys long gone from the tables.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from boruta_scheduler.core import Changes, Snapshot
from boruta_scheduler.errors import StoreUnavailable
from boruta_scheduler.listing import Page, RequestQuery, RequestSort
from boruta_scheduler.store.base import CannotOpenStore, HistoryPage, Purged
from boruta_scheduler.store.codec import (
    Decoder,
    history_entry,
    history_row,
    request_row,
    request_view,
    worker_row,
    worker_view,
)
from boruta_scheduler.store.sqlfile import load_migrations, load_queries
from boruta_scheduler.types import AuditEvent, RequestView, TokenRecord

log = logging.getLogger(__name__)

_Q = load_queries("sqlite")
_SORT_COLUMNS = {sort: sort.value for sort in RequestSort}
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
        tokens = [_token(row) for row in conn.execute(_Q["select_tokens"])]
        return Snapshot(self._live_requests(), workers, last_id, tokens)

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
            if changes.requests:
                conn.executemany(_Q["upsert_request"], map(request_row, changes.requests))
            if changes.workers:
                conn.executemany(_Q["upsert_worker"], map(worker_row, changes.workers))
            if changes.last_seen:
                conn.executemany(
                    _Q["touch_worker"],
                    ({"uuid": u, "last_seen": t} for u, t in changes.last_seen.items()),
                )
            for removed in changes.removed_workers:
                uuid = removed.uuid
                conn.execute(_Q["delete_worker"], {"uuid": uuid})
                conn.execute(_Q["delete_worker_history"], {"uuid": uuid})
            if changes.history:
                conn.executemany(_Q["insert_history"], map(history_row, changes.history))
            if changes.tokens:
                conn.executemany(_Q["upsert_token"], map(_token_row, changes.tokens))
            if changes.audit:
                conn.executemany(_Q["insert_audit"], map(audit_row, changes.audit))
            conn.execute(_Q["set_last_request_id"], {"value": changes.last_request_id})
            conn.execute("COMMIT")
        except BaseException:
            # On a full disk or an I/O error SQLite may have rolled back by itself.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def get_request(self, request_id: int) -> RequestView | None:
        row = self._reader().execute(_Q["get_request"], {"id": request_id}).fetchone()
        return request_view(row) if row else None

    def list_requests(self, query: RequestQuery) -> Page[RequestView]:
        where: list[str] = []
        params: list[Any] = []
        for column, values in (
            ("id", query.ids),
            ("state", {int(s) for s in query.states}),
            ("priority", query.priorities),
            ("owner", query.owners),
        ):
            if values:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                params.extend(sorted(values))
        column = _SORT_COLUMNS[query.sort]
        direction = "DESC" if query.descending else "ASC"
        if query.after is not None:
            where.append(f"({column}, id) {'<' if query.descending else '>'} (?, ?)")
            params.extend(query.after)
        sql = "SELECT * FROM requests"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {column} {direction}, id {direction} LIMIT ?"
        params.append(query.limit + 1)
        rows = self._reader().execute(sql, params).fetchall()
        items = [request_view(row) for row in rows[: query.limit]]
        next_after = None
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            next_after = (last[column], last["id"])
        return Page(items, next_after)

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
        return [
            AuditEvent(
                r["time"], r["actor"], r["role"], r["action"], r["target"], r["detail"], r["id"]
            )
            for r in rows
        ]

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


def _token(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        user=row["user"],
        groups=frozenset(json.loads(row["groups_json"])),
        admin=bool(row["admin"]),
        secret_hash=bytes(row["secret_hash"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        issued_by=row["issued_by"],
        description=row["description"],
    )


def _token_row(t: TokenRecord) -> dict[str, object]:
    return {
        "id": t.id,
        "user": t.user,
        "groups_json": json.dumps(sorted(t.groups)),
        "admin": int(t.admin),
        "secret_hash": t.secret_hash,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "revoked_at": t.revoked_at,
        "issued_by": t.issued_by,
        "description": t.description,
    }


def audit_row(e: AuditEvent) -> dict[str, object]:
    return {
        "time": e.time,
        "actor": e.actor,
        "role": e.role,
        "action": e.action,
        "target": e.target,
        "detail": e.detail,
    }
