"""The audit log: who did what to which request or worker, who was given access to which
board, and who was refused. Events are written in the background, in order, in batches,
so that recording one never slows the call it records."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from boruta_scheduler.errors import PermissionDenied
from boruta_scheduler.store import Store
from boruta_scheduler.types import AuditEvent, Identity, Role

log = logging.getLogger(__name__)


class AuditLog:
    """Records events; admins read them back (newest first)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._pending: list[AuditEvent] = []
        self._writer: asyncio.Task[None] | None = None

    def record(self, who: Identity, action: str, target: str, detail: str = "") -> None:
        event = AuditEvent(self._clock(), who.user, who.role.value, action, target, detail)
        self._pending.append(event)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._store.add_audit, batch)
            except Exception:
                log.exception("audit events could not be stored", extra={"count": len(batch)})

    async def flush(self) -> None:
        """Wait until every event recorded so far is stored."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def events(self, who: Identity, limit: int, before: int | None) -> list[AuditEvent]:
        if who.role is not Role.ADMIN:
            raise PermissionDenied(
                f"only admins may read the audit log; {who.user} is a {who.role.value}"
            )
        await self.flush()
        return await asyncio.to_thread(self._store.audit, limit, before)
