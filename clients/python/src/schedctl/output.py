"""Printing data as a table a person can read, or as JSON or YAML a program can parse."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

FORMATS = ("table", "json", "yaml")
Column = tuple[str, Callable[[Any], object]]


def jsonable(value: Any) -> Any:
    """Plain JSON values: enums by name, times as ISO 8601 UTC, sets as sorted lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, frozenset | set):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "-"
    return span((now or datetime.now(UTC)) - moment)


def span(delta: timedelta) -> str:
    """A short human duration: 45s, 12m, 3h20m, 2d4h."""
    seconds = int(abs(delta.total_seconds()))
    sign = "-" if delta.total_seconds() < 0 else ""
    if seconds < 60:
        return f"{sign}{seconds}s"
    if seconds < 3600:
        return f"{sign}{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{sign}{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{sign}{seconds // 86400}d{seconds % 86400 // 3600}h"


def caps_text(caps: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(caps.items()) if k != "UUID") or "-"


def table(rows: Sequence[Any], columns: Sequence[Column]) -> str:
    cells = [[h for h, _ in columns]]
    cells += [[_cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, frozenset | set | list | tuple):
        return ",".join(sorted(str(v) for v in value)) or "-"
    return str(value)


def details(pairs: Iterable[tuple[str, object]]) -> str:
    """A record as aligned 'key: value' lines; an empty key goes on with the line above."""
    items = [(k, _cell(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k + ':' if k else '':<{width + 1}} {v}" for k, v in items)


def _yaml(data: Any) -> str:
    # PyYAML loads only for -o yaml: most runs never print YAML.
    import yaml

    return yaml.safe_dump(jsonable(data), sort_keys=True).rstrip()


def emit(fmt: str, data: Any, human: Callable[[], str]) -> None:
    """Print data in the chosen format; `human` renders the table form."""
    if fmt == "json":
        click.echo(json.dumps(jsonable(data), indent=2, sort_keys=True))
    elif fmt == "yaml":
        click.echo(_yaml(data))
    else:
        click.echo(human())


def emit_event(fmt: str, data: Any, human: str) -> None:
    """One item of a stream: a JSON line, a YAML document, or a table line."""
    if fmt == "json":
        click.echo(json.dumps(jsonable(data), sort_keys=True))
    elif fmt == "yaml":
        click.echo("---\n" + _yaml(data))
    else:
        click.echo(human)
