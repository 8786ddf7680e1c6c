"""Errors that say what happened: a bug behind any call is INTERNAL with an id that leads to
its traceback in the log, never Python's text; a watch its client ends is no error."""

from __future__ import annotations

import asyncio
import logging
import re

import grpc
import pytest
from boruta.v1 import requests_pb2, workers_pb2
from farm_kit import Farm

SECRET = "text of a Python exception that must stay in the log"


def _bug(*args: object, **kwargs: object) -> object:
    raise RuntimeError(SECRET)


def _error_id(details: str) -> str:
    match = re.fullmatch(
        r"internal error \(id ([0-9a-f]{8})\); the scheduler's log has the details", details
    )
    assert match, details
    return match.group(1)


def _logged_with_traceback(caplog: pytest.LogCaptureFixture, error_id: str) -> logging.LogRecord:
    found = [r for r in caplog.records if getattr(r, "error_id", None) == error_id]
    assert len(found) == 1, [r.getMessage() for r in caplog.records]
    record = found[0]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert SECRET in str(record.exc_info[1])
    return record


async def test_a_bug_in_a_call_is_internal_with_an_id_in_the_log(
    farm: Farm, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(farm.scheduler.service, "get_request", _bug)  # type: ignore[attr-defined]
    alice = farm.client("alice")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await alice.info(1)
    assert info.value.code() is grpc.StatusCode.INTERNAL
    details = info.value.details() or ""
    assert SECRET not in details and "RuntimeError" not in details
    record = _logged_with_traceback(caplog, _error_id(details))
    assert record.call == "boruta.v1.Requests.GetRequestInfo"  # type: ignore[attr-defined]
    assert dict(info.value.trailing_metadata() or ())["boruta-error-reason"] == "INTERNAL"
    # The scheduler goes on serving.
    assert (await alice.new(accept_unsatisfiable=True)).id == 1


async def test_a_bug_in_a_watch_is_internal_with_an_id_in_the_log(
    farm: Farm, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(farm.scheduler.service, "watch_workers", _bug)  # type: ignore[attr-defined]
    admin = farm.admin
    stream = admin.workers.WatchWorkers(workers_pb2.WatchWorkersRequest(), metadata=admin.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stream:
            pass
    assert info.value.code() is grpc.StatusCode.INTERNAL
    _logged_with_traceback(caplog, _error_id(info.value.details() or ""))


async def test_a_watch_its_client_cancels_is_an_info_line(
    farm: Farm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    alice = farm.client("alice")
    for _ in range(3):
        stream = alice.requests.WatchRequests(
            requests_pb2.WatchRequestsRequest(include_current=True), metadata=alice.metadata
        )
        await stream.initial_metadata()  # the watch is in place
        stream.cancel()
    # The server hears of each cancel on its own time; then it closes the subscription.
    while farm.scheduler.hub.open_of("alice"):  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
    cancelled = [r for r in caplog.records if r.getMessage() == "stream cancelled"]
    assert len(cancelled) == 3 and all(r.levelno == logging.INFO for r in cancelled)
    assert cancelled[0].call == "boruta.v1.Requests.WatchRequests"  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
