"""The bearer tokens admins issued: kept by the core so that issuing and revoking one are
commands like any other, committed with their audit event in the engine's batch."""

from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from collections.abc import Iterable

from boruta_scheduler.errors import FailedPrecondition, IdempotencyKeyReused, InvalidArgument
from boruta_scheduler.types import TokenRecord

# How long after issuing a token with an idempotency key its sealed secret is kept, so that
# a retry of the call can be answered with it (docs/security.md, "Retried IssueToken").
SEAL_KEPT = 600.0


def stopped_at(token: TokenRecord) -> float:
    """When a token stopped (or will stop) working: the earlier of its expiry and revocation."""
    if token.revoked_at is None:
        return token.expires_at
    return min(token.expires_at, token.revoked_at)


class TokenTable:
    """The tokens issued and not yet purged, by id. Ids continue from the stored counter
    last_id or the highest id restored, whichever is higher, so an id is never handed out
    twice once it is committed, even after its token was purged."""

    def __init__(self, records: Iterable[TokenRecord] = (), last_id: int = 0) -> None:
        self._records = {t.id: t for t in records}
        self._last_id = max(last_id, max(self._records, default=0))
        # (when it stopped working, id) of every token, earliest first; a revoked token
        # has a second, earlier entry, and an entry of a token already purged is skipped.
        self._by_stop = [(t.expires_at, t.id) for t in self._records.values()]
        self._by_stop.extend(
            (t.revoked_at, t.id) for t in self._records.values() if t.revoked_at is not None
        )
        heapq.heapify(self._by_stop)
        self._by_key = {
            (t.issued_by, t.idempotency_key_hash): t.id
            for t in self._records.values()
            if t.idempotency_key_hash
        }
        # Tokens whose secret is still sealed, oldest first.
        self._sealed = deque(
            sorted(t.id for t in self._records.values() if t.sealed_secret is not None)
        )

    def issue(self, token: TokenRecord) -> tuple[TokenRecord, bool]:
        """Keep a new token (its id is ignored) under the next id, or find the one its
        idempotency key issued before; and whether it is new. A key reused with other
        arguments, or past SEAL_KEPT, is refused."""
        if token.idempotency_key_hash:
            earlier_id = self._by_key.get((token.issued_by, token.idempotency_key_hash))
            if earlier_id is not None:
                return self._retried(self._records[earlier_id], token), False
        self._last_id += 1
        record = dataclasses.replace(token, id=self._last_id, revoked_at=None)
        self._records[record.id] = record
        if record.idempotency_key_hash:
            self._by_key[(record.issued_by, record.idempotency_key_hash)] = record.id
        if record.sealed_secret is not None:
            self._sealed.append(record.id)
        heapq.heappush(self._by_stop, (record.expires_at, record.id))
        return record, True

    @staticmethod
    def _retried(earlier: TokenRecord, token: TokenRecord) -> TokenRecord:
        """The token a retried IssueToken gets: the one its key issued, if still sealed."""
        if earlier.arguments_hash != token.arguments_hash:
            raise IdempotencyKeyReused(
                f"{token.issued_by} already used this idempotency_key for token "
                f"{earlier.id}, with other arguments; use a new key for a new token, or "
                "repeat the first call's arguments exactly"
            )
        now = token.created_at
        if earlier.sealed_secret is None or now >= earlier.created_at + SEAL_KEPT:
            raise FailedPrecondition(
                f"token {earlier.id} was issued for this idempotency_key "
                f"{now - earlier.created_at:.0f} s ago, and its secret is kept for a retry "
                f"only {SEAL_KEPT:.0f} s: revoke token {earlier.id} and issue a new one "
                "with a new key"
            )
        return earlier

    def next_unseal(self) -> float | None:
        """When the oldest sealed secret is to be cleared, or None."""
        return self._records[self._sealed[0]].created_at + SEAL_KEPT if self._sealed else None

    def unseal(self, now: float) -> list[TokenRecord]:
        """Clear the sealed secrets kept SEAL_KEPT seconds; the tokens changed."""
        changed = []
        while self._sealed:
            record = self._records[self._sealed[0]]
            if now < record.created_at + SEAL_KEPT:
                break
            self._sealed.popleft()
            record = self._records[record.id] = dataclasses.replace(record, sealed_secret=None)
            changed.append(record)
        return changed

    def revoke(self, token_id: int, now: float) -> tuple[TokenRecord, bool]:
        """The token marked revoked at now, and whether it changed: a second revoke keeps
        the first time."""
        record = self._records.get(token_id)
        if record is None:
            if 0 < token_id <= self._last_id:
                raise InvalidArgument(
                    f"no token {token_id}: it was issued, but it expired or was revoked "
                    "longer ago than the token retention (the scheduler's token_retention "
                    "setting), so it was forgotten; see ListTokens"
                )
            raise InvalidArgument(f"no token {token_id}; see ListTokens")
        if record.revoked_at is not None:
            return record, False
        record = self._records[token_id] = dataclasses.replace(record, revoked_at=now)
        heapq.heappush(self._by_stop, (now, token_id))
        return record, True

    def next_purge(self, retention: float) -> float | None:
        """When purge(..., retention, ...) next has a token to forget, or None."""
        by_stop = self._by_stop
        while by_stop:
            stop, token_id = by_stop[0]
            record = self._records.get(token_id)
            if record is not None and stopped_at(record) == stop:
                return stop + retention
            heapq.heappop(by_stop)  # its token was purged, or it stopped earlier
        return None

    def purge(self, now: float, retention: float, limit: int) -> list[int]:
        """Forget up to limit tokens that stopped working more than retention seconds
        before now, earliest stopped first; their ids. Tokens still working, and those
        stopped within the retention, stay."""
        purged: list[int] = []
        while len(purged) < limit:
            due = self.next_purge(retention)
            if due is None or due >= now:
                break
            _, token_id = heapq.heappop(self._by_stop)
            record = self._records.pop(token_id)
            if record.idempotency_key_hash:
                self._by_key.pop((record.issued_by, record.idempotency_key_hash), None)
            purged.append(token_id)
        if purged and self._sealed:
            # A secret is sealed only minutes after its issue, so this is rare and short.
            self._sealed = deque(i for i in self._sealed if i in self._records)
        return purged

    def all(self) -> list[TokenRecord]:
        """Every token kept (not purged), oldest first."""
        return sorted(self._records.values(), key=lambda t: t.id)
