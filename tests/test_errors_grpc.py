"""Errors that say what happened: a bug behind any call is INTERNAL with an id that leads to
its traceback in the log, never Python's text; a watch its client ends is no error."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys

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


# Opens a watch of every live request, reads one message and waits to be killed.
WATCHER = """
import sys, grpc
from boruta.v1 import requests_pb2
channel = grpc.insecure_channel(sys.argv[1])
watch = channel.unary_stream(
    "/boruta.v1.Requests/WatchRequests",
    request_serializer=requests_pb2.WatchRequestsRequest.SerializeToString,
    response_deserializer=requests_pb2.WatchRequestsResponse.FromString,
)(requests_pb2.WatchRequestsRequest(include_current=True), metadata=(("x-boruta-user", "bob"),))
next(iter(watch))
print("reading", flush=True)
sys.stdin.read()
"""


async def test_a_watch_whose_client_is_killed_is_an_info_line(
    farm: Farm, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed while megabytes of its first answer are still on their way to it."""
    caplog.set_level(logging.INFO)
    bob = farm.client("bob")
    caps = {f"k{i}": "v" * 250 for i in range(30)}
    for _ in range(200):
        await bob.new(caps, accept_unsatisfiable=True)
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER, farm.address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert await asyncio.to_thread(watcher.stdout.readline) == "reading\n"
    finally:
        watcher.kill()
        watcher.wait()
    while farm.scheduler.hub.open_of("bob"):  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
    cancelled = [r for r in caplog.records if r.getMessage() == "stream cancelled"]
    assert [r.levelno for r in cancelled] == [logging.INFO]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
