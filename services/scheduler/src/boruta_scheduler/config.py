"""Scheduler configuration: frozen dataclasses filled from defaults, a TOML file,
BORUTA_* environment variables and command-line options, in rising precedence."""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from boruta.address import split_host_port

from boruta_scheduler.core import Policy

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds from '90', '90s', '15m', '1.5h', '2d' or a number."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 15m, 1h or 2d")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Where the scheduler listens and keeps its state."""

    listen: str = "127.0.0.1:50051"
    # Host users dial for their SSH tunnels; it goes into AccessInfo as is.
    public_host: str = "127.0.0.1"
    # Address the tunnels listen on (default: public_host).
    tunnel_bind: str = ""
    # "0": any free port; "LOW-HIGH": a range the firewall lets through.
    tunnel_ports: str = "0"
    # Unix socket of boruta-relay, which then holds the tunnels (empty: this process does).
    relay: str = ""
    store: str = ""
    data_dir: str = "/var/lib/boruta"
    # Finished requests, worker history and audit events are deleted this long after
    # they were last written (0: kept for ever).
    retention: float = 90 * 86400.0
    # Usage records (schedctl usage) are deleted this long after their job ended (0: kept
    # for ever); longer than the retention, so a year can be compared with the last.
    usage_retention: float = 400 * 86400.0
    # Bearer tokens are forgotten (deleted, and dropped from ListTokens) this long after
    # they stopped working, expired or revoked (0: kept for ever).
    token_retention: float = 30 * 86400.0
    heartbeat_interval: float = 10.0
    dryad_call_timeout: float = 60.0
    log_level: str = "INFO"
    # TLS: the farm's CA, this scheduler's certificate and key (schedctl pki). Without
    # them the scheduler serves plaintext only if told so, and only on loopback.
    max_watches_per_user: int = 32
    # Refused calls of one caller recorded one by one in the audit log; the rest are
    # counted and summed up in one event a minute.
    audit_refusals_per_minute: int = 60
    # A second port for callers with bearer tokens instead of client certificates
    # (server-only TLS); empty means none.
    listen_tokens: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    plaintext: bool = False
    # Several schedulers on one PostgreSQL store (design rule 10): how long a leader's lease
    # runs by the database's clock, and how often the leader renews it.
    lease: float = 2.0
    lease_renew: float = 0.5
    # A standby keeps a warm copy of the live state (app/warm.py), so that taking over reads
    # only the latest changes; off, it holds no copy and a takeover loads the store.
    standby_copy: bool = True
    # host:port clients are told to dial for the leader when this one leads (trailing
    # metadata of a standby's refusals); empty: public_host and the bound port.
    advertise: str = ""
    advertise_tokens: str = ""
    # host:port of the scheduler's HTTP port: Prometheus metrics (docs/metrics.md) and the
    # dashboard (docs/admin-guide.md); empty: none.
    metrics_listen: str = ""
    # Serve metrics to scrapes that show no certificate or token (loopback demos, tests).
    metrics_anonymous: bool = False
    # Connections the HTTP port holds open at most, in all and from one address: beyond,
    # it closes new ones at once, so that nobody can take the file descriptors the gRPC
    # ports need.
    metrics_max_connections: int = 256
    metrics_max_connections_per_address: int = 64
    # Serve the read-only dashboard on the HTTP port, and how often it samples utilisation.
    dashboard: bool = True
    dashboard_sample_interval: float = 60.0

    @property
    def tunnel_bind_host(self) -> str:
        return self.tunnel_bind or self.public_host

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite://{Path(self.data_dir).absolute() / 'boruta.db'}"


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Everything the scheduler process needs."""

    server: ServerConfig = field(default_factory=ServerConfig)
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True, slots=True)
class _Option:
    name: str
    section: str
    kind: str  # "str", "int", "bool" or "duration"
    help: str


_OPTIONS = [
    _Option("listen", "server", "str", "host:port to serve gRPC on (port 0 picks a free one)"),
    _Option("public_host", "server", "str", "host users dial for job SSH tunnels (AccessInfo)"),
    _Option("tunnel_bind", "server", "str", "address tunnels listen on (default: public host)"),
    _Option("tunnel_ports", "server", "str", "tunnel ports: 0 (any free) or LOW-HIGH"),
    _Option("relay", "server", "str", "Unix socket of boruta-relay, which then holds the tunnels"),
    _Option(
        "store",
        "server",
        "str",
        "store URL: sqlite:///path/boruta.db, postgresql://user@host/database or memory:",
    ),
    _Option("data_dir", "server", "str", "directory of the default SQLite store"),
    _Option(
        "retention",
        "server",
        "duration",
        "age after which finished requests, worker history and audit events are deleted (0: never)",
    ),
    _Option(
        "usage_retention",
        "server",
        "duration",
        "age after which usage records of ended jobs are deleted (0: never)",
    ),
    _Option(
        "token_retention",
        "server",
        "duration",
        "time after which tokens that expired or were revoked are forgotten (0: never)",
    ),
    _Option("heartbeat_interval", "server", "duration", "how often dryads should heartbeat"),
    _Option("dryad_call_timeout", "server", "duration", "timeout of one call to a dryad"),
    _Option("log_level", "server", "str", "DEBUG, INFO, WARNING or ERROR"),
    _Option("max_watches_per_user", "server", "int", "most watch streams one caller may hold"),
    _Option(
        "audit_refusals_per_minute",
        "server",
        "int",
        "refusals of one caller audited one by one per minute; the rest are counted",
    ),
    _Option("listen_tokens", "server", "str", "host:port for callers with bearer tokens (TLS)"),
    _Option("tls_ca", "server", "str", "the farm's CA certificate (PEM)"),
    _Option("tls_cert", "server", "str", "this scheduler's certificate (PEM)"),
    _Option("tls_key", "server", "str", "this scheduler's private key (PEM)"),
    _Option("plaintext", "server", "bool", "no TLS, identities taken as given (loopback only)"),
    _Option(
        "lease",
        "server",
        "duration",
        "PostgreSQL store: a leader's lease, after which a standby takes over",
    ),
    _Option("lease_renew", "server", "duration", "PostgreSQL store: how often a leader renews"),
    _Option(
        "standby_copy",
        "server",
        "bool",
        "PostgreSQL store: a standby keeps the live state warm, so takeover reads only changes",
    ),
    _Option(
        "advertise",
        "server",
        "str",
        "host:port standbys name for this leader (default: public host)",
    ),
    _Option(
        "advertise_tokens", "server", "str", "host:port of this leader's token port for standbys"
    ),
    _Option(
        "metrics_listen",
        "server",
        "str",
        "host:port of the scheduler's HTTP port: metrics at /metrics, the dashboard at / "
        "(port 0 picks one)",
    ),
    _Option(
        "metrics_anonymous",
        "server",
        "bool",
        "serve metrics to scrapes without a certificate or token (needed without TLS)",
    ),
    _Option(
        "metrics_max_connections",
        "server",
        "int",
        "most connections the HTTP port holds open; it closes new ones beyond",
    ),
    _Option(
        "metrics_max_connections_per_address",
        "server",
        "int",
        "most connections the HTTP port holds open from one client address",
    ),
    _Option("dashboard", "server", "bool", "serve the read-only dashboard on the HTTP port"),
    _Option(
        "dashboard_sample_interval",
        "server",
        "duration",
        "how often the dashboard samples each group's busy boards for its chart",
    ),
    _Option("default_priority", "policy", "int", "priority of requests that give none (1-16)"),
    _Option("max_priority", "policy", "int", "most important priority users may use (1-16)"),
    _Option("max_waiting_per_user", "policy", "int", "most waiting requests of one user"),
    _Option(
        "max_waiting_caps_bytes_per_user",
        "policy",
        "int",
        "most bytes of caps one user's waiting requests may carry in all",
    ),
    _Option(
        "max_waiting_cap_sets_per_user",
        "policy",
        "int",
        "most different sets of caps (or of profiles) among one user's waiting requests",
    ),
    _Option("default_deadline", "policy", "duration", "deadline of requests that give none"),
    _Option("job_timeout", "policy", "duration", "how long a job runs unless prolonged"),
    _Option("prolong_step", "policy", "duration", "how far ProlongAccess pushes the timeout"),
    _Option("min_job_timeout", "policy", "duration", "shortest job timeout a request may ask"),
    _Option("max_prolongs", "policy", "int", "most ProlongAccess calls per job"),
    _Option("max_job_duration", "policy", "duration", "longest total time of one job"),
    _Option("heartbeat_timeout", "policy", "duration", "silence after which a worker FAILS"),
    _Option("healthcheck_interval", "policy", "duration", "how often IDLE workers are checked"),
    _Option("healthcheck_before_prepare", "policy", "bool", "check a worker before each Prepare"),
    _Option(
        "quarantine_failures",
        "policy",
        "int",
        "failures within quarantine_window, heartbeat losses aside, that put a board into "
        "MAINTENANCE (0: never; at most 64)",
    ),
    _Option(
        "quarantine_window",
        "policy",
        "duration",
        "how far back failures count towards quarantine_failures",
    ),
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_name(option: str) -> str:
    return "BORUTA_" + option.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boruta-scheduler",
        description="The boruta scheduler. Every option can also be set with the "
        "environment variable shown, or in the TOML file given with --config.",
    )
    parser.add_argument(
        "--config", default=os.environ.get("BORUTA_CONFIG"), help="TOML file [env: BORUTA_CONFIG]"
    )
    for opt in _OPTIONS:
        parser.add_argument(
            "--" + opt.name.replace("_", "-"),
            dest=opt.name,
            default=None,
            help=f"{opt.help} [env: {env_name(opt.name)}]",
        )
    return parser


def _convert(opt: _Option, value: Any) -> Any:
    if opt.kind == "duration":
        return parse_duration(value)
    if opt.kind == "int":
        return int(value)
    if opt.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in _TRUE | _FALSE:
            raise ValueError(f"{opt.name} must be true or false, got {value!r}")
        return text in _TRUE
    return str(value)


def _file_only(name: str, value: Any, default: Any) -> Any:
    """A setting only the TOML file sets (no option to convert it), checked against its
    default's type, so that a wrong one is refused at start rather than at first use."""
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if isinstance(default, Mapping):
        if isinstance(value, Mapping) and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in value.items()
        ):
            return dict(value)
        raise ValueError(f"{name} must map names to whole numbers, e.g. {{ lab = 4 }}")
    raise ValueError(f"{name} cannot be set in the file")  # no such setting today


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> SchedulerConfig:
    """Config from defaults < TOML file < environment < command line."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, dict[str, Any]] = {"server": {}, "policy": {}}
    if args.config:
        with open(args.config, "rb") as f:
            data = tomllib.load(f)
        for section in values:
            values[section].update(data.get(section, {}))
        unknown = set(data) - set(values)
        if unknown:
            raise ValueError(f"unknown sections in {args.config}: {', '.join(sorted(unknown))}")
    for opt in _OPTIONS:
        if env_name(opt.name) in environ:
            values[opt.section][opt.name] = environ[env_name(opt.name)]
        if getattr(args, opt.name) is not None:
            values[opt.section][opt.name] = getattr(args, opt.name)
    known = {opt.name: opt for opt in _OPTIONS}
    converted: dict[str, dict[str, Any]] = {"server": {}, "policy": {}}
    for section, entries in values.items():
        allowed = {f.name for f in fields(ServerConfig if section == "server" else Policy)}
        for name, value in entries.items():
            if name not in allowed:
                raise ValueError(f"unknown setting {section}.{name}")
            spec = known.get(name)
            if spec is not None:
                converted[section][name] = _convert(spec, value)
            else:
                default = getattr(ServerConfig() if section == "server" else Policy(), name)
                converted[section][name] = _file_only(f"{section}.{name}", value, default)
    server = replace(ServerConfig(), **converted["server"])
    # Checked here so that a typo costs one line naming the setting, not a bind error.
    split_host_port(server.listen, f"--listen (or {env_name('listen')})", listen=True)
    if server.listen_tokens:
        what = f"--listen-tokens (or {env_name('listen_tokens')})"
        split_host_port(server.listen_tokens, what, listen=True)
    if server.metrics_listen:
        split_host_port(
            server.metrics_listen,
            f"--metrics-listen (or {env_name('metrics_listen')})",
            listen=True,
        )
    if not 0 < server.metrics_max_connections_per_address <= server.metrics_max_connections:
        raise ValueError(
            "metrics_max_connections_per_address "
            f"({server.metrics_max_connections_per_address}) must be at least 1 and at most "
            f"metrics_max_connections ({server.metrics_max_connections})"
        )
    if not 0 < server.lease_renew < server.lease:
        raise ValueError(
            f"lease_renew ({server.lease_renew:g}s) must be shorter than lease "
            f"({server.lease:g}s): a leader renews several times within its lease"
        )
    return SchedulerConfig(server=server, policy=replace(Policy(), **converted["policy"]))
