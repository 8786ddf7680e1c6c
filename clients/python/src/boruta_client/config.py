"""The client config file: named contexts (where the scheduler is, who you are) and runner
profiles (defaults for job files). Default path ~/.config/boruta/config.toml."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boruta.pki import PkiError
from boruta.tls import TlsFiles

from boruta_client.errors import InvalidArgument

DEFAULT_SCHEDULER = "127.0.0.1:50051"


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "boruta" / "config.toml"


@dataclass(frozen=True, slots=True)
class Context:
    """Where the scheduler is and who to call it as."""

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

    def token(self) -> str | None:
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
        known = {"scheduler", "user", "groups", "admin", "ca", "cert", "key", "token_file"}
        extra = set(entry) - known
        if extra:
            raise InvalidArgument(f"{source}: context {name}: unknown keys {sorted(extra)}")
        contexts[name] = Context(
            scheduler=str(entry.get("scheduler", DEFAULT_SCHEDULER)),
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
