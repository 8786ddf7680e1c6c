"""Relay configuration: a frozen dataclass filled from defaults, a TOML file, BORUTA_*
environment variables and command-line options, in rising precedence."""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from boruta_scheduler.tunnels.forwarder import parse_ports

DEFAULT_SOCKET = "/run/boruta-relay/relay.sock"
# Listen addresses that are no host a user can dial.
_WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Where the relay takes orders and where its tunnels listen."""

    # Unix socket of the control API; only its owner (the scheduler's user) may connect.
    socket: str = DEFAULT_SOCKET
    # Host users dial for their SSH tunnels; the scheduler puts it into AccessInfo.
    public_host: str = "127.0.0.1"
    # Address the tunnels listen on (default: public_host).
    tunnel_bind: str = ""
    # "0": any free port; "LOW-HIGH": a range the firewall lets through.
    tunnel_ports: str = "0"
    log_level: str = "INFO"

    @property
    def tunnel_bind_host(self) -> str:
        return self.tunnel_bind or self.public_host


# (name, environment variable, help)
_OPTIONS = (
    ("socket", "BORUTA_RELAY", "Unix socket of the control API (the scheduler's --relay)"),
    ("public_host", "BORUTA_PUBLIC_HOST", "host users dial for job SSH tunnels (AccessInfo)"),
    ("tunnel_bind", "BORUTA_TUNNEL_BIND", "address tunnels listen on (default: public host)"),
    ("tunnel_ports", "BORUTA_TUNNEL_PORTS", "tunnel ports: 0 (any free) or LOW-HIGH"),
    ("log_level", "BORUTA_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boruta-relay",
        description="The boruta relay: the SSH tunnels of one scheduler host. Every option "
        "can also be set with the environment variable shown, or in the TOML file given "
        "with --config.",
    )
    parser.add_argument(
        "--config", default=os.environ.get("BORUTA_CONFIG"), help="TOML file [env: BORUTA_CONFIG]"
    )
    for name, env, text in _OPTIONS:
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, help=f"{text} [env: {env}]"
        )
    return parser


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> RelayConfig:
    """Config from defaults < TOML file ([relay] table) < environment < command line."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        with open(args.config, "rb") as f:
            data = tomllib.load(f)
        unknown = set(data) - {"relay"}
        if unknown:
            raise ValueError(f"unknown sections in {args.config}: {', '.join(sorted(unknown))}")
        values.update(data.get("relay", {}))
    allowed = {f.name for f in fields(RelayConfig)}
    for name in values:
        if name not in allowed:
            raise ValueError(f"unknown setting relay.{name}")
    for name, env, _ in _OPTIONS:
        if env in environ:
            values[name] = environ[env]
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    config = replace(RelayConfig(), **{k: str(v) for k, v in values.items()})
    check(config)
    return config


def check(config: RelayConfig) -> None:
    """Raise ValueError naming the setting that is wrong, before anything is bound."""
    if not config.socket:
        raise ValueError("--socket (or BORUTA_RELAY) is empty: give the control socket's path")
    host = config.public_host.strip()
    if host in _WILDCARDS:
        raise ValueError(
            f"--public-host (or BORUTA_PUBLIC_HOST) {host!r} is no host a user can dial: "
            "give this host's name or address as users reach it"
        )
    parse_ports(config.tunnel_ports)
