"""Bearer tokens: issued and revoked by admins, checked on every call on the token port.

A token reads "<id>.<secret>"; the store keeps only sha256(secret). Issuing and revoking
are engine commands: the core keeps the tokens, and the change commits with its audit
event in the engine's batch. The tokens checked on each call are a copy fed by what the
engine publishes after each commit, so that checking one costs a dict lookup and a hash,
and a token counts only once it is durable.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator

from boruta import pki

from boruta_scheduler.app.audit import AuditLog
from boruta_scheduler.app.engine import Command, Engine
from boruta_scheduler.core import Changes, Core
from boruta_scheduler.core.idempotency import check_key
from boruta_scheduler.errors import InvalidArgument, Unauthenticated
from boruta_scheduler.listing import TokenQuery
from boruta_scheduler.types import Identity, Role, TokenRecord

DEFAULT_TTL = 90 * 86400.0
SECRET_BYTES = 32  # the size of the pad (sha256)
# An IssueToken idempotency key seals the secret kept for a retry: a short one is guessable.
MIN_KEY_CHARS = 16
MAX_TTL = 3650 * 86400.0
_TOKEN_ID = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() also takes "²"


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _text(raw: bytes) -> str:
    """A secret's text: its bytes in URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _key_hash(issuer: str, key: str) -> bytes:
    """What the store keeps of an IssueToken idempotency key: a hash, per issuer."""
    return hashlib.sha256(
        b"boruta IssueToken key\0" + issuer.encode() + b"\0" + key.encode()
    ).digest()


def _pad(key: str, key_hash: bytes) -> bytes:
    """The pad that seals a secret: it takes the key itself, which the store never holds."""
    return hmac.new(key.encode(), b"boruta IssueToken seal\0" + key_hash, hashlib.sha256).digest()


def _xor(data: bytes, pad: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, pad, strict=True))


def _arguments_hash(
    user: str, groups: Iterable[str], admin: bool, ttl: float | None, description: str
) -> str:
    """A hash of IssueToken's arguments as sent (an unset ttl stays unset)."""
    text = json.dumps([user, sorted(set(groups)), admin, ttl, description])
    return hashlib.sha256(text.encode()).hexdigest()


def _check_user(user: str) -> None:
    """Refuse a user name no token can carry: the rules of a certificate's name."""
    try:
        pki.check_name(user)
    except pki.PkiError as exc:
        raise InvalidArgument(f"user: {exc}") from None


class TokenOrder:
    """The ids of the tokens in increasing order, of all of them and of each user's, so that
    a page of ListTokens starts at a bisect rather than a sort of every token. Ids are issued
    in increasing order, so adding one is mostly an append."""

    def __init__(self) -> None:
        self._all: list[int] = []
        self._by_user: dict[str, list[int]] = {}

    def add(self, token_id: int, user: str) -> None:
        """Keep token_id in order (again: nothing changes)."""
        for ids in (self._all, self._by_user.setdefault(user, [])):
            if not ids or ids[-1] < token_id:
                ids.append(token_id)
            else:
                at = bisect.bisect_left(ids, token_id)
                if at == len(ids) or ids[at] != token_id:
                    ids.insert(at, token_id)

    def remove(self, token_id: int, user: str) -> None:
        """Forget token_id (not kept: nothing changes)."""
        mine = self._by_user.get(user, [])
        for ids in (self._all, mine):
            at = bisect.bisect_left(ids, token_id)
            if at < len(ids) and ids[at] == token_id:
                del ids[at]
        if not mine:
            self._by_user.pop(user, None)

    def after(self, token_id: int, user: str = "") -> Iterator[int]:
        """The ids above token_id, in order: every user's, or only user's."""
        ids = self._by_user.get(user, []) if user else self._all
        for at in range(bisect.bisect_right(ids, token_id), len(ids)):
            yield ids[at]


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
        self._tokens: dict[int, TokenRecord] = {}
        self._order = TokenOrder()
        self._keep(engine.core.tokens())

    def publish(self, changes: Changes) -> None:
        """Take the tokens a commit issued, revoked or purged (the engine's Publisher
        protocol)."""
        self._keep(changes.tokens)
        for token_id in changes.removed_tokens:
            record = self._tokens.pop(token_id, None)
            if record is not None:
                self._order.remove(token_id, record.user)

    def _keep(self, records: Iterable[TokenRecord]) -> None:
        for record in records:
            self._tokens[record.id] = record
            self._order.add(record.id, record.user)

    async def issue(
        self,
        who: Identity,
        user: str,
        groups: Iterable[str],
        admin: bool,
        ttl: float | None,
        description: str,
        idempotency_key: str = "",
    ) -> tuple[TokenRecord, str]:
        """A new token and its secret, which is never stored or shown again; with an
        idempotency key who used before, the token it issued and the same secret (see
        docs/security.md, "Retried IssueToken")."""
        if idempotency_key:
            check_key(idempotency_key)
            if len(idempotency_key) < MIN_KEY_CHARS:
                raise InvalidArgument(
                    f"idempotency_key must be at least {MIN_KEY_CHARS} characters (it seals "
                    "the secret kept for a retry); a random UUID is a good key"
                )
        asked = _arguments_hash(user, groups, admin, ttl, description)
        # The same rules as a certificate's name and a worker's groups, defined there once.
        _check_user(user)
        names = self._engine.core.policy.check_groups(groups)  # the farm's own limits
        if len(description) > 200:
            raise InvalidArgument("description: at most 200 characters")
        ttl = DEFAULT_TTL if ttl is None else ttl
        if not 0 < ttl <= MAX_TTL:
            raise InvalidArgument("ttl must be more than 0 and at most 3650 days")
        raw = secrets.token_bytes(SECRET_BYTES)
        secret = _text(raw)
        secret_hash = _hash(secret)
        key_hash = b""
        sealed = None
        if idempotency_key:
            key_hash = _key_hash(who.user, idempotency_key)
            sealed = _xor(raw, _pad(idempotency_key, key_hash))

        def issue(core: Core, now: float) -> TokenRecord:
            token = TokenRecord(
                user,
                names,
                admin,
                secret_hash,
                now,
                now + ttl,
                who.user,
                description,
                idempotency_key_hash=key_hash,
                arguments_hash=asked if idempotency_key else "",
                sealed_secret=sealed,
            )
            return core.issue_token(token)

        kind = "admin" if admin else "user"

        def detail(record: TokenRecord) -> str:
            # A retry issues nothing, but hands a secret out again: worth its own event.
            if record.secret_hash == secret_hash:
                return f"for {kind} {record.user}"
            return f"for {kind} {record.user}; a retry: the same token and secret handed out again"

        record = await self._engine.execute(self._recorded(who, "IssueToken", issue, detail))
        if record.secret_hash != secret_hash:
            # A retry: the token the key issued before, whose secret only the key unseals.
            assert record.sealed_secret is not None  # else the core refused the retry
            secret = _text(_xor(record.sealed_secret, _pad(idempotency_key, key_hash)))
            assert hmac.compare_digest(record.secret_hash, _hash(secret))
        return record, f"{record.id}.{secret}"

    def select(self, who: Identity, query: TokenQuery) -> Iterator[TokenRecord]:
        """The tokens query selects with ids above query.after, oldest first, read lazily
        (the caller takes a page and stops; take them before the next await, as publish()
        changes what is read). query.limit is the caller's to apply.

        This reads the copy of committed tokens this authority keeps for identify(), not
        the core through the engine: the tokens are the only core state it touches, a list
        then shows exactly the tokens that count on the token port, and it costs the
        engine's queue nothing."""
        if query.user:
            _check_user(query.user)
        return self._selected(query, self._clock())

    def _selected(self, query: TokenQuery, now: float) -> Iterator[TokenRecord]:
        for token_id in self._order.after(query.after, query.user):
            record = self._tokens[token_id]
            if query.matches(record, now):
                yield record

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
