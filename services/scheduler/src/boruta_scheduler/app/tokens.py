"""Bearer tokens: issued and revoked by admins, checked on every call on the token port.

A token reads "<id>.<secret>"; the store keeps only sha256(secret). Issuing and revoking
are engine commands: the core keeps the tokens, and the change commits with its audit
event in the engine's batch. The tokens checked on each call are a copy fed by what the
engine publishes after each commit, so that checking one costs a dict lookup and a hash,
and a token counts only once it is durable.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable

from boruta import pki

from boruta_scheduler.app.audit import AuditLog
from boruta_scheduler.app.engine import Command, Engine
from boruta_scheduler.core import Changes, Core, Policy
from boruta_scheduler.errors import InvalidArgument, Unauthenticated
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
        engine: Engine,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
    ) -> None:
        # Created before the engine applies a command, the core holds exactly what the
        # store does; later changes come through publish(), once committed.
        assert engine.commands == 0, "create the TokenAuthority before the engine runs"
        self._engine = engine
        self._audit = audit
        self._clock = clock
        self._tokens = {t.id: t for t in engine.core.tokens()}

    def publish(self, changes: Changes) -> None:
        """Take the tokens a commit issued or revoked (the engine's Publisher protocol)."""
        for record in changes.tokens:
            self._tokens[record.id] = record

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
        secret_hash = _hash(secret)

        def issue(core: Core, now: float) -> TokenRecord:
            token = TokenRecord(
                user, names, admin, secret_hash, now, now + ttl, who.user, description
            )
            return core.issue_token(token)

        kind = "admin" if admin else "user"
        record = await self._engine.execute(
            self._recorded(who, "IssueToken", issue, lambda r: f"for {kind} {r.user}")
        )
        return record, f"{record.id}.{secret}"

    def list(self, who: Identity) -> list[TokenRecord]:
        return sorted(self._tokens.values(), key=lambda t: t.id)

    async def revoke(self, who: Identity, token_id: int) -> TokenRecord:
        def revoke(core: Core, now: float) -> TokenRecord:
            return core.revoke_token(now, token_id)

        return await self._engine.execute(
            self._recorded(who, "RevokeToken", revoke, lambda r: f"of {r.user}")
        )

    def _recorded(
        self,
        who: Identity,
        action: str,
        command: Command[TokenRecord],
        detail: Callable[[TokenRecord], str],
    ) -> Command[TokenRecord]:
        """The command, with its audit event in the same batch (if there is an audit log)."""
        if self._audit is None:
            return command
        return self._audit.recorded(who, action, lambda r: (f"token {r.id}", detail(r)), command)

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
