"""DryadPool against a stub dryad served over real gRPC on loopback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from boruta.v1 import dryad_pb2_grpc
from boruta_dryad.stub import KeySource, StubBoard, StubDryadServicer
from boruta_scheduler.core import DryadCall, DryadCallKind
from boruta_scheduler.dryads.pool import DryadPool


@pytest.fixture
async def dryad() -> AsyncIterator[tuple[str, dict[str, StubBoard]]]:
    boards = {uuid: StubBoard(uuid, {"board": "x"}) for uuid in ("pool-a", "pool-b")}
    server = grpc.aio.server()
    dryad_pb2_grpc.add_DryadServicer_to_server(
        StubDryadServicer(boards, KeySource(pool_size=2)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", boards
    finally:
        await server.stop(None)


async def test_missing_host_keys_are_reported_once_per_worker(
    dryad: tuple[str, dict[str, StubBoard]], caplog: pytest.LogCaptureFixture
) -> None:
    address, boards = dryad
    pool = DryadPool(timeout=30)
    caplog.set_level(logging.WARNING, logger="boruta_scheduler.dryads.pool")
    try:
        for uuid in ("pool-a", "pool-a", "pool-b", "pool-a"):
            access = await pool.call(DryadCall(1, uuid, DryadCallKind.PREPARE, address))
            assert access is not None and access.host_keys == ()
    finally:
        await pool.close()
    warned = [r for r in caplog.records if "no SSH host keys" in r.getMessage()]
    assert [r.worker for r in warned] == ["pool-a", "pool-b"]  # type: ignore[attr-defined]
    assert boards["pool-a"].prepared == 3
