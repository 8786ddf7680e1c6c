"""The leader's lease in a shared PostgreSQL database (design rule 10): who leads, under
which epoch, and where its ports are. Blocking calls on a connection of its own, so that a
renewal never waits behind a commit."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg.rows import DictRow, dict_row

from boruta_scheduler.errors import StoreUnavailable
from boruta_scheduler.store.base import safe_url
from boruta_scheduler.store.sqlfile import load_queries

log = logging.getLogger(__name__)

_Q = load_queries("postgresql")


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """The row as it stands: live is whether its lease runs by the server's clock."""

    epoch: int
    holder: str
    address: str
    token_address: str
    live: bool


@dataclass(frozen=True, slots=True)
class Candidate:
    """A scheduler that may lead: its id and the addresses it advertises to clients."""

    holder: str
    address: str
    token_address: str


class LeaderLease:
    """Takes, renews and reads the lease row. Every call fails fast (timeout about the
    lease) with StoreUnavailable rather than hang; a broken connection is remade."""

    def __init__(self, url: str, lease: float) -> None:
        self.where = safe_url(url)
        self.lease = lease
        self._url = url
        self._conn: psycopg.Connection[DictRow] | None = None

    def _connection(self) -> psycopg.Connection[DictRow]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=max(1, round(self.lease)),
                # Over TCP, a peer gone silent fails the call within the lease rather than
                # never (ignored on a Unix socket).
                tcp_user_timeout=max(100, int(self.lease * 1000)),
                application_name="boruta-scheduler-lease",
            )
            millis = max(100, int(self.lease * 500))
            # A leader paused inside a transaction holds the row; we do not wait for it.
            self._conn.execute(f"SET lock_timeout = {millis}")
            self._conn.execute(f"SET statement_timeout = {millis * 2}")
            with self._conn.transaction():
                # Schedulers starting together: one creates the row, the others wait.
                self._conn.execute(_Q["lock_schema"])
                self._conn.execute(_Q["create_leader"])
        return self._conn

    def _run(self, name: str, params: dict[str, object]) -> DictRow | None:
        try:
            return self._connection().execute(_Q[name], params).fetchone()
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.broken:
                self.close()
            raise StoreUnavailable(
                f"cannot reach the lease in {self.where} ({exc})", "database unreachable"
            ) from exc

    def acquire(self, me: Candidate) -> int | None:
        """The new epoch if the lease had run out and is now ours, else None."""
        params = {
            "holder": me.holder,
            "address": me.address,
            "token_address": me.token_address,
            "lease": self.lease,
        }
        row = self._run("leader_acquire", params)
        return None if row is None else int(row["epoch"])

    def renew(self, epoch: int) -> bool:
        """Extend our lease; False once another scheduler holds a later epoch."""
        return self._run("leader_renew", {"epoch": epoch, "lease": self.lease}) is not None

    def release(self, epoch: int) -> None:
        self._run("leader_release", {"epoch": epoch})

    def current(self) -> LeaderInfo:
        row = self._run("leader_get", {})
        assert row is not None  # the migration inserts the one row
        return LeaderInfo(
            int(row["epoch"]),
            str(row["holder"]),
            str(row["address"]),
            str(row["token_address"]),
            bool(row["live"]),
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
