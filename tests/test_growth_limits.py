"""What one user can make the scheduler keep, over real gRPC against SQLite: refusals beyond
a rate are counted instead of written one by one, the caps of waiting requests are
limited per user, and audit events stay small whatever a request carries."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import uuid
from pathlib import Path

import grpc
import pytest
from boruta.v1 import types_pb2, workers_pb2
from boruta_client import AsyncClient
from boruta_scheduler.app.refusals import SUMMARY_INTERVAL
from boruta_scheduler.core import Policy
from boruta_scheduler.store import SQLiteStore
from boruta_scheduler.types import Identity, Role
from conftest import start_scheduler
from farm_kit import Farm, board

REFUSED_CALLS = 3000
RATE = 20


async def test_a_flood_of_refused_calls_makes_a_bounded_number_of_audit_rows_and_log_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="boruta_scheduler.rpc.calls")
    scheduler = await start_scheduler(tmp_path, audit_refusals_per_minute=RATE)
    farm = Farm(f"127.0.0.1:{scheduler.port}")
    user = f"mallory-{uuid.uuid4().hex[:8]}"
    mallory = farm.client(user)
    try:

        async def refused() -> None:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await mallory.workers.SetState(
                    workers_pb2.SetStateRequest(worker_uuid="w", state=types_pb2.WORKER_STATE_IDLE),
                    metadata=mallory.metadata,
                )
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED

        started = time.monotonic()
        for _ in range(REFUSED_CALLS // 100):
            await asyncio.gather(*(refused() for _ in range(100)))
        took = time.monotonic() - started
    finally:
        await farm.close()
        # Stopping writes the summary of what is still counted.
        await scheduler.stop(grace=0)
    store = SQLiteStore(tmp_path / "state" / "boruta.db")
    try:
        events = [e for e in store.audit(100_000) if e.actor == user]
    finally:
        store.close()
    one_by_one = [e for e in events if e.action == "refused"]
    summaries = [e for e in events if e.action == "refusals suppressed"]
    # The burst is written one by one, and the few the bucket refilled while the flood
    # lasted; every further refusal is counted in a summary (one per minute the flood
    # lasted, and one written at stop).
    refilled = math.ceil(took * RATE / 60)  # RATE a minute
    assert RATE <= len(one_by_one) <= RATE + refilled, (len(one_by_one), took)
    assert 1 <= len(summaries) <= 2 + took / SUMMARY_INTERVAL, [e.detail for e in summaries]
    counted = 0
    for event in summaries:
        match = re.match(rf"(\d+) more refusals of {user} suppressed", event.detail)
        assert match, event.detail
        counted += int(match.group(1))
        assert event.target == "SetState" and "SetState" in event.detail
    assert len(one_by_one) + counted == REFUSED_CALLS
    # The log has the same bound: a line per refusal up to the rate, then one line per
    # interval with the count of those left out.
    mine = [r for r in caplog.records if getattr(r, "caller", None) == user]
    lines = [r for r in mine if r.getMessage() == "call refused"]
    left_out = [r for r in mine if r.getMessage() == "refused calls not logged"]
    assert RATE <= len(lines) <= RATE + refilled, (len(lines), took)
    assert 1 <= len(left_out) <= 2 + took / SUMMARY_INTERVAL
    assert len(lines) + sum(r.count for r in left_out) == REFUSED_CALLS  # type: ignore[attr-defined]


@pytest.fixture
def policy() -> Policy:
    return Policy(max_waiting_caps_bytes_per_user=40_000)


async def test_caps_of_waiting_requests_are_limited_per_user_and_events_stay_small(
    farm: Farm,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    await farm.add_dryad([board(f"busy-{suffix}", board="rpi")], idle=False)
    alice, bob = farm.client(f"alice-{suffix}"), farm.client(f"bob-{suffix}")
    # The largest caps the policy allows: 32 values of 256 characters (about 8.4 KB).
    largest = {f"k{i:02d}": f"{i:02d}".ljust(256, "v") for i in range(32)}
    created = [await alice.new(largest, accept_unsatisfiable=True) for _ in range(4)]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await alice.new(largest, accept_unsatisfiable=True)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    details = info.value.details() or ""
    assert "max_waiting_caps_bytes_per_user" in details and "shorter caps" in details, details
    # Nothing was created by the refused call; another user is not held back.
    after = await bob.new(largest, accept_unsatisfiable=True)
    assert after.id == created[-1].id + 1
    # A user who closes waiting requests may queue again.
    await alice.close(created[0].id)
    assert (await alice.new(largest, accept_unsatisfiable=True)).id == after.id + 1
    # The request keeps its caps; its audit event shows only the start of them.
    audit = farm.scheduler.service.audit  # type: ignore[attr-defined]
    events = await audit.events(Identity("root", role=Role.ADMIN), 100, None)
    new_requests = [e for e in events if e.action == "NewRequest"]
    assert new_requests and all(len(e.detail) < 400 for e in new_requests)
    assert dict((await bob.info(after.id)).caps) == largest


async def test_requests_with_the_largest_caps_are_listed(tmp_path: Path) -> None:
    """What one user may queue (16 profiles of the largest caps, within the default caps
    quota) must not stop anyone listing requests: a page of them would pass the 4 MiB a
    gRPC client accepts, so the scheduler cuts pages shorter."""
    scheduler = await start_scheduler(tmp_path, Policy())
    farm = Farm(f"127.0.0.1:{scheduler.port}")
    suffix = uuid.uuid4().hex[:8]
    alice = farm.client(f"alice-{suffix}")
    largest = {f"k{i:02d}": f"{i:02d}".ljust(256, "v") for i in range(32)}
    profiles = [types_pb2.Profile(name=f"p{n}", caps=largest) for n in range(16)]
    made = [(await alice.new(profiles=profiles, accept_unsatisfiable=True)).id for _ in range(40)]
    admin = AsyncClient(farm.address, user="root", admin=True)
    try:
        listed = await admin.list_requests(owners=[f"alice-{suffix}"])
    finally:
        await admin.close()
        await farm.close()
        await scheduler.stop(grace=0)
    assert [r.id for r in listed] == made
    assert all(len(r.profiles) == 16 for r in listed)


PEM_BEGIN = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


async def test_after_many_jobs_the_store_files_hold_only_the_keys_in_use(
    farm: Farm, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    boards = [board(f"keys-{suffix}-{n}", lab=suffix) for n in range(2)]
    await farm.add_dryad(boards)
    alice = farm.client(f"alice-{suffix}")
    handed_out = []
    for _ in range(10):
        jobs = [await alice.new({"lab": suffix}) for _ in boards]
        for job in jobs:
            handed_out.append((await alice.acquire(job.id)).access.private_key_pem)
            await alice.close(job.id)
        for b in boards:
            await farm.admin.wait_worker(b.uuid, types_pb2.WORKER_STATE_IDLE)
    # One round of what the scheduler does every few seconds by itself (if its own round
    # came first, this one waits for it).
    await farm.scheduler.engine.housekeep()  # type: ignore[attr-defined]
    files = [tmp_path / "state" / name for name in ("boruta.db", "boruta.db-wal")]
    data = b"".join(f.read_bytes() for f in files if f.exists())
    # Each idle board's next key, once; none of the twenty keys of ended jobs.
    assert len(PEM_BEGIN.findall(data)) == len(boards)
    for pem in handed_out:
        body = pem.splitlines()[1].encode()
        assert body not in data
