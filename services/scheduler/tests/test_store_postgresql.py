"""What only the PostgreSQL store does: migrations shared with other schedulers, lost
connections, server settings. What every store does is in test_store_contract.py."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
from boruta_scheduler.core import Changes
from boruta_scheduler.errors import StoreUnavailable
from boruta_scheduler.store import CannotOpenStore, open_store, safe_url
from boruta_scheduler.store.codec import request_row, worker_row
from boruta_scheduler.store.postgresql import PostgreSQLStore
from boruta_scheduler.store.sqlfile import load_migrations
from core_kit import CoreKit
from pg_kit import postgres_fixture, postgres_url_fixture  # noqa: F401 - fixtures
from test_store_contract import (
    NEW_COLUMNS,
    NOBODY,
    assert_read_as_before_host_keys,
    commit_all,
    farm_changes,
)

SQL = Path(__file__).resolve().parents[1] / "src/boruta_scheduler/store/sql"


def schema_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    assert row is not None
    return int(row[0])


def test_migrations_are_numbered_and_named_as_sqlites() -> None:
    """Version N is the same schema change in both dialects."""
    names = {
        dialect: sorted(p.name for p in (SQL / dialect / "migrations").glob("*.sql"))
        for dialect in ("sqlite", "postgresql")
    }
    assert names["postgresql"] == names["sqlite"]
    # Increasing, with no number used twice; a number may be missing for a while, since
    # work in parallel is given numbers ahead (docs/architecture.md, the store).
    numbers = [n for n, _ in load_migrations("postgresql")]
    assert numbers == sorted(set(numbers)) and numbers[0] == 1


def test_survives_reopen(postgres_url: str) -> None:
    kit = CoreKit()
    farm_changes(kit)
    first = PostgreSQLStore(postgres_url)
    commit_all(first, kit)
    before = first.load()
    waiting = first.get_request(2)
    first.close()
    second = open_store(postgres_url)
    assert isinstance(second, PostgreSQLStore)
    assert second.load() == before
    assert waiting is not None and second.get_request(2) == waiting
    second.close()
    assert schema_version(postgres_url) == load_migrations("postgresql")[-1][0]


def test_schedulers_starting_together_migrate_once(postgres_url: str) -> None:
    stores: list[PostgreSQLStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(PostgreSQLStore(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(stores) == 4
    stores[0].commit(Changes(last_request_id=5))
    assert all(s.load().last_request_id == 5 for s in stores)
    for store in stores:
        store.close()
    assert schema_version(postgres_url) == load_migrations("postgresql")[-1][0]


def test_schedulers_asking_together_share_one_page_token_key(postgres_url: str) -> None:
    """Whichever asks first makes the key; every other scheduler, then or later, reads it."""
    stores = [PostgreSQLStore(postgres_url, readers=1) for _ in range(4)]
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda s=s: keys.append(s.page_token_key())) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    later = PostgreSQLStore(postgres_url, readers=1)
    keys.append(later.page_token_key())
    for store in [*stores, later]:
        store.close()
    assert len(keys) == 5 and len(set(keys)) == 1 and len(keys[0]) == 32


def test_a_database_from_before_host_keys_migrates_and_reads_them_as_none(
    postgres_url: str,
) -> None:
    """A database at schema version 4 is migrated like a SQLite file of that version."""
    kit = CoreKit()
    kit.add_worker("w1")
    kit.add_worker("w2")
    kit.core.new_request(kit.now, "ann", NOBODY, {"UUID": "w1"})
    kit.drain()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE schema_version (only_row BOOLEAN PRIMARY KEY, version INT)")
        for number, script in load_migrations("postgresql"):
            if number <= 4:
                conn.execute(script)
        conn.execute("INSERT INTO schema_version VALUES (TRUE, 4)")
        for changes in kit.changes:
            for table, key, rows in (
                ("workers", "uuid", [worker_row(w) for w in changes.workers]),
                ("requests", "id", [request_row(r) for r in changes.requests]),
            ):
                for row in rows:
                    old = {k: v for k, v in row.items() if k not in NEW_COLUMNS}
                    marks = ", ".join(f"%({k})s" for k in old)
                    conn.execute(f"DELETE FROM {table} WHERE {key} = %({key})s", old)
                    conn.execute(
                        f"INSERT INTO {table} ({', '.join(old)}) VALUES ({marks})",
                        old,
                    )
    store = PostgreSQLStore(postgres_url)
    try:
        snapshot = store.load()
    finally:
        store.close()
    assert_read_as_before_host_keys(snapshot)


def terminate_other_sessions(url: str) -> int:
    """What a server restart or a network cut does to the store's connections."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def test_a_lost_connection_fails_one_commit_then_the_store_reconnects(postgres_url: str) -> None:
    store = PostgreSQLStore(postgres_url)
    store.commit(Changes(last_request_id=1))
    assert store.get_request(1) is None
    assert terminate_other_sessions(postgres_url) >= 2  # the writer and a reader
    with pytest.raises(StoreUnavailable) as refused:
        store.commit(Changes(last_request_id=2))
    assert refused.value.cause == "database unreachable"
    assert "postgresql://" in str(refused.value)
    store.commit(Changes(last_request_id=3))
    assert store.load().last_request_id == 3
    assert store.get_request(1) is None  # the pool replaced its broken connection
    store.close()


def test_a_read_only_database_is_named_as_the_cause(postgres_url: str) -> None:
    store = PostgreSQLStore(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    terminate_other_sessions(postgres_url)  # new sessions take the setting
    with pytest.raises(StoreUnavailable):
        store.commit(Changes(last_request_id=2))
    with pytest.raises(StoreUnavailable) as refused:
        store.commit(Changes(last_request_id=2))
    assert refused.value.cause == "read-only"
    store.close()


def test_commits_are_durable_even_where_the_server_says_otherwise(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET synchronous_commit = off')
    store = PostgreSQLStore(postgres_url)
    with store._transaction() as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
    assert row == {"synchronous_commit": "on"}
    store.close()


def test_an_unreachable_server_is_unavailable_without_showing_the_password(
    tmp_path: Path,
) -> None:
    """Not up yet: worth a restart (StoreUnavailable, exit 1), unlike a refusal."""
    url = f"postgresql://boruta:s3cret@/boruta?host={tmp_path}&port=1"
    with pytest.raises(StoreUnavailable) as refused:
        open_store(url)
    message = str(refused.value)
    assert refused.value.cause == "database unreachable"
    assert "s3cret" not in message and "boruta:***@" in message
    assert safe_url("postgresql:///db?host=/run") == "postgresql:///db?host=/run"


def test_a_server_that_refuses_stops_the_start(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE boruta_guest LOGIN")
    name = psycopg.conninfo.conninfo_to_dict(postgres_url)["dbname"]
    url = postgres_url.replace("postgres@", "boruta_guest@")
    assert url != postgres_url
    try:
        with pytest.raises(CannotOpenStore) as refused:
            open_store(url)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("REASSIGN OWNED BY boruta_guest TO postgres")
            conn.execute("DROP ROLE boruta_guest")
    assert "permission denied" in str(refused.value) and str(name) in str(refused.value)
