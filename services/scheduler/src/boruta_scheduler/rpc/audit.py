"""Servicer of boruta.v1.Audit: admins read who did what."""

from __future__ import annotations

import re
from typing import Any

import grpc
from boruta.v1 import audit_pb2, audit_pb2_grpc

from boruta_scheduler.app.audit import AuditLog
from boruta_scheduler.errors import InvalidArgument
from boruta_scheduler.listing import INT64_MAX
from boruta_scheduler.rpc import convert
from boruta_scheduler.rpc.calls import current_identity

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_PAGE = 100
MAX_PAGE = 1000
_EVENT_ID = re.compile(r"[0-9]{1,19}")


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: Context
    ) -> audit_pb2.ListAuditEventsResponse:
        limit = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        before = None
        if request.page_token:
            # ASCII digits only (str.isdigit() also takes "²"), and an id fits in int64.
            if not _EVENT_ID.fullmatch(request.page_token) or int(request.page_token) > INT64_MAX:
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
