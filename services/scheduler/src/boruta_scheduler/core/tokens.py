"""The bearer tokens admins issued: kept by the core so that issuing and revoking one are
commands like any other, committed with their audit event in the engine's batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from boruta_scheduler.errors import InvalidArgument
from boruta_scheduler.types import TokenRecord


class TokenTable:
    """Every token ever issued, by id; ids continue from the highest one restored (tokens
    are never deleted, so an id is never handed out twice once it is committed)."""

    def __init__(self, records: Iterable[TokenRecord] = ()) -> None:
        self._records = {t.id: t for t in records}
        self._last_id = max(self._records, default=0)

    def issue(self, token: TokenRecord) -> TokenRecord:
        """Keep a new token (its id is ignored) under the next id."""
        self._last_id += 1
        record = dataclasses.replace(token, id=self._last_id, revoked_at=None)
        self._records[record.id] = record
        return record

    def revoke(self, token_id: int, now: float) -> tuple[TokenRecord, bool]:
        """The token marked revoked at now, and whether it changed: a second revoke keeps
        the first time."""
        record = self._records.get(token_id)
        if record is None:
            raise InvalidArgument(f"no token {token_id}; see ListTokens")
        if record.revoked_at is not None:
            return record, False
        record = self._records[token_id] = dataclasses.replace(record, revoked_at=now)
        return record, True

    def all(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        return sorted(self._records.values(), key=lambda t: t.id)
