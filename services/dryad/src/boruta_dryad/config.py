"""Dryad configuration: a TOML file (default /etc/boruta/dryad.toml) plus BORUTA_* variables
and command-line options, validated before anything runs. Names of users and groups come
only from here, and only in shapes that are safe to pass to useradd."""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from boruta.address import AddressError, check_dial_address, is_wildcard, split_host_port
from boruta.metrics import check_options
from boruta.pki import PkiError
from boruta.schedulers import parse_schedulers
from boruta.tls import TlsFiles, choose_transport

from boruta_dryad.hostkeys import DEFAULT_HOST_KEYS
from boruta_dryad.uids import DEFAULT_MARK_DIR, UidRange

DEFAULT_CONFIG = "/etc/boruta/dryad.toml"
MIN_KEY_BITS = 2048
# Above the uids of people (and Debian's 60000-64999), below the subordinate ranges that
# useradd hands out from 100000: a uid comes back after 30000 jobs on the host.
DEFAULT_JOB_UIDS = "70000-99999"

# A safe Unix name: what useradd accepts by default, and nothing a shell would expand.
_UNIX_NAME = re.compile(r"[a-z_][a-z0-9_-]*")
_BOARD_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# A board's UUID goes into its job users' GECOS field (useradd --comment), which cannot
# hold ':' and splits its subfields at ','.
_UUID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FORBIDDEN_GROUPS = {"root", "sudo", "wheel", "admin", "adm", "shadow", "disk", "docker"}
# Job user names get a number appended; Linux allows 32 characters.
_MAX_PREFIX = 24


class ConfigError(ValueError):
    """The configuration is invalid; the message names the setting and what to fix."""


@dataclass(frozen=True, slots=True)
class ChecksConfig:
    """Health checks of one board, beyond sshd and the backend."""

    disk_path: str = "/home"
    min_disk_free_mb: int = 200
    commands: tuple[tuple[str, ...], ...] = ()
    timeout: float = 20.0
    # The dryad runs the checks itself every interval seconds while its board is in
    # service (0: never) and reports the board failed (SetFail) after fail_after failing
    # rounds in a row.
    interval: float = 60.0
    fail_after: int = 2


@dataclass(frozen=True, slots=True)
class BoardConfig:
    """One board (worker) served by this dryad."""

    name: str
    caps: Mapping[str, str]
    ssh_address: str
    uuid: str = ""
    # Public host key files (globs allowed) of the sshd at ssh_address.
    ssh_host_keys: tuple[str, ...] = DEFAULT_HOST_KEYS
    backend: str = "simulated"
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    user_prefix: str = "boruta-job"
    user_groups: tuple[str, ...] = ()
    user_shell: str = "/bin/bash"
    checks: ChecksConfig = field(default_factory=ChecksConfig)


@dataclass(frozen=True, slots=True)
class DryadConfig:
    """Everything a dryad process needs."""

    # One address, or several separated by commas (the leader is followed).
    scheduler: str
    boards: tuple[BoardConfig, ...]
    listen: str = "0.0.0.0:7175"
    advertise: str = ""
    state_dir: str = "/var/lib/boruta-dryad"
    key_bits: int = 3072
    log_level: str = "INFO"
    # Mutual TLS with the scheduler (schedctl pki issue DIR dryad NAME -H HOST -w UUID...).
    tls: TlsFiles | None = None
    plaintext: bool = False
    # Uids (and gids) of job users, handed out in turn by every dryad of the host.
    job_uids: UidRange = field(default_factory=lambda: UidRange.parse(DEFAULT_JOB_UIDS))
    uid_mark_dir: str = DEFAULT_MARK_DIR
    # host:port of the HTTP port with Prometheus metrics; empty: none.
    metrics_listen: str = ""
    # Serve metrics to scrapes that show no certificate (loopback demos, tests).
    metrics_anonymous: bool = False


def _host_port(value: str, what: str, *, listen: bool = False, dial: bool = False) -> str:
    """value, checked to be host:port (a listen address may have port 0, a dial address
    no wildcard host)."""
    try:
        if dial:
            check_dial_address(value, what)
        else:
            split_host_port(value, what, listen=listen)
    except AddressError as exc:
        raise ConfigError(str(exc)) from None
    return value


def advertised_host(advertise: str) -> str:
    """The host of an advertise setting, which is host:port, host:0 or a host alone (the
    port is then the one the dryad listens on)."""
    try:
        return split_host_port(advertise, "advertise", listen=True)[0]
    except AddressError:
        return advertise.removeprefix("[").removesuffix("]")


def _board(index: int, data: Mapping[str, Any]) -> BoardConfig:
    name = str(data.get("name", f"board{index}"))
    where = f"board {name!r}"
    if not _BOARD_NAME.fullmatch(name):
        raise ConfigError(f"{where}: name must be 1-64 letters, digits, '.', '_' or '-'")
    known = {
        "name",
        "uuid",
        "caps",
        "ssh_address",
        "ssh_host_keys",
        "backend",
        "backend_options",
        "user_prefix",
        "user_groups",
        "user_shell",
        "checks",
    }
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown settings {', '.join(sorted(unknown))}")
    caps = data.get("caps", {})
    if not isinstance(caps, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in caps.items()
    ):
        raise ConfigError(f'{where}: caps must be a table of strings, e.g. {{ board = "rpi4" }}')
    if "UUID" in caps:
        raise ConfigError(f"{where}: set the UUID with uuid = ..., not in caps")
    uuid = str(data.get("uuid", ""))
    if uuid:
        _check_uuid(where, uuid)
    ssh_address = data.get("ssh_address")
    if not isinstance(ssh_address, str):
        raise ConfigError(f"{where}: ssh_address (host:port the scheduler can dial) is required")
    _host_port(ssh_address, f"{where}: ssh_address", dial=True)
    host_keys = data.get("ssh_host_keys", list(DEFAULT_HOST_KEYS))
    if (
        not isinstance(host_keys, list)
        or not host_keys
        or not all(isinstance(p, str) and p.startswith("/") for p in host_keys)
    ):
        raise ConfigError(
            f"{where}: ssh_host_keys must be a non-empty list of absolute paths (globs "
            "allowed) of the host public keys of the sshd at ssh_address, e.g. "
            '["/etc/ssh/ssh_host_*_key.pub"]'
        )
    backend = str(data.get("backend", "simulated"))
    if backend not in ("simulated", "muxpi"):
        raise ConfigError(f"{where}: backend must be 'simulated' or 'muxpi', got {backend!r}")
    prefix = str(data.get("user_prefix", "boruta-job"))
    if not _UNIX_NAME.fullmatch(prefix) or len(prefix) > _MAX_PREFIX:
        raise ConfigError(
            f"{where}: user_prefix must be up to {_MAX_PREFIX} of a-z 0-9 _ - "
            f"starting with a letter or _, got {prefix!r}"
        )
    groups = tuple(str(g) for g in data.get("user_groups", ()))
    for group in groups:
        if not _UNIX_NAME.fullmatch(group) or len(group) > 32:
            raise ConfigError(f"{where}: user group {group!r} is not a valid group name")
        if group in _FORBIDDEN_GROUPS:
            raise ConfigError(f"{where}: job users must not be in group {group!r}")
    shell = str(data.get("user_shell", "/bin/bash"))
    if not shell.startswith("/") or any(c.isspace() for c in shell):
        raise ConfigError(f"{where}: user_shell must be an absolute path")
    checks_data = data.get("checks", {})
    commands = tuple(tuple(str(a) for a in argv) for argv in checks_data.get("commands", ()))
    if any(not argv for argv in commands):
        raise ConfigError(f"{where}: each check command must be a non-empty list of arguments")
    checks = ChecksConfig(
        disk_path=str(checks_data.get("disk_path", "/home")),
        min_disk_free_mb=int(checks_data.get("min_disk_free_mb", 200)),
        commands=commands,
        timeout=float(checks_data.get("timeout", 20.0)),
        interval=float(checks_data.get("interval", 60.0)),
        fail_after=int(checks_data.get("fail_after", 2)),
    )
    if checks.interval < 0:
        raise ConfigError(f"{where}: checks.interval must be 0 (never) or a number of seconds")
    if checks.fail_after < 1:
        raise ConfigError(f"{where}: checks.fail_after must be at least 1 (failing rounds)")
    return BoardConfig(
        name=name,
        caps=dict(caps),
        ssh_address=ssh_address,
        ssh_host_keys=tuple(host_keys),
        uuid=uuid,
        backend=backend,
        backend_options=dict(data.get("backend_options", {})),
        user_prefix=prefix,
        user_groups=groups,
        user_shell=shell,
        checks=checks,
    )


def parse_config(data: Mapping[str, Any]) -> DryadConfig:
    """Validate a parsed TOML document."""
    known = {
        "scheduler",
        "schedulers",
        "listen",
        "advertise",
        "state_dir",
        "key_bits",
        "log_level",
        "board",
        "tls_ca",
        "tls_cert",
        "tls_key",
        "plaintext",
        "job_uids",
        "metrics_listen",
        "metrics_anonymous",
    }
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown settings {', '.join(sorted(unknown))}")
    schedulers = _schedulers(data)
    scheduler = ",".join(schedulers)
    listen = _host_port(str(data.get("listen", "0.0.0.0:7175")), "listen", listen=True)
    advertise = str(data.get("advertise", ""))
    if advertise:
        if is_wildcard(advertised_host(advertise)):
            raise ConfigError("advertise must be a host the scheduler can dial, not a wildcard")
    elif is_wildcard(split_host_port(listen, listen=True)[0]):
        raise ConfigError(
            "listen is a wildcard address: set advertise to the host:port the scheduler "
            "should dial (it is never guessed)"
        )
    key_bits = int(data.get("key_bits", 3072))
    if key_bits < MIN_KEY_BITS or key_bits > 8192:
        raise ConfigError(f"key_bits must be {MIN_KEY_BITS} to 8192, got {key_bits}")
    boards_data = data.get("board", [])
    if not isinstance(boards_data, list) or not boards_data:
        raise ConfigError("at least one [[board]] table is required")
    boards = tuple(_board(i, b) for i, b in enumerate(boards_data))
    names = [b.name for b in boards]
    prefixes = [b.user_prefix for b in boards]
    if len(set(names)) != len(names):
        raise ConfigError("board names must be unique")
    if len(set(prefixes)) != len(prefixes):
        raise ConfigError("each board needs its own user_prefix")
    tls, plaintext = _transport(data, schedulers, listen)
    metrics_listen = str(data.get("metrics_listen", ""))
    metrics_anonymous = _flag(data.get("metrics_anonymous", False))
    if metrics_listen:
        _host_port(metrics_listen, "metrics_listen", listen=True)
        try:
            check_options(metrics_listen, tls, metrics_anonymous, "metrics_listen")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    try:
        job_uids = UidRange.parse(str(data.get("job_uids", DEFAULT_JOB_UIDS)))
    except ValueError as exc:
        raise ConfigError(f"job_uids: {exc} (first at least 1000)") from None
    if len(job_uids) < 2 * len(boards):
        raise ConfigError(f"job_uids {job_uids} is too small for {len(boards)} boards")
    return DryadConfig(
        scheduler=scheduler,
        boards=boards,
        listen=listen,
        advertise=advertise,
        state_dir=str(data.get("state_dir", "/var/lib/boruta-dryad")),
        key_bits=key_bits,
        log_level=str(data.get("log_level", "INFO")),
        tls=tls,
        plaintext=plaintext,
        job_uids=job_uids,
        metrics_listen=metrics_listen,
        metrics_anonymous=metrics_anonymous,
    )


def _schedulers(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The scheduler addresses: schedulers (a list, or comma-separated: a farm with
    standbys, whose leader the dryad follows), else scheduler (one, or comma-separated)."""
    given = data.get("schedulers", data.get("scheduler"))
    if isinstance(given, list) and all(isinstance(a, str) for a in given):
        given = ",".join(given)
    if not isinstance(given, str) or not parse_schedulers(given):
        raise ConfigError(
            "scheduler (host:port of the boruta scheduler) or schedulers (a list of them) "
            "is required"
        )
    found = parse_schedulers(given)
    for address in found:
        _host_port(address, "scheduler", dial=True)
    return found


def _flag(value: object) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _transport(
    data: Mapping[str, Any], schedulers: tuple[str, ...], listen: str
) -> tuple[TlsFiles | None, bool]:
    """TLS files, or plaintext: only when asked for and only on loopback both ways, since
    without TLS anyone who reaches the dryad could have it create users."""
    plaintext = _flag(data.get("plaintext", False))
    try:
        tls = TlsFiles.given(
            str(data.get("tls_ca", "")),
            str(data.get("tls_cert", "")),
            str(data.get("tls_key", "")),
            "dryad",
        )
        addresses = {"listen": listen}
        for i, address in enumerate(schedulers):
            addresses["scheduler" if i == 0 else f"scheduler {i + 1}"] = address
        chosen = choose_transport(tls, plaintext, addresses)
    except PkiError as exc:
        raise ConfigError(str(exc)) from None
    return chosen, chosen is None


_CLI = [
    ("scheduler", "host:port of the scheduler"),
    ("schedulers", "host:port of each scheduler, comma-separated (a farm with standbys)"),
    ("listen", "host:port to serve the Dryad service on"),
    ("advertise", "host:port the scheduler dials to reach this dryad"),
    ("state_dir", "where board UUIDs, job counters and the dryad's id are kept"),
    ("log_level", "DEBUG, INFO, WARNING or ERROR"),
    ("tls_ca", "the farm's CA certificate (PEM)"),
    ("tls_cert", "this dryad's certificate (PEM)"),
    ("tls_key", "this dryad's private key (PEM)"),
    ("plaintext", "no TLS (loopback only: demos and tests)"),
    ("job_uids", f"FIRST-LAST uids of job users, taken in turn (default {DEFAULT_JOB_UIDS})"),
    ("metrics_listen", "host:port of the HTTP port with Prometheus metrics (port 0 picks one)"),
    ("metrics_anonymous", "serve metrics to scrapes without a certificate (needed without TLS)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dryad",
        description="The boruta dryad: prepares job users and keys on a board's host. "
        "Settings come from the TOML file; the options and BORUTA_* variables override it.",
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("BORUTA_CONFIG", DEFAULT_CONFIG),
        help=f"TOML file [env: BORUTA_CONFIG] (default {DEFAULT_CONFIG})",
    )
    for name, text in _CLI:
        env = "BORUTA_" + name.upper()
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, help=f"{text} [env: {env}]"
        )
    return parser


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> DryadConfig:
    """The file's settings, overridden by environment variables, overridden by options."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    path = Path(args.config)
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; see deploy/dryad.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for name, _ in _CLI:
        env = "BORUTA_" + name.upper()
        if env in environ:
            data[name] = environ[env]
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    return parse_config(data)


def _check_uuid(where: str, uuid: str) -> None:
    if not _UUID.fullmatch(uuid):
        raise ConfigError(
            f"{where}: uuid must be 1-64 letters, digits, '.', '_' or '-' (it marks the "
            f"board's job users, whose GECOS field cannot hold ':', ',' or a newline); "
            f"got {uuid!r}"
        )


def with_uuids(config: DryadConfig, uuids: Mapping[str, str]) -> DryadConfig:
    """The config with every board's UUID filled in from uuids (by board name)."""
    boards = []
    for board in config.boards:
        if not board.uuid:
            # The state file may have been edited by hand since it was made.
            _check_uuid(f"board {board.name!r} (saved in uuids.json)", uuids[board.name])
            board = replace(board, uuid=uuids[board.name])
        boards.append(board)
    return replace(config, boards=tuple(boards))
