"""A bare gRPC server with the scheduler's messages and call pattern but no scheduling.

It answers NewRequest, AcquireWorker and CloseRequest with canned replies and, like the
scheduler, calls Dryad.Prepare on a board after each close. Benchmarks run it beside the
real scheduler to report what share of Python gRPC's own ceiling boruta reaches.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from typing import Any

import grpc
from boruta.v1 import (
    dryad_pb2,
    dryad_pb2_grpc,
    requests_pb2,
    requests_pb2_grpc,
    superviser_pb2,
    superviser_pb2_grpc,
    types_pb2,
)
from boruta_scheduler.main import run
from google.protobuf.timestamp_pb2 import Timestamp

Context = grpc.aio.ServicerContext[Any, Any]
READY = "bare-grpc listening on "


class BareRequests(requests_pb2_grpc.RequestsServicer):
    def __init__(self, superviser: BareSuperviser) -> None:
        self._ids = itertools.count(1)
        self._superviser = superviser
        self._tasks: set[asyncio.Task[None]] = set()

    def _info(self, request_id: int, state: int) -> types_pb2.RequestInfo:
        now = Timestamp()
        now.GetCurrentTime()
        return types_pb2.RequestInfo(
            id=request_id,
            priority=8,
            owner="bench",
            state=state,  # type: ignore[arg-type]
            caps={"board": "board0"},
            valid_after=now,
            deadline=now,
            created_at=now,
            updated_at=now,
            job=types_pb2.JobInfo(worker_uuid="b0", started_at=now, timeout_at=now),
        )

    async def NewRequest(
        self, request: requests_pb2.NewRequestRequest, context: Context
    ) -> requests_pb2.NewRequestResponse:
        info = self._info(next(self._ids), types_pb2.REQUEST_STATE_IN_PROGRESS)
        return requests_pb2.NewRequestResponse(request=info)

    async def AcquireWorker(
        self, request: requests_pb2.AcquireWorkerRequest, context: Context
    ) -> requests_pb2.AcquireWorkerResponse:
        return requests_pb2.AcquireWorkerResponse(
            access=types_pb2.AccessInfo(
                host="127.0.0.1", port=22, username="job", private_key_pem="K" * 2400
            ),
            job=types_pb2.JobInfo(worker_uuid="b0"),
        )

    async def CloseRequest(
        self, request: requests_pb2.CloseRequestRequest, context: Context
    ) -> requests_pb2.CloseRequestResponse:
        task = asyncio.ensure_future(self._superviser.prepare("b0"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return requests_pb2.CloseRequestResponse(
            request=self._info(request.request_id, types_pb2.REQUEST_STATE_DONE)
        )


class BareSuperviser(superviser_pb2_grpc.SuperviserServicer):
    def __init__(self) -> None:
        self._dryad: Any = None

    async def prepare(self, uuid: str) -> None:
        """The call the scheduler makes after a job: Prepare, with the checks first."""
        if self._dryad is not None:
            await self._dryad.Prepare(
                dryad_pb2.PrepareRequest(worker_uuid=uuid, run_healthcheck=True), timeout=30
            )

    async def Register(
        self, request: superviser_pb2.RegisterRequest, context: Context
    ) -> superviser_pb2.RegisterResponse:
        if self._dryad is None:
            channel = grpc.aio.insecure_channel(request.dryad_address)
            self._dryad = dryad_pb2_grpc.DryadStub(channel)
        reply = superviser_pb2.RegisterResponse()
        reply.heartbeat_interval.FromSeconds(10)
        return reply

    async def Heartbeat(
        self, request: superviser_pb2.HeartbeatRequest, context: Context
    ) -> superviser_pb2.HeartbeatResponse:
        reply = superviser_pb2.HeartbeatResponse()
        reply.heartbeat_interval.FromSeconds(10)
        return reply


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    superviser = BareSuperviser()  # type: ignore[abstract]  # unused methods stay unimplemented
    bare = BareRequests(superviser)  # type: ignore[abstract]
    requests_pb2_grpc.add_RequestsServicer_to_server(bare, server)
    superviser_pb2_grpc.add_SuperviserServicer_to_server(superviser, server)
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"{READY}{listen.rpartition(':')[0]}:{port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0")
    # The scheduler's own runner, so both servers run on the same event loop (uvloop
    # where it is installed): a loop's speed must not show up as a ratio.
    run(_served(parser.parse_args().listen))


async def _served(listen: str) -> int:
    await serve(listen)
    return 0


if __name__ == "__main__":
    main()
