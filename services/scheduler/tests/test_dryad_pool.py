"""DryadPool against a stub dryad served over real gRPC on loopback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from boruta.metrics import LoopHistograms
from boruta.v1 import dryad_pb2_grpc
from boruta_dryad.backends import BackendError
from boruta_dryad.stub import KeySource, StubBoard, StubDryadServicer
from boruta_scheduler.core import DryadCall, DryadCallKind
from boruta_scheduler.dryads.pool import DryadCallError, DryadPool
from boruta_scheduler.types import Access, FailedChecks


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


@pytest.mark.parametrize("old_dryad", [False, True], ids=["checks-in-prepare", "old-dryad"])
async def test_prepare_checks_the_board_first(
    dryad: tuple[str, dict[str, StubBoard]], old_dryad: bool
) -> None:
    """A Prepare asked to check the board first: one call to a dryad that runs the checks
    within Prepare; a dryad older than that (which ignores the flag) gets a Healthcheck
    call after it, so that its board is checked all the same."""
    address, boards = dryad
    for board in boards.values():
        board.ignores_healthcheck_flag = old_dryad
    boards["pool-b"].unhealthy = "the camera is gone"
    pool = DryadPool(timeout=30)
    try:
        healthy = await pool.call(DryadCall(1, "pool-a", DryadCallKind.PREPARE, address, "", True))
        sick = await pool.call(DryadCall(2, "pool-b", DryadCallKind.PREPARE, address, "", True))
    finally:
        await pool.close()
    assert isinstance(healthy, Access) and healthy.username == boards["pool-a"].last_username
    assert sick == FailedChecks("failing checks: stub: the camera is gone")
    calls = {uuid: (b.prepared, b.healthchecks) for uuid, b in boards.items()}
    if old_dryad:
        assert calls == {"pool-a": (1, 1), "pool-b": (1, 1)}
    else:
        assert calls == {"pool-a": (1, 0), "pool-b": (0, 0)}


async def test_each_call_is_timed_by_kind_and_result(
    dryad: tuple[str, dict[str, StubBoard]],
) -> None:
    """What boruta_dryad_call_duration_seconds counts: every call once (its retries
    inside it), with ok, the gRPC code, or unhealthy for a failed check."""
    address, boards = dryad
    boards["pool-b"].unhealthy = "the camera is gone"
    boards["pool-b"].fail_prepare = BackendError("the board does not answer")
    timings = LoopHistograms("calls", "dryad calls", ("kind", "result"))
    pool = DryadPool(timeout=30, retries=0, timings=timings)
    calls = [
        (DryadCall(1, "pool-a", DryadCallKind.PREPARE, address), None),
        (DryadCall(2, "pool-a", DryadCallKind.HEALTHCHECK, address), None),
        (
            DryadCall(3, "pool-b", DryadCallKind.HEALTHCHECK, address),
            "^failing checks: .*camera is gone",
        ),
        (DryadCall(4, "pool-b", DryadCallKind.PREPARE, address), "FAILED_PRECONDITION"),
        (DryadCall(5, "nowhere", DryadCallKind.HEALTHCHECK, address), "NOT_FOUND"),
        (DryadCall(6, "pool-b", DryadCallKind.PREPARE, address, "", True), None),
    ]
    try:
        for call, error in calls:
            if error is None:
                await pool.call(call)
                continue
            with pytest.raises(DryadCallError, match=error):
                await pool.call(call)
    finally:
        await pool.close()
    counted = {values: sum(child.counts) for values, child in timings.children.items()}
    assert counted == {
        ("Prepare", "ok"): 1,
        ("Healthcheck", "ok"): 1,
        ("Healthcheck", "unhealthy"): 1,
        ("Prepare", "FAILED_PRECONDITION"): 1,
        ("Healthcheck", "NOT_FOUND"): 1,
        ("Prepare", "unhealthy"): 1,
    }
