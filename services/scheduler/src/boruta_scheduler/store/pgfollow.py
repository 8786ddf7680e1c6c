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
from boruta_scheduler.store.codec import Decoder, request_view, token_record, worker_view
from boruta_scheduler.store.sqlfile import load_queries

_Q = load_queries("postgresql")
_F = load_queries("postgresql", "follow.sql")

Connection = psycopg.Connection[DictRow]


def _snapshot(conn: Connection) -> None:
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def read_live(conn: Connection, decoder: Decoder) -> tuple[Snapshot, int]:
    """The live state as Store.load gives it (lists, in its order), and its change number."""
    with conn.transaction():
        _snapshot(conn)
        requests = [request_view(row, decoder) for row in conn.execute(_Q["live_requests"])]
        workers = [worker_view(row) for row in conn.execute(_Q["all_workers"])]
        tokens = [token_record(row) for row in conn.execute(_Q["select_tokens"])]
        last = conn.execute(_Q["get_last_request_id"]).fetchone()
        seq = conn.execute(_F["high_water"]).fetchone()
    assert last is not None and seq is not None
    return Snapshot(requests, workers, last["value"], tokens), int(seq["seq"])


def read_changes(conn: Connection, since: int, decoder: Decoder) -> ChangedSince:
    """Every change committed after since, as of one snapshot."""
    params = {"since": since}
    # Pipelined: the five reads go out together, one wait for all of them.
    with conn.pipeline(), conn.transaction():
        _snapshot(conn)
        cursors = [
            conn.execute(_F[name], params)
            for name in ("changed_requests", "changed_workers", "changed_tokens", "tombstones")
        ]
        counting = conn.execute(_F["counters"])
        request_rows, worker_rows, token_rows, tombstones = [c.fetchall() for c in cursors]
        counters = counting.fetchone()
    assert counters is not None
    seq = max(
        (
            row["change_seq"]
            for rows in (request_rows, worker_rows, token_rows, tombstones)
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
        last_request_id=int(counters["last_request_id"]),
        purged_unseen=int(counters["purged_change_seq"]) > since,
    )
