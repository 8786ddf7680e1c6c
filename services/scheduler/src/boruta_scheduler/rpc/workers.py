"""Servicer of boruta.v1.Workers: converts messages and calls the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from boruta.v1 import workers_pb2, workers_pb2_grpc

from boruta_scheduler.app.service import SchedulerService
from boruta_scheduler.errors import InvalidArgument
from boruta_scheduler.listing import PageTokens, worker_sort_key
from boruta_scheduler.rpc import convert
from boruta_scheduler.rpc.calls import current_identity
from boruta_scheduler.types import Role, WorkerState

Context = grpc.aio.ServicerContext[Any, Any]


class WorkersServicer(workers_pb2_grpc.WorkersServicer):
    def __init__(self, service: SchedulerService, tokens: PageTokens) -> None:
        self._service = service
        self._tokens = tokens

    async def ListWorkers(
        self, request: workers_pb2.ListWorkersRequest, context: Context
    ) -> workers_pb2.ListWorkersResponse:
        query, scope = convert.worker_query(request, self._tokens)
        page = await self._service.list_workers(current_identity(), query)
        infos, after = convert.fitted(
            page, convert.worker_info, lambda w: worker_sort_key(query.sort, w)
        )
        return workers_pb2.ListWorkersResponse(
            workers=infos, next_page_token=self._tokens.encode(scope, after)
        )

    async def CreateStack(
        self, request: workers_pb2.CreateStackRequest, context: Context
    ) -> workers_pb2.CreateStackResponse:
        view = await self._service.create_stack(
            current_identity(), request.name, tuple(request.worker_uuids)
        )
        return workers_pb2.CreateStackResponse(stack=convert.stack_info(view))

    async def ListStacks(
        self, request: workers_pb2.ListStacksRequest, context: Context
    ) -> workers_pb2.ListStacksResponse:
        views = await self._service.list_stacks(current_identity())
        return workers_pb2.ListStacksResponse(stacks=[convert.stack_info(s) for s in views])

    async def ListAllocations(
        self, request: workers_pb2.ListAllocationsRequest, context: Context
    ) -> workers_pb2.ListAllocationsResponse:
        views = await self._service.list_allocations(current_identity())
        return workers_pb2.ListAllocationsResponse(
            allocations=[convert.allocation(a) for a in views]
        )

    async def DeleteStack(
        self, request: workers_pb2.DeleteStackRequest, context: Context
    ) -> workers_pb2.DeleteStackResponse:
        await self._service.delete_stack(current_identity(), request.name)
        return workers_pb2.DeleteStackResponse()

    async def WhoAmI(
        self, request: workers_pb2.WhoAmIRequest, context: Context
    ) -> workers_pb2.WhoAmIResponse:
        who = current_identity()
        return workers_pb2.WhoAmIResponse(
            user=who.user,
            groups=sorted(who.groups),
            admin=who.role is Role.ADMIN,
            token_id=who.token_id or 0,
        )

    async def GetWorkerInfo(
        self, request: workers_pb2.GetWorkerInfoRequest, context: Context
    ) -> workers_pb2.GetWorkerInfoResponse:
        view = await self._service.get_worker(current_identity(), request.worker_uuid)
        return workers_pb2.GetWorkerInfoResponse(worker=convert.worker_info(view))

    async def ListWorkerHistory(
        self, request: workers_pb2.ListWorkerHistoryRequest, context: Context
    ) -> workers_pb2.ListWorkerHistoryResponse:
        at = convert.newest_first(
            self._tokens,
            request.page_token,
            request.page_size,
            "ListWorkerHistory",
            request.worker_uuid,
        )
        page = await self._service.worker_history(
            current_identity(), request.worker_uuid, at.limit, at.before
        )
        entries = [convert.history_entry(e) for e in page.entries]
        token = at.next_token(self._tokens, page.next_before or None)
        return workers_pb2.ListWorkerHistoryResponse(entries=entries, next_page_token=token)

    async def SetState(
        self, request: workers_pb2.SetStateRequest, context: Context
    ) -> workers_pb2.SetStateResponse:
        try:
            state = WorkerState(request.state)
        except ValueError:
            raise InvalidArgument(
                f"state must be WORKER_STATE_IDLE or WORKER_STATE_MAINTENANCE, got {request.state}"
            ) from None
        view = await self._service.set_state(
            current_identity(), request.worker_uuid, state, request.reason, request.after_job
        )
        return workers_pb2.SetStateResponse(worker=convert.worker_info(view))

    async def SetGroups(
        self, request: workers_pb2.SetGroupsRequest, context: Context
    ) -> workers_pb2.SetGroupsResponse:
        view = await self._service.set_groups(
            current_identity(), request.worker_uuid, frozenset(request.groups)
        )
        return workers_pb2.SetGroupsResponse(worker=convert.worker_info(view))

    async def Deregister(
        self, request: workers_pb2.DeregisterRequest, context: Context
    ) -> workers_pb2.DeregisterResponse:
        await self._service.deregister(current_identity(), request.worker_uuid)
        return workers_pb2.DeregisterResponse()

    async def WatchWorkers(
        self, request: workers_pb2.WatchWorkersRequest, context: Context
    ) -> AsyncIterator[workers_pb2.WatchWorkersResponse]:
        query = convert.worker_filter(request.filter)
        who = current_identity()
        current, changes = await self._service.watch_workers(who, query, request.include_current)
        try:
            # Initial metadata tells the client the watch is in place: no change is missed.
            await context.send_initial_metadata(())
            for view in current:
                yield workers_pb2.WatchWorkersResponse(worker=convert.worker_info(view))
            async for event in changes:
                self._service.revalidate(who)  # a revoked token ends its watches
                yield workers_pb2.WatchWorkersResponse(
                    worker=convert.worker_info(event.view), removed=event.removed
                )
        finally:
            changes.close()
