"""Servicer of boruta.v1.Superviser: the dryads' side of the scheduler."""

from __future__ import annotations

from typing import Any

import grpc
from boruta.v1 import superviser_pb2, superviser_pb2_grpc
from google.protobuf.duration_pb2 import Duration

from boruta_scheduler.app.service import SchedulerService
from boruta_scheduler.rpc import convert
from boruta_scheduler.rpc.calls import current_identity

Context = grpc.aio.ServicerContext[Any, Any]


class SuperviserServicer(superviser_pb2_grpc.SuperviserServicer):
    def __init__(self, service: SchedulerService) -> None:
        self._service = service

    def _interval(self) -> Duration:
        interval = Duration()
        interval.FromNanoseconds(round(self._service.settings.heartbeat_interval * 1e9))
        return interval

    async def Register(
        self, request: superviser_pb2.RegisterRequest, context: Context
    ) -> superviser_pb2.RegisterResponse:
        view, live = await self._service.register(
            current_identity(),
            request.caps,
            request.dryad_address,
            request.ssh_address,
            request.instance_id,
            request.dryad_version,
        )
        return superviser_pb2.RegisterResponse(
            worker=convert.worker_info(view),
            heartbeat_interval=self._interval(),
            live_job_users=_verdict(live),
        )

    async def Heartbeat(
        self, request: superviser_pb2.HeartbeatRequest, context: Context
    ) -> superviser_pb2.HeartbeatResponse:
        status = (
            convert.host_status(request.host_status) if request.HasField("host_status") else None
        )
        live, state = await self._service.heartbeat(current_identity(), request.worker_uuid, status)
        return superviser_pb2.HeartbeatResponse(
            heartbeat_interval=self._interval(),
            live_job_users=_verdict(live),
            worker_state=0 if state is None else int(state),  # type: ignore[arg-type]
        )

    async def SetFail(
        self, request: superviser_pb2.SetFailRequest, context: Context
    ) -> superviser_pb2.SetFailResponse:
        await self._service.set_fail(
            current_identity(),
            request.worker_uuid,
            request.reason,
            local_checks=request.local_checks,
        )
        return superviser_pb2.SetFailResponse()


def _verdict(live: tuple[str, ...] | None) -> superviser_pb2.LiveJobUsers | None:
    """Unset (no verdict) for None; an empty message means: keep no job user."""
    return None if live is None else superviser_pb2.LiveJobUsers(usernames=live)
