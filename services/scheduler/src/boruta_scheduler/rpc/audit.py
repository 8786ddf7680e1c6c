"""Servicer of boruta.v1.Audit: admins read who did what."""

from __future__ import annotations

from typing import Any

import grpc
from boruta.v1 import audit_pb2, audit_pb2_grpc

from boruta_scheduler.app.audit import AuditLog
from boruta_scheduler.listing import PageTokens
from boruta_scheduler.rpc import convert
from boruta_scheduler.rpc.calls import current_identity

Context = grpc.aio.ServicerContext[Any, Any]


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(self, audit: AuditLog, tokens: PageTokens) -> None:
        self._audit = audit
        self._tokens = tokens

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: Context
    ) -> audit_pb2.ListAuditEventsResponse:
        at = convert.newest_first(
            self._tokens, request.page_token, request.page_size, "ListAuditEvents"
        )
        events = await self._audit.events(current_identity(), at.limit, at.before)
        # Ids start at 1: a full page that ends at id 1 is the last one.
        more = len(events) == at.limit and events[-1].id > 1
        return audit_pb2.ListAuditEventsResponse(
            events=[convert.audit_event(e) for e in events],
            next_page_token=at.next_token(self._tokens, events[-1].id if more else None),
        )
