"""A throwaway PostgreSQL cluster for the tests: one per test session, one fresh database
per test, all removed afterwards.

Without PostgreSQL's server programs the tests that need it are skipped, except where
BORUTA_REQUIRE_SYSTEM=1 is set (CI sets it): there they fail, so CI never passes by
skipping them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
from collections.abc import Iterator

import pytest
from boruta_scheduler.store.devpg import SUPERUSER, DevPostgres, find_bindir


def _missing(reason: str) -> None:
    if os.environ.get("BORUTA_REQUIRE_SYSTEM") == "1":
        pytest.fail(f"{reason}, and BORUTA_REQUIRE_SYSTEM=1 says this test must run")
    pytest.skip(reason)


@contextlib.contextmanager
def cluster() -> Iterator[DevPostgres]:
    """A running cluster (fsync off: tests do not cut power), stopped and removed after."""
    try:
        find_bindir()
        if os.geteuid() == 0:
            pwd.getpwnam(SUPERUSER)  # PostgreSQL runs as this user when we are root
    except (FileNotFoundError, KeyError) as exc:
        _missing(f"needs PostgreSQL's server programs and user (install postgresql): {exc}")
    with DevPostgres() as server:
        yield server


@contextlib.contextmanager
def database(server: DevPostgres) -> Iterator[str]:
    """A new empty database on server, dropped afterwards; yields its URL."""
    name = f"boruta_test_{secrets.token_hex(6)}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)


# Fixtures: a test module or conftest imports these two and asks for `postgres` or
# `postgres_url` by name.
@pytest.fixture(scope="session", name="postgres")
def postgres_fixture() -> Iterator[DevPostgres]:
    """One cluster for the whole session (started only if some test asks for it)."""
    with cluster() as server:
        yield server


@pytest.fixture(name="postgres_url")
def postgres_url_fixture(postgres: DevPostgres) -> Iterator[str]:
    """A fresh database of its own for each test."""
    with database(postgres) as url:
        yield url
