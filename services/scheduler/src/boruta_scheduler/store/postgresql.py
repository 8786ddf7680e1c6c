"""The shared store: one PostgreSQL database, for farms whose state must outlive one host.

Every write goes through one method, _transaction: one transaction on the one writer
connection, committed with synchronous_commit on (durable, and replicated where the
server is told to, before the call returns). That is where a leader's epoch fences its
writes: once another scheduler has taken the lease (store/leader.py), each raises NotLeader.
Reads take a connection from a small pool, so a server restart costs the reads in
flight, not the process.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import errors
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from boruta_scheduler.core import Changes, Snapshot
from boruta_scheduler.errors import NotLeader, StoreUnavailable
from boruta_scheduler.listing import Page, RequestQuery
from boruta_scheduler.store import pgfollow
from boruta_scheduler.store.base import (
    CannotOpenStore,
    ChangedSince,
    HistoryPage,
    Purged,
    safe_url,
)
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

_Q = load_queries("postgresql")
_PURGES = ("purge_requests", "purge_history", "purge_audit")
# Reads run on the service's four reader threads and on asyncio's default executor.
READERS = 8
# A connection the pool hands out is checked first; one a server restart broke is replaced.
CONNECT_TIMEOUT_S = 10
# The server ends a session that sits this long inside a transaction: a leader paused there
# (SIGSTOP, a frozen VM) would otherwise hold the lease row, and with it the takeover.
IDLE_IN_TRANSACTION_MS = 2000
# What boruta_fence raises (queries.sql) when another scheduler holds the lease.
FENCED = "BR001"

Connection = psycopg.Connection[DictRow]


class PostgreSQLStore:
    """Implements the Store contract on one PostgreSQL database (URL as libpq takes it).

    Opening raises StoreUnavailable when no connection can be made (the server may be on
    its way up), and CannotOpenStore when the database refuses its migrations (privileges,
    read-only).
    """

    def __init__(self, url: str, *, readers: int = READERS) -> None:
        self.where = safe_url(url)
        self._url = url
        self._lock = threading.Lock()  # the writer connection, for one transaction at a time
        self._writer: Connection | None = None
        # Set once this scheduler leads (app/leadership.py): every write checks it.
        self.epoch: int | None = None
        # Told (from the writer's thread) when a commit is fenced, so the leader steps down.
        self.on_fenced: Callable[[], None] | None = None
        # A standby's following (live_state, changes_since) shares decoded caps and groups,
        # and knows when the server its copy was loaded from started.
        self._follow_decoder = Decoder()
        self._follow_origin: float | None = None
        try:
            self._writer = self._connect()
        except psycopg.OperationalError as exc:
            # No server to talk to (yet): a restart may find it, unlike the errors below.
            raise _unavailable(exc, self.where) from exc
        try:
            self._migrate()
            self._pool: ConnectionPool[Connection] = ConnectionPool(
                url,
                min_size=1,
                max_size=readers,
                kwargs=_connect_options(),
                check=ConnectionPool.check_connection,
                name="boruta-store-readers",
                timeout=CONNECT_TIMEOUT_S,
                open=False,
            )
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except (psycopg.Error, StoreUnavailable) as exc:
            self._close_writer()
            error = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
            cause = exc.cause if isinstance(exc, StoreUnavailable) else _cause(exc)
            raise CannotOpenStore(
                f"cannot open the store {self.where}: {cause} ({error})"
            ) from None

    def _connect(self) -> Connection:
        conn = psycopg.connect(self._url, **_connect_options())
        # Durable before acknowledged, whatever the server's default: a commit returns only
        # once it is flushed (and, where configured, on a synchronous standby).
        if conn.execute("SHOW synchronous_commit").fetchone() == {"synchronous_commit": "off"}:
            conn.execute("SET synchronous_commit = on")
        conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")
        return conn

    @contextlib.contextmanager
    def _transaction(self, *, fenced: bool = True, pipelined: bool = False) -> Iterator[Connection]:
        """The one way anything is written: one transaction on the writer connection, whose
        errors come out as StoreUnavailable naming the cause. A connection that broke is
        dropped and the next transaction opens a new one. A leader's transaction starts
        with the fence (boruta_fence: NotLeader once another scheduler took the lease).
        Pipelined, BEGIN, the fence, the body and COMMIT go out together."""
        with self._lock:
            try:
                if self._writer is None or self._writer.closed:
                    self._writer = self._connect()
                conn = self._writer
                with contextlib.ExitStack() as stack:
                    if pipelined:
                        stack.enter_context(conn.pipeline())
                    stack.enter_context(conn.transaction())
                    if fenced and self.epoch is not None:
                        conn.execute(_Q["leader_fence"], {"epoch": self.epoch})
                    yield conn
            except psycopg.Error as exc:
                if exc.sqlstate == FENCED:
                    if self.on_fenced is not None:
                        self.on_fenced()
                    raise NotLeader(
                        f"another scheduler leads {self.where} ({exc.diag.message_primary}): "
                        "this one writes nothing more"
                    ) from exc
                if self._writer is not None and self._writer.broken:
                    self._close_writer()
                raise _unavailable(exc, self.where) from exc

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise _unavailable(exc, self.where) from exc

    def _migrate(self) -> None:
        for number, script in load_migrations("postgresql"):
            with self._transaction() as conn:
                # Another scheduler may be migrating the same database: one at a time.
                conn.execute(_Q["lock_schema"])
                conn.execute(_Q["create_schema_version"])
                row = conn.execute(_Q["get_schema_version"]).fetchone()
                if row is None or row["version"] >= number:
                    continue
                log.info("applying migration", extra={"store": self.where, "version": number})
                conn.execute(script)
                conn.execute(_Q["set_schema_version"], {"version": number})

    def load(self) -> Snapshot:
        with self._transaction(fenced=False) as conn:  # a read: the writes are fenced
            # One snapshot of all three, whatever commits meanwhile.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # Decoding a long queue between the statements is no pause to be cut short.
            conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            decoder = Decoder()  # equal caps, groups and owners come back shared
            requests = [request_view(row, decoder) for row in conn.execute(_Q["live_requests"])]
            workers = [worker_view(row) for row in conn.execute(_Q["all_workers"])]
            row = conn.execute(_Q["get_last_request_id"]).fetchone()
            last_token = conn.execute(_Q["get_last_token_id"]).fetchone()
            tokens = [token_record(r) for r in conn.execute(_Q["select_tokens"])]
            stacks = [stack_view(r) for r in conn.execute(_Q["select_stacks"])]
        assert row is not None and last_token is not None
        return Snapshot(requests, workers, row["value"], tokens, stacks, last_token["value"])

    def live_state(self) -> tuple[Snapshot, int]:
        """What load() gives, as lists, and the change number it is as of (for a standby's
        warm copy, app/warm.py)."""
        with self._reading() as conn:
            snapshot, seq, self._follow_origin = pgfollow.read_live(conn, self._follow_decoder)
        return snapshot, seq

    def changes_since(self, since: int) -> ChangedSince:
        """Every change committed after the change number since, as of one snapshot; a gap
        where the server is not the one the last live_state was read from."""
        with self._reading() as conn:
            return pgfollow.read_changes(conn, since, self._follow_decoder, self._follow_origin)

    def commit(self, changes: Changes) -> None:
        statements = commit_statements(changes)
        # Pipelined: the statements go out together, one wait for all their results.
        with self._transaction(pipelined=True) as conn, conn.cursor() as cur:
            for name, rows in statements:
                cur.executemany(_Q[name], rows)

    def get_request(self, request_id: int) -> RequestView | None:
        if not 0 < request_id < 2**63:
            return None
        with self._reading() as conn:
            row = conn.execute(_Q["get_request"], {"id": request_id}).fetchone()
        return request_view(row) if row else None

    def find_request(self, owner: str, idempotency_key: str) -> RequestView | None:
        params = {"owner": owner, "key": idempotency_key}
        with self._reading() as conn:
            row = conn.execute(_Q["find_request"], params).fetchone()
        return request_view(row) if row else None

    def list_requests(self, query: RequestQuery) -> Page[RequestView]:
        sql, params = select_requests(query, "%s")
        with self._reading() as conn:
            rows = conn.execute(sql, params).fetchall()
        return request_page(query, rows)

    def worker_history(self, uuid: str, limit: int, before: int | None = None) -> HistoryPage:
        params = {"uuid": uuid, "before": 2**62 if before is None else before, "limit": limit + 1}
        with self._reading() as conn:
            rows = conn.execute(_Q["worker_history"], params).fetchall()
        entries = [history_entry(row) for row in rows[:limit]]
        return HistoryPage(entries, rows[limit - 1]["seq"] if len(rows) > limit else None)

    def audit(self, limit: int, before: int | None = None) -> list[AuditEvent]:
        params = {"before": 2**63 - 1 if before is None else before, "limit": limit}
        with self._reading() as conn:
            return [audit_event(row) for row in conn.execute(_Q["select_audit"], params)]

    def purge(self, before: float, limit: int) -> Purged:
        params = {"before": before, "limit": limit}
        with self._transaction() as conn:
            counts = [conn.execute(_Q[name], params).rowcount for name in _PURGES]
        return Purged(*counts)

    def usage(self, query: UsageQuery) -> list[UsageTotals]:
        with self._reading() as conn:
            return [
                usage_totals(row) for row in conn.execute(_Q["usage_totals"], usage_params(query))
            ]

    def purge_usage(self, before: float, limit: int) -> int:
        with self._transaction() as conn:
            return conn.execute(_Q["purge_usage"], {"before": before, "limit": limit}).rowcount

    def page_token_key(self) -> bytes:
        """The key that signs list page tokens, the same for every scheduler on this
        database: the first to ask makes it, under the schema lock; the others read it."""
        with self._transaction(fenced=False) as conn:  # no state: any scheduler may make it
            conn.execute(_Q["lock_schema"])
            conn.execute(_Q["create_page_token_key"])
            conn.execute(_Q["insert_page_token_key"], {"key": secrets.token_bytes(32)})
            row = conn.execute(_Q["get_page_token_key"]).fetchone()
        assert row is not None
        return bytes(row["key"])

    def scrub(self) -> bool:
        # Old row versions and write-ahead log segments are the server's to reuse; keys at
        # rest there are protected by the server's disk encryption (docs/security.md).
        return True

    def close(self) -> None:
        self._pool.close()
        with self._lock:
            self._close_writer()

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


def _connect_options() -> dict[str, Any]:
    return {
        "autocommit": True,  # transactions are explicit (Connection.transaction)
        "row_factory": dict_row,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": "boruta-scheduler",
    }


def _unavailable(exc: psycopg.Error, where: str) -> StoreUnavailable:
    cause = _cause(exc)
    return StoreUnavailable(f"{cause}: cannot use {where} ({exc})", cause)


def _cause(exc: psycopg.Error) -> str:
    """What an operator should look at, in a few words."""
    if isinstance(exc, errors.DiskFull):
        return "disk full"
    if isinstance(exc, errors.ReadOnlySqlTransaction):
        return "read-only"
    if isinstance(exc, errors.IoError):
        return "I/O error"
    if isinstance(exc, errors.InsufficientPrivilege):
        return "permission denied"
    if isinstance(exc, psycopg.OperationalError):
        return "database unreachable"
    return "store error"
