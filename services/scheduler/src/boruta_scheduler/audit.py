"""The audit log: who did what to which request or worker, who was given access to which
board, and who was refused. Events ride in the engine's batches and commit in the same
transaction as the change they record: no extra writes, and never a change without its
event."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from boruta_scheduler.errors import PermissionDenied
from boruta_scheduler.store import Store
from boruta_scheduler.types import AuditEvent, Identity, Role

if TYPE_CHECKING:
    from boruta_scheduler.engine import Engine


class AuditLog:
    """Records events through the engine; admins read them back (newest first)."""

    def __init__(self, engine: Engine, store: Store) -> None:
        self._engine = engine
        self._store = store

    def record(self, who: Identity, action: str, target: str, detail: str = "") -> None:
        """Call inside an engine command to commit with it; elsewhere it joins the next batch."""
        now = self._engine.now()
        self._engine.audit(AuditEvent(now, who.user, who.role.value, action, target, detail))

    async def events(self, who: Identity, limit: int, before: int | None) -> list[AuditEvent]:
        if who.role is not Role.ADMIN:
            raise PermissionDenied(
                f"only admins may read the audit log; {who.user} is a {who.role.value}"
            )
        # A batch of its own commits every event recorded so far, so reads see them
        # (while the store refuses writes, those wait, and the store has the rest).
        await self._engine.read(lambda core, now: None)
        return await asyncio.to_thread(self._store.audit, limit, before)
