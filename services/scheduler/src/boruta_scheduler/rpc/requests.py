"""Servicer of boruta.v1.Requests: converts messages and calls the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from boruta.v1 import requests_pb2, requests_pb2_grpc

from boruta_scheduler.app.service import SchedulerService
from boruta_scheduler.listing import PageTokens, request_sort_key
from boruta_scheduler.rpc import convert
from boruta_scheduler.rpc.calls import current_identity

Context = grpc.aio.ServicerContext[Any, Any]


class RequestsServicer(requests_pb2_grpc.RequestsServicer):
    def __init__(self, service: SchedulerService, tokens: PageTokens) -> None:
        self._service = service
        self._tokens = tokens

    async def NewRequest(
        self, request: requests_pb2.NewRequestRequest, context: Context
    ) -> requests_pb2.NewRequestResponse:
        view = await self._service.new_request(
            current_identity(),
            request.caps,
            priority=request.priority,
            valid_after=convert.optional_seconds(request, "valid_after"),
            deadline=convert.optional_seconds(request, "deadline"),
            accept_unsatisfiable=request.accept_unsatisfiable,
            no_wait=request.no_wait,
            job_timeout=convert.optional_duration(request, "job_timeout") or 0.0,
            idempotency_key=request.idempotency_key,
            profiles=[(p.name, p.caps) for p in request.profiles],
            together=convert.colocations(request.together),
        )
        return requests_pb2.NewRequestResponse(request=convert.request_info(view))

    async def CloseRequest(
        self, request: requests_pb2.CloseRequestRequest, context: Context
    ) -> requests_pb2.CloseRequestResponse:
        view = await self._service.close_request(current_identity(), request.request_id)
        return requests_pb2.CloseRequestResponse(request=convert.request_info(view))

    async def UpdateRequest(
        self, request: requests_pb2.UpdateRequestRequest, context: Context
    ) -> requests_pb2.UpdateRequestResponse:
        view = await self._service.update_request(
            current_identity(),
            request.request_id,
            priority=request.priority if request.HasField("priority") else None,
            valid_after=convert.optional_seconds(request, "valid_after"),
            deadline=convert.optional_seconds(request, "deadline"),
        )
        return requests_pb2.UpdateRequestResponse(request=convert.request_info(view))

    async def GetRequestInfo(
        self, request: requests_pb2.GetRequestInfoRequest, context: Context
    ) -> requests_pb2.GetRequestInfoResponse:
        view, reason = await self._service.request_info(current_identity(), request.request_id)
        reply = requests_pb2.GetRequestInfoResponse(request=convert.request_info(view, reason))
        if reason is not None:
            reply.queue_position = reason.requests_ahead
        return reply

    async def ListRequests(
        self, request: requests_pb2.ListRequestsRequest, context: Context
    ) -> requests_pb2.ListRequestsResponse:
        query, scope = convert.request_query(request, self._tokens)
        who = current_identity()
        page = await self._service.list_requests(who, query)
        reasons = await self._service.pending_reasons(who, page.items)
        infos, after = convert.fitted(
            page,
            lambda v: convert.request_info(v, reasons.get(v.id)),
            lambda v: request_sort_key(query.sort, v),
        )
        return requests_pb2.ListRequestsResponse(
            requests=infos, next_page_token=self._tokens.encode(scope, after)
        )

    async def AcquireWorker(
        self, request: requests_pb2.AcquireWorkerRequest, context: Context
    ) -> requests_pb2.AcquireWorkerResponse:
        view = await self._service.acquire_worker(
            current_identity(), request.request_id, context.time_remaining()
        )
        job = view.job
        assert job is not None
        host = self._service.settings.public_host
        reply = requests_pb2.AcquireWorkerResponse(
            access=convert.access_info(job, host), job=convert.job_info(job)
        )
        if view.profiles:
            reply.boards.extend(
                requests_pb2.BoardAccess(
                    name=profile.name,
                    access=convert.access_info(each, host),
                    job=convert.job_info(each),
                )
                for profile, each in zip(view.profiles, view.jobs, strict=True)
            )
        return reply

    async def ProlongAccess(
        self, request: requests_pb2.ProlongAccessRequest, context: Context
    ) -> requests_pb2.ProlongAccessResponse:
        seen = request.prolong_count if request.HasField("prolong_count") else None
        job = await self._service.prolong_access(current_identity(), request.request_id, seen)
        return requests_pb2.ProlongAccessResponse(job=convert.job_info(job))

    async def WatchRequests(
        self, request: requests_pb2.WatchRequestsRequest, context: Context
    ) -> AsyncIterator[requests_pb2.WatchRequestsResponse]:
        query = convert.request_filter(request.filter)
        who = current_identity()
        current, changes = await self._service.watch_requests(who, query, request.include_current)
        try:
            # Initial metadata tells the client the watch is in place: no change is missed.
            await context.send_initial_metadata(())
            for view in current:
                yield requests_pb2.WatchRequestsResponse(request=convert.request_info(view))
            async for view in changes:
                self._service.revalidate(who)  # a revoked token ends its watches
                yield requests_pb2.WatchRequestsResponse(request=convert.request_info(view))
        finally:
            changes.close()

    async def GetUsage(
        self, request: requests_pb2.GetUsageRequest, context: Context
    ) -> requests_pb2.GetUsageResponse:
        query, totals = await self._service.usage(
            current_identity(),
            convert.optional_seconds(request, "since"),
            convert.optional_seconds(request, "until"),
            convert.usage_by(request.by),
            request.owner,
        )
        return convert.usage_response(query, totals)
