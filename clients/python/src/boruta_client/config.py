"""The client config file: named contexts (where the scheduler is, who you are) and runner
profiles (defaults for job files). Default path ~/.config/boruta/config.toml."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from boruta.pki import PkiError
from boruta.schedulers import parse_schedulers
from boruta.tls import TlsFiles

from boruta_client.errors import InvalidArgument

DEFAULT_SCHEDULER = "127.0.0.1:50051"


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "boruta" / "config.toml"


@dataclass(frozen=True, slots=True)
class Context:
    """Where the scheduler is and who to call it as."""

    # One address, or several separated by commas: the schedulers of a farm with a standby,
    # of which the client finds and follows the leader.
    scheduler: str = DEFAULT_SCHEDULER
    user: str = ""
    groups: tuple[str, ...] = ()
    admin: bool = False
    # TLS: the farm's CA, and your certificate and key (schedctl pki issue).
    ca: str = ""
    cert: str = ""
    key: str = ""
    # A bearer token for the scheduler's token port, read from this file (keep it 0600).
    token_file: str = ""
    # A bearer token given as such (BORUTA_TOKEN, --token, Client(token=...)); never in a file.
    bearer: str = ""

    def schedulers(self) -> tuple[str, ...]:
        """The scheduler addresses, in the order they are tried."""
        return parse_schedulers(self.scheduler) or (DEFAULT_SCHEDULER,)

    def token(self) -> str | None:
        if self.bearer:
            return self.bearer
        if not self.token_file:
            return None
        try:
            return open(self.token_file).read().strip()
        except OSError as exc:
            raise InvalidArgument(f"cannot read the token file {self.token_file}: {exc}") from None

    def tls(self) -> TlsFiles | None:
        """The TLS files of this context; None means plaintext (a loopback demo), or a
        token with only the CA to check the scheduler by."""
        if not (self.cert or self.key):
            return None
        try:
            return TlsFiles.given(self.ca, self.cert, self.key, "context")
        except PkiError as exc:
            raise InvalidArgument(f"{exc} (ca, cert and key)") from None


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything in the config file; an absent file is an empty config."""

    current_context: str = ""
    contexts: Mapping[str, Context] = field(default_factory=dict)
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def context(self, name: str = "") -> Context:
        """The named context, else the current one, else the defaults."""
        chosen = name or self.current_context
        if not chosen:
            return Context()
        if chosen not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise InvalidArgument(f"no context {chosen!r} in the config file (known: {known})")
        return self.contexts[chosen]


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{where} must be a list of strings")
    return tuple(value)


def _path(value: Any, base: Path | None) -> str:
    """Paths in the config file are relative to the file."""
    text = str(value)
    if text and base is not None and not os.path.isabs(os.path.expanduser(text)):
        return str(base / text)
    return os.path.expanduser(text) if text else ""


def parse_config(
    data: Mapping[str, Any], source: str = "config", base: Path | None = None
) -> ClientConfig:
    unknown = set(data) - {"context", "contexts", "profiles"}
    if unknown:
        raise InvalidArgument(f"{source}: unknown keys {', '.join(sorted(unknown))}")
    contexts = {}
    for name, entry in dict(data.get("contexts", {})).items():
        known = {
            *("scheduler", "schedulers", "user", "groups", "admin"),
            *("ca", "cert", "key", "token_file"),
        }
        extra = set(entry) - known
        if extra:
            raise InvalidArgument(f"{source}: context {name}: unknown keys {sorted(extra)}")
        if "scheduler" in entry and "schedulers" in entry:
            raise InvalidArgument(
                f"{source}: context {name}: give scheduler (one address) or schedulers "
                "(a list), not both"
            )
        where = f"{source}: context {name}: schedulers"
        listed = _strings(entry["schedulers"], where) if "schedulers" in entry else ()
        contexts[name] = Context(
            scheduler=",".join(listed) or str(entry.get("scheduler", DEFAULT_SCHEDULER)),
            user=str(entry.get("user", "")),
            groups=_strings(entry.get("groups", []), f"{source}: context {name}: groups"),
            admin=bool(entry.get("admin", False)),
            ca=_path(entry.get("ca", ""), base),
            cert=_path(entry.get("cert", ""), base),
            key=_path(entry.get("key", ""), base),
            token_file=_path(entry.get("token_file", ""), base),
        )
    profiles = dict(data.get("profiles", {}))
    for name, profile in profiles.items():
        if not isinstance(profile, dict):
            raise InvalidArgument(f"{source}: profile {name} must be a table")
    current = str(data.get("context", ""))
    if current and current not in contexts:
        raise InvalidArgument(f"{source}: context {current!r} is not defined under [contexts]")
    return ClientConfig(current, contexts, profiles)


def load_config(path: str | os.PathLike[str] | None = None) -> ClientConfig:
    """Read the config file; a missing default file is fine, a missing named one is not."""
    chosen = Path(path) if path else default_config_path()
    try:
        with open(chosen, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if path:
            raise InvalidArgument(f"config file {chosen} does not exist") from None
        return ClientConfig()
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{chosen} is not valid TOML: {exc}") from None
    return parse_config(data, str(chosen), chosen.parent)


# Where the client looks for its settings, as schedctl does; each variable overrides the
# context's field of the same name. BORUTA_SCHEDULERS (comma-separated) is read as
# BORUTA_SCHEDULER, and wins over it when both are set.
CONFIG_VARIABLE = "BORUTA_CONFIG"
CONTEXT_VARIABLE = "BORUTA_CONTEXT"
SCHEDULERS_VARIABLE = "BORUTA_SCHEDULERS"
VARIABLES = {
    "scheduler": "BORUTA_SCHEDULER",
    "user": "BORUTA_USER",
    "groups": "BORUTA_GROUPS",
    "admin": "BORUTA_ADMIN",
    "ca": "BORUTA_CA",
    "cert": "BORUTA_CERT",
    "key": "BORUTA_KEY",
    "bearer": "BORUTA_TOKEN",
}
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def _setting(name: str, value: Any) -> Any:
    """A context field from an option or a variable: groups split at commas, admin a
    boolean, paths made absolute (they are relative to where you are, not to a file)."""
    if name == "groups":
        return _strings(value, VARIABLES[name]) if isinstance(value, str) else tuple(value)
    if name == "admin" and isinstance(value, str):
        if value.strip().lower() not in _TRUE | _FALSE:
            raise InvalidArgument(f"{VARIABLES[name]}={value!r} is not a boolean (1 or 0)")
        return value.strip().lower() in _TRUE
    if name in ("ca", "cert", "key"):
        return str(Path(os.path.expanduser(str(value))).absolute())
    if name == "scheduler" and not isinstance(value, str):
        return ",".join(parse_schedulers(value))  # a list of addresses
    return value


def environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The context fields the BORUTA_* variables set."""
    env = os.environ if environ is None else environ
    found = {name: env[var] for name, var in VARIABLES.items() if env.get(var, "") != ""}
    if env.get(SCHEDULERS_VARIABLE, ""):
        found["scheduler"] = env[SCHEDULERS_VARIABLE]
    return found


def with_overrides(context: Context, overrides: Mapping[str, Any]) -> Context:
    """The context with the given fields (None: not given) put over it. A token given over
    a context with a certificate replaces the certificate, and a certificate replaces a
    token; given both at once, the certificate counts."""
    given = {k: _setting(k, v) for k, v in overrides.items() if v is not None}
    unknown = set(given) - set(VARIABLES)
    if unknown:
        raise InvalidArgument(f"unknown connection settings {sorted(unknown)}")
    if given.get("cert") or given.get("key"):
        given = {**given, "bearer": "", "token_file": ""}
    elif given.get("bearer"):
        given = {"cert": "", "key": "", **given}
    return replace(context, **given)


def find_farm(
    config: str | os.PathLike[str] | None = None,
    context: str = "",
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[ClientConfig, Context]:
    """Where the farm is and who you are, the way schedctl finds it: the config file
    (``config``, else BORUTA_CONFIG, else the default path), its context (``context``,
    else BORUTA_CONTEXT, else the file's current one), the BORUTA_* variables over it and
    the ``overrides`` (options, arguments) over those."""
    env = os.environ if environ is None else environ
    loaded = load_config(config or env.get(CONFIG_VARIABLE) or None)
    chosen = loaded.context(context or env.get(CONTEXT_VARIABLE, ""))
    return loaded, with_overrides(with_overrides(chosen, environment(env)), overrides or {})
