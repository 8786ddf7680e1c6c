"""Loads named SQL statements and migrations from the package's .sql files."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries(dialect: str, file: str = "queries.sql") -> dict[str, str]:
    """Statements of sql/<dialect>/<file>, by the name on their '-- name:' line."""
    text = resources.files(__package__).joinpath("sql", dialect, file).read_text()
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def load_migrations(dialect: str) -> list[tuple[int, str]]:
    """(version, script) of every sql/<dialect>/migrations/NNNN_*.sql, in version order."""
    folder = resources.files(__package__).joinpath("sql", dialect, "migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)
