"""The board's host keys for paramiko: the keys its dryad reported are the only ones a
connection to it accepts. Imported with paramiko, when a connection is made."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging

import paramiko

from boruta_client.errors import HostKeyMismatch, SSHError
from boruta_client.types import Access

# Under the public module's name, where users of BoardSSH look for its warnings.
log = logging.getLogger("boruta_client.ssh")


def _fingerprint(key: paramiko.PKey) -> str:
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


def not_the_board(where: str, key: paramiko.PKey) -> HostKeyMismatch:
    return HostKeyMismatch(
        f"the SSH server at {where} showed host key {_fingerprint(key)}, which is not "
        "one the board's dryad reported: it is not the board (or the board's host keys "
        "changed without its dryad knowing); not logging in"
    )


class _RefuseUnlistedHostKey(paramiko.MissingHostKeyPolicy):
    """Called for a host key of a type none of the board's has: not the board."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise not_the_board(hostname, key)


class _AcceptUncheckedHostKey(paramiko.MissingHostKeyPolicy):
    """For boards whose dryad predates host keys: nothing to check against, so the key is
    taken, and the connection logs a warning saying so."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        log.warning(
            "the board's host key is not checked: its dryad reported none (upgrade the dryad)",
            extra={"host": hostname, "host_key": _fingerprint(key)},
        )


def trust_board_host_keys(client: paramiko.SSHClient, access: Access) -> None:
    """Make the board's reported host keys the only ones the client accepts for it."""
    if not access.host_keys:
        client.set_missing_host_key_policy(_AcceptUncheckedHostKey())
        return
    known = client.get_host_keys()
    for line in access.host_keys:
        kind, _, encoded = line.partition(" ")
        try:
            key = paramiko.PKey.from_type_string(kind, base64.b64decode(encoded))
        except (ValueError, binascii.Error, paramiko.SSHException) as exc:
            raise SSHError(f"the board's host key {kind} cannot be read: {exc}") from None
        known.add(access.known_hosts_name, key.get_name(), key)
    client.set_missing_host_key_policy(_RefuseUnlistedHostKey())
