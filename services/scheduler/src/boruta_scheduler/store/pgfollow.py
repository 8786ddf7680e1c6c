"""Reading a PostgreSQL store by its change numbers (migration 0008): the live state with the
number it is as of, and what changed after a number. A standby keeps its warm copy with
these (app/warm.py); each read is one repeatable-read snapshot on a connection of its own.

Change numbers grow in commit order because only one writer commits at a time (see the
migration), so a snapshot that holds a change numbered N holds every change below N: what
changed after N is exactly the rows numbered above it, the tombstones of rows deleted
after it, and the purge's mark, which tells when a request finished after N has already
been purged.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import DictRow

from boruta_scheduler.core import Snapshot
from boruta_scheduler.store.base import ChangedSince
from boruta_scheduler.store.codec import (
    Decoder,
    request_view,
    stack_view,
    token_record,
    worker_view,
)
from boruta_scheduler.store.sqlfile import load_queries

_Q = load_queries("postgresql")
_F = load_queries("postgresql", "follow.sql")

Connection = psycopg.Connection[DictRow]


def _snapshot(conn: Connection) -> None:
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def read_live(conn: Connection, decoder: Decoder) -> tuple[Snapshot, int, float]:
    """The live state as Store.load gives it (lists, in its order), its change number and
    when the server it was read from started."""
    with conn.transaction():
        _snapshot(conn)
        requests = [request_view(row, decoder) for row in conn.execute(_Q["live_requests"])]
        workers = [worker_view(row) for row in conn.execute(_Q["all_workers"])]
        tokens = [token_record(row) for row in conn.execute(_Q["select_tokens"])]
        stacks = [stack_view(row) for row in conn.execute(_Q["select_stacks"])]
        counters = conn.execute(_F["counters"]).fetchone()
        seq = conn.execute(_F["high_water"]).fetchone()
    assert counters is not None and seq is not None
    snapshot = Snapshot(
        requests, workers, counters["last_request_id"], tokens, stacks, counters["last_token_id"]
    )
    return snapshot, int(seq["seq"]), float(counters["origin"])


def read_changes(
    conn: Connection, since: int, decoder: Decoder, origin: float | None
) -> ChangedSince:
    """Every change committed after since, as of one snapshot; origin is when the server
    the copy was loaded from started (None: unknown)."""
    params = {"since": since}
    # Pipelined: the six reads go out together, one wait for all of them.
    with conn.pipeline(), conn.transaction():
        _snapshot(conn)
        cursors = [
            conn.execute(_F[name], params)
            for name in (
                "changed_requests",
                "changed_workers",
                "changed_tokens",
                "changed_stacks",
                "tombstones",
            )
        ]
        counting = conn.execute(_F["counters"])
        request_rows, worker_rows, token_rows, stack_rows, tombstones = [
            c.fetchall() for c in cursors
        ]
        counters = counting.fetchone()
    assert counters is not None
    seq = max(
        (
            row["change_seq"]
            for rows in (request_rows, worker_rows, token_rows, stack_rows, tombstones)
            for row in rows
        ),
        default=since,
    )
    return ChangedSince(
        since=since,
        seq=seq,
        requests=[request_view(row, decoder) for row in request_rows],
        workers=[worker_view(row) for row in worker_rows],
        removed_workers=[row["key"] for row in tombstones if row["kind"] == "worker"],
        tokens=[token_record(row) for row in token_rows],
        removed_tokens=[int(row["key"]) for row in tombstones if row["kind"] == "token"],
        stacks=[stack_view(row) for row in stack_rows],
        removed_stacks=[row["key"] for row in tombstones if row["kind"] == "stack"],
        last_request_id=int(counters["last_request_id"]),
        last_token_id=int(counters["last_token_id"]),
        gap=_gap(since, counters, origin),
    )


def _gap(since: int, counters: DictRow, origin: float | None) -> str:
    """Why changes read after since cannot bring a copy up to date, or ""."""
    if origin is not None and float(counters["origin"]) != origin:
        return "the database server restarted or is another one since the copy was loaded"
    if int(counters["purged_change_seq"]) > since:
        return f"the purge deleted a request changed after {since}"
    return ""
