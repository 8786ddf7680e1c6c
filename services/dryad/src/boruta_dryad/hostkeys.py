"""The public host keys of a board's SSH server, read from its .pub files: clients check the
board they reach through the scheduler's tunnel against them."""

from __future__ import annotations

import base64
import binascii
import glob
import struct
from collections.abc import Sequence
from pathlib import Path

DEFAULT_HOST_KEYS = ("/etc/ssh/ssh_host_*_key.pub",)


class HostKeyError(Exception):
    """No usable host key: the files are missing, unreadable or not OpenSSH public keys."""


def _key_type_in_blob(blob: bytes) -> str:
    """The key type an OpenSSH key blob starts with (a length-prefixed string)."""
    if len(blob) < 4:
        raise ValueError("too short")
    (length,) = struct.unpack(">I", blob[:4])
    if length == 0 or length > 64 or len(blob) < 4 + length:
        raise ValueError("bad key type length")
    return blob[4 : 4 + length].decode("ascii")


def parse_public_key(line: str) -> str:
    """The "TYPE BASE64" of an OpenSSH public key line, without its comment; ValueError
    when the line is not one (its blob must decode and name the same type)."""
    fields = line.split()
    if len(fields) < 2:
        raise ValueError("expected 'TYPE BASE64 [COMMENT]'")
    kind, encoded = fields[0], fields[1]
    try:
        blob = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("the key is not valid base64") from None
    if _key_type_in_blob(blob) != kind:
        raise ValueError(f"the key's blob is not of type {kind}")
    return f"{kind} {encoded}"


def read_host_keys(patterns: Sequence[str]) -> tuple[str, ...]:
    """Every public key in the files the patterns name (globs allowed), in file order and
    without duplicates; HostKeyError when a named file is bad or none is found."""
    keys: dict[str, None] = {}
    for pattern in patterns:
        files = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for name in files:
            try:
                text = Path(name).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise HostKeyError(f"cannot read host key {name}: {exc}") from None
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    keys[parse_public_key(line)] = None
                except ValueError as exc:
                    raise HostKeyError(
                        f"{name}:{number} is not an OpenSSH public key: {exc}"
                    ) from None
    if not keys:
        raise HostKeyError(
            f"no SSH host key found in {', '.join(patterns)}; set ssh_host_keys to the "
            "public host key files of the sshd at the board's ssh_address"
        )
    return tuple(keys)
