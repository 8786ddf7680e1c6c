"""Bearer tokens: issued and revoked by admins, checked on every call on the token port.

A token reads "<id>.<secret>"; the store keeps only sha256(secret). Tokens are held in
memory too, so that checking one costs a dict lookup and a hash, never a store read.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable

from boruta import pki

from boruta_scheduler.app.audit import AuditLog
from boruta_scheduler.core import Policy
from boruta_scheduler.errors import InvalidArgument, Unauthenticated
from boruta_scheduler.store import Store
from boruta_scheduler.types import Identity, Role, TokenRecord

DEFAULT_TTL = 90 * 86400.0
MAX_TTL = 3650 * 86400.0
# Only its name rules are used; they do not depend on the farm's scheduling policy.
NAME_RULES = Policy()
_TOKEN_ID = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() also takes "²"


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class TokenAuthority:
    """Issues, lists and revokes tokens, and tells who a presented token belongs to. Only
    admins reach it: app/authz.py's table refuses everyone else before."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
    ) -> None:
        self._audit = audit
        self._store = store
        self._clock = clock
        self._tokens = {t.id: t for t in store.tokens()}

    async def issue(
        self,
        who: Identity,
        user: str,
        groups: Iterable[str],
        admin: bool,
        ttl: float | None,
        description: str,
    ) -> tuple[TokenRecord, str]:
        """A new token and its secret, which is never stored or shown again."""
        # The same rules as a certificate's name and a worker's groups, defined there once.
        try:
            pki.check_name(user)
        except pki.PkiError as exc:
            raise InvalidArgument(f"user: {exc}") from None
        names = NAME_RULES.check_groups(groups)
        if len(description) > 200:
            raise InvalidArgument("description: at most 200 characters")
        ttl = DEFAULT_TTL if ttl is None else ttl
        if not 0 < ttl <= MAX_TTL:
            raise InvalidArgument("ttl must be more than 0 and at most 3650 days")
        secret = secrets.token_urlsafe(32)
        now = self._clock()
        token = TokenRecord(
            user, names, admin, _hash(secret), now, now + ttl, who.user, description
        )
        record = await asyncio.to_thread(self._store.add_token, token)
        self._tokens[record.id] = record
        if self._audit is not None:
            kind = "admin" if admin else "user"
            self._audit.record(who, "IssueToken", f"token {record.id}", f"for {kind} {user}")
        return record, f"{record.id}.{secret}"

    def list(self, who: Identity) -> list[TokenRecord]:
        return sorted(self._tokens.values(), key=lambda t: t.id)

    async def revoke(self, who: Identity, token_id: int) -> TokenRecord:
        if token_id not in self._tokens:
            raise InvalidArgument(f"no token {token_id}; see ListTokens")
        record = await asyncio.to_thread(self._store.revoke_token, token_id, self._clock())
        assert record is not None
        self._tokens[token_id] = record
        if self._audit is not None:
            self._audit.record(who, "RevokeToken", f"token {token_id}", f"of {record.user}")
        return record

    def identify(self, bearer: str) -> Identity:
        """The identity of a presented token; Unauthenticated for anything else."""
        token_id, _, secret = bearer.partition(".")
        record = self._tokens.get(int(token_id)) if _TOKEN_ID.fullmatch(token_id) else None
        if record is None or not hmac.compare_digest(record.secret_hash, _hash(secret)):
            raise Unauthenticated("the bearer token is not valid")
        if record.revoked_at is not None:
            raise Unauthenticated(f"token {record.id} was revoked")
        if self._clock() > record.expires_at:
            raise Unauthenticated(f"token {record.id} has expired; ask an admin for a new one")
        role = Role.ADMIN if record.admin else Role.USER
        return Identity(record.user, record.groups, role, token_id=record.id)

    def revalidate(self, who: Identity) -> None:
        """Raise Unauthenticated if who came with a token that was revoked or has expired
        since the call began (a long AcquireWorker must not hand out a key after that)."""
        if who.token_id is None:
            return
        record = self._tokens.get(who.token_id)
        if record is None or record.revoked_at is not None:
            raise Unauthenticated(f"token {who.token_id} was revoked")
        if self._clock() > record.expires_at:
            raise Unauthenticated(f"token {who.token_id} has expired")
