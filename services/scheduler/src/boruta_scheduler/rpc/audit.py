"""Servicer of boruta.v1.Audit: admins read who did what."""

from __future__ import annotations

from typing import Any

import grpc
from boruta.v1 import audit_pb2, audit_pb2_grpc

from boruta_scheduler.audit import AuditLog
from boruta_scheduler.errors import InvalidArgument
from boruta_scheduler.rpc import convert
from boruta_scheduler.rpc.calls import current_identity

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_PAGE = 100
MAX_PAGE = 1000


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: Context
    ) -> audit_pb2.ListAuditEventsResponse:
        limit = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        before = None
        if request.page_token:
            if not request.page_token.isdigit() or len(request.page_token) > 19:
                raise InvalidArgument("page_token is not one this call returned")
            before = int(request.page_token)
        events = await self._audit.events(current_identity(), limit, before)
        reply = audit_pb2.ListAuditEventsResponse(
            events=[
                audit_pb2.AuditEvent(
                    id=e.id,
                    time=convert.timestamp(e.time),
                    actor=e.actor,
                    role=e.role,
                    action=e.action,
                    target=e.target,
                    detail=e.detail,
                )
                for e in events
            ]
        )
        if len(events) == limit and events[-1].id > 1:
            reply.next_page_token = str(events[-1].id)
        return reply
