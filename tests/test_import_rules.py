"""The layering docs/architecture.md draws, checked on the source: every import statement of
every module (inside functions and TYPE_CHECKING blocks too), and what importing a package
really pulls in."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from import_kit import loaded_after, schedctl_code

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "boruta_scheduler": ROOT / "services/scheduler/src/boruta_scheduler",
    "boruta_dryad": ROOT / "services/dryad/src/boruta_dryad",
    "boruta_client": ROOT / "clients/python/src/boruta_client",
    "boruta": ROOT / "protos/python/src/boruta",
}
SCHEDULER_ADAPTERS = (
    "app",
    "store",
    "rpc",
    "dryads",
    "tunnels",
    "relay",
    "config",
    "main",
    "listing",
    "web",
)
# What the relay process may not hold: it forwards bytes and knows nothing of scheduling.
RELAY_FORBIDDEN = ("core", "app", "store", "rpc", "dryads", "config", "main", "listing", "web")
RELAY_ALLOWED = ("boruta_scheduler.rpc.status",)


def scheduler(*names: str) -> tuple[str, ...]:
    return tuple(f"boruta_scheduler.{name}" for name in names)


@dataclass(frozen=True)
class Rule:
    """Modules under `package` may not import a module under any of `forbidden`, except the
    modules in `allowed` (and names imported from them): single modules, not packages."""

    package: str
    forbidden: tuple[str, ...]
    why: str
    allowed: tuple[str, ...] = ()


RULES = (
    Rule(
        "boruta_scheduler.core",
        (
            "grpc",
            "sqlite3",
            "asyncio",
            "threading",
            "time",
            "datetime",
            "psycopg",
            "prometheus_client",
            "aiohttp",
            *scheduler(*SCHEDULER_ADAPTERS),
        ),
        "the core is pure: no transport, database, event loop, clock or metrics library; time "
        "is passed in, and metrics read the core's tallies from outside",
    ),
    Rule(
        "boruta_scheduler.types",
        ("grpc", "sqlite3", "asyncio", *scheduler(*SCHEDULER_ADAPTERS, "core")),
        "the shared types are the root every layer builds on",
    ),
    Rule(
        "boruta_scheduler.errors",
        ("grpc", "sqlite3", "asyncio", *scheduler(*SCHEDULER_ADAPTERS, "core")),
        "the error hierarchy has no grpc import; rpc/status.py maps it to codes",
    ),
    Rule(
        "boruta_scheduler.app",
        ("grpc", "aiohttp", *scheduler("rpc", "main", "web")),
        "use cases know nothing of the transport that calls them",
    ),
    Rule(
        "boruta_scheduler.store",
        ("grpc", "asyncio", *scheduler("app", "rpc", "dryads", "tunnels", "web")),
        "the store is an adapter the application uses, never the other way round",
    ),
    Rule(
        "boruta_scheduler.relay",
        ("sqlite3", "psycopg", *scheduler(*RELAY_FORBIDDEN)),
        "the relay is a small process of its own: tunnels only, no scheduling state",
        # The one status table (grpc and errors only), so the relay codes errors as all do.
        RELAY_ALLOWED,
    ),
    Rule("boruta_dryad", ("boruta_scheduler", "boruta_client"), "the dryad runs on boards alone"),
    Rule(
        "boruta_client",
        ("boruta_scheduler", "boruta_dryad"),
        "the client is installed without the services",
    ),
    Rule(
        "boruta",
        ("boruta_scheduler", "boruta_dryad", "boruta_client"),
        "the shared API package is below every service and the client",
    ),
)


def module_name(package: str, path: Path) -> str:
    parts = path.relative_to(SOURCES[package]).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((package, *parts))


def imports_of(name: str, path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in path names, with its line (relative imports
    resolved against the module's own package)."""
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # "from pkg import mod" may name a submodule: judge pkg.mod as well as pkg.
            found += [(node.lineno, base)]
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def modules() -> list[tuple[str, Path]]:
    found = []
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            if "v1" in path.relative_to(folder).parts:  # generated stubs
                continue
            found.append((module_name(package, path), path))
    return found


def test_every_rule_covers_modules() -> None:
    """A rule whose package has moved or been renamed would pass by checking nothing."""
    names = [name for name, _ in modules()]
    for rule in RULES:
        assert any(under(name, rule.package) for name in names), rule.package


def test_no_module_imports_across_its_layer() -> None:
    broken = []
    for name, path in modules():
        for rule in RULES:
            if not under(name, rule.package):
                continue
            for line, imported in imports_of(name, path):
                hit = next((f for f in rule.forbidden if under(imported, f)), None)
                if hit is not None and not any(under(imported, a) for a in rule.allowed):
                    where = path.relative_to(ROOT)
                    broken.append(f"{where}:{line} imports {imported}: {rule.why}")
    assert not broken, "\n".join(broken)


def test_the_checker_sees_relative_and_nested_imports(tmp_path: Path) -> None:
    source = tmp_path / "scheduler.py"
    source.write_text(
        "from .. import app\nfrom ..store import sqlite\ndef f():\n    import asyncio\n"
    )
    found = {imported for _, imported in imports_of("boruta_scheduler.core.scheduler", source)}
    assert {"boruta_scheduler.app", "boruta_scheduler.store.sqlite", "asyncio"} <= found


# Users start schedctl and scripts many times a day: SSH (paramiko, which loads invoke)
# and certificate parsing (cryptography) load only for the commands that use them, and
# gRPC and asyncio once a command calls the scheduler (not for --help or a usage error).
CLIENT_HEAVY = ("paramiko", "invoke", "cryptography")
CLIENT_CALLS = ("grpc", "asyncio")


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        (
            "boruta_scheduler.core",
            ("grpc", "sqlite3", "asyncio", "psycopg", "prometheus_client", "aiohttp"),
        ),
        ("boruta_dryad", ("boruta_scheduler", "boruta_client")),
        ("boruta_client", ("boruta_scheduler", "boruta_dryad", *CLIENT_HEAVY, *CLIENT_CALLS)),
        ("schedctl.main", (*CLIENT_HEAVY, *CLIENT_CALLS, "yaml")),
        # Metrics cost 0.6 s of imports: loaded only when a metrics port is configured.
        ("boruta_scheduler.main", ("prometheus_client", "aiohttp", "jinja2")),
        ("boruta_dryad.main", ("prometheus_client", "aiohttp")),
    ],
)
def test_importing_a_package_pulls_in_nothing_forbidden(
    package: str, forbidden: tuple[str, ...]
) -> None:
    """What a fresh interpreter holds after the import, so a forbidden module reached through
    a third-party package counts too."""
    loaded = loaded_after(f"import {package}", forbidden)
    assert loaded == [], f"importing {package} loads {' '.join(loaded)}"


@pytest.mark.parametrize("args", [("--help",), ("requests", "--help"), ("ssh", "--help")])
def test_schedctl_help_loads_no_client(args: tuple[str, ...]) -> None:
    loaded = loaded_after(schedctl_code(*args), (*CLIENT_HEAVY, *CLIENT_CALLS, "yaml"))
    assert loaded == [], f"schedctl {' '.join(args)} loads {' '.join(loaded)}"


def test_the_relay_process_loads_no_scheduling() -> None:
    """boruta-relay runs beside the scheduler for days: it holds the tunnels and nothing of
    the scheduler's core, store or servicers."""
    forbidden = ("sqlite3", "psycopg", *scheduler(*RELAY_FORBIDDEN))
    probe = (
        "import sys, boruta_scheduler.relay.main\n"
        f"print(' '.join(sorted(m for m in sys.modules if m.startswith({forbidden!r})"
        f" and m not in {(*RELAY_ALLOWED, 'boruta_scheduler.rpc')!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == [], f"the relay loads {result.stdout.strip()}"
