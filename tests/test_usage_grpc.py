"""Usage over real gRPC: a scripted workload on a live scheduler (a real SQLite file, or
PostgreSQL), its figures checked against the requests' own times, then the scheduler
killed (-9) and started again, or on PostgreSQL a standby taking over: the figures are
the same to the nanosecond. Users see their own usage only; bad periods say what to fix."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from boruta.v1 import requests_pb2, types_pb2, workers_pb2
from farm_kit import Client, Farm, SchedulerProcess, Schedulers, board, schedctl_env
from google.protobuf.timestamp_pb2 import Timestamp

S = types_pb2
R = requests_pb2
OPTIONS = ("--heartbeat-interval", "0.2s", "--heartbeat-timeout", "120s")
ALICE_GROUPS = ["lab", "qa"]
BOB_GROUPS = ["qa"]
# The boards' groups, as the workload sets them.
BOARD_GROUPS = {"w1": [], "w2": ["lab"], "w3": ["qa", "lab"]}


def ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(round(seconds * 1e9))
    return t


def seconds(t: Timestamp) -> float:
    return t.ToNanoseconds() / 1e9


@dataclass
class Totals:
    """What the test expects of one UsageTotals, summed from the requests' own times."""

    board: float = 0.0
    jobs: int = 0
    requests: int = 0
    wait: float = 0.0
    max_wait: float = 0.0
    unstarted: int = 0
    unstarted_wait: float = 0.0
    waits: list[float] = field(default_factory=list)


def group_of(owner_groups: list[str], worker: str) -> str:
    """The rule of docs/api.md: the first of the board's groups the owner is in."""
    groups = BOARD_GROUPS[worker]
    if not groups:
        return "(open)"
    shared = sorted(set(groups) & set(owner_groups))
    return shared[0] if shared else "(none)"


def expected(
    requests: list[S.RequestInfo], since: float, until: float, now: float, by_group: bool
) -> dict[str, Totals]:
    found: dict[str, Totals] = {}
    for r in requests:
        created, updated = seconds(r.created_at), seconds(r.updated_at)
        ended = r.state not in (S.REQUEST_STATE_WAITING, S.REQUEST_STATE_IN_PROGRESS)
        jobs = list(r.jobs) or ([r.job] if r.HasField("job") else [])
        if not jobs:
            if ended and since <= updated < until:
                t = found.setdefault("(none)" if by_group else r.owner, Totals())
                t.unstarted += 1
                t.unstarted_wait += updated - created
            continue
        for index, job in enumerate(jobs):
            key = group_of(list(r.owner_groups), job.worker_uuid) if by_group else r.owner
            started = seconds(job.started_at)
            end = min(updated if ended else now, until)
            if end <= since or started >= until:
                continue
            t = found.setdefault(key, Totals())
            t.board += max(0.0, end - max(started, since))
            if since <= started < until:
                t.jobs += 1
                if index == 0:
                    t.requests += 1
                    t.wait += started - created
                    t.max_wait = max(t.max_wait, started - created)
    return found


def shown(reply: R.GetUsageResponse) -> dict[str, Totals]:
    return {
        t.key: Totals(
            board=t.board_time.ToNanoseconds() / 1e9,
            jobs=t.jobs,
            requests=t.requests,
            wait=t.wait_time.ToNanoseconds() / 1e9,
            max_wait=t.max_wait.ToNanoseconds() / 1e9,
            unstarted=t.unstarted,
            unstarted_wait=t.unstarted_wait_time.ToNanoseconds() / 1e9,
        )
        for t in reply.totals
    }


def assert_same(got: dict[str, Totals], want: dict[str, Totals]) -> None:
    """Equal counts, and times equal but for rounding each to nanoseconds on the wire."""
    assert sorted(got) == sorted(want)
    for key, w in want.items():
        g = got[key]
        assert (g.jobs, g.requests, g.unstarted) == (w.jobs, w.requests, w.unstarted), key
        for name in ("board", "wait", "max_wait", "unstarted_wait"):
            assert abs(getattr(g, name) - getattr(w, name)) < 1e-6, (key, name)


async def usage(
    client: Client, since: float, until: float | None = None, by: int = 0, owner: str = ""
) -> R.GetUsageResponse:
    message = R.GetUsageRequest(since=ts(since), by=by, owner=owner)  # type: ignore[arg-type]
    if until is not None:
        message.until.CopyFrom(ts(until))
    return await client.requests.GetUsage(message, metadata=client.metadata)


async def all_requests(admin: Client) -> list[S.RequestInfo]:
    reply = await admin.requests.ListRequests(
        R.ListRequestsRequest(page_size=1000), metadata=admin.metadata
    )
    return list(reply.requests)


@dataclass
class Workload:
    since: float
    until: float
    running: int


async def workload(farm: Farm) -> Workload:
    """Jobs across both edges of a period, a request of two boards, one that never starts
    and one still running at the end, on boards of no group, one and two groups."""
    await farm.add_dryad(
        [board("w1", board="x"), board("w2", board="y"), board("w3", board="z")], idle=False
    )
    admin = farm.admin
    for uuid, groups in BOARD_GROUPS.items():
        await admin.workers.SetGroups(
            workers_pb2.SetGroupsRequest(worker_uuid=uuid, groups=groups), metadata=admin.metadata
        )
        await admin.set_state(uuid, S.WORKER_STATE_IDLE)
    for uuid in BOARD_GROUPS:
        await admin.wait_worker(uuid, S.WORKER_STATE_IDLE)
    alice, bob = farm.client("alice", ALICE_GROUPS), farm.client("bob", BOB_GROUPS)
    r1 = await alice.new({"board": "x"})  # runs on w1 across the period's start
    await alice.wait_request(r1.id, S.REQUEST_STATE_IN_PROGRESS)
    since = time.time()
    r2 = await alice.new(
        profiles=[
            S.Profile(name="a", caps={"board": "y"}),
            S.Profile(name="b", caps={"board": "z"}),
        ]
    )
    await alice.wait_request(r2.id, S.REQUEST_STATE_IN_PROGRESS)
    r3 = await bob.new({"board": "z"})  # waits for w3, then is cancelled: never starts
    r4 = await bob.new({"board": "x"})  # waits for w1
    await bob.close(r3.id)
    await alice.close(r1.id)
    await bob.wait_request(r4.id, S.REQUEST_STATE_IN_PROGRESS)
    await alice.close(r2.id)
    until = time.time()  # r4 still runs: it spans the period's end
    return Workload(since, until, r4.id)


async def check_workload(farm: Farm, w: Workload) -> list[R.GetUsageResponse]:
    """The figures over the period by user and by group, checked against the requests."""
    admin = farm.admin
    requests = await all_requests(admin)
    replies = []
    for by, by_group in ((R.USAGE_GROUPING_USER, False), (R.USAGE_GROUPING_GROUP, True)):
        reply = await usage(admin, w.since, w.until, by)
        assert_same(shown(reply), expected(requests, w.since, w.until, w.until, by_group))
        replies.append(reply)
    by_user = shown(replies[0])
    assert (by_user["alice"].jobs, by_user["alice"].requests) == (2, 1)  # r2's two boards
    assert (by_user["bob"].jobs, by_user["bob"].unstarted) == (1, 1)
    assert sorted(shown(replies[1])) == ["(none)", "(open)", "lab"]
    # Without an end the period ends now, and the running job counts up to it.
    open_ended = await usage(admin, w.since)
    now = seconds(open_ended.until)
    assert now >= w.until
    assert_same(shown(open_ended), expected(requests, w.since, now, now, False))
    return replies


@pytest.fixture(params=["sqlite", "postgresql"])
async def process(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SchedulerProcess]:
    """A scheduler on a real SQLite file in its data directory, or on a fresh PostgreSQL
    database."""
    store = []
    if request.param == "postgresql":
        store = ["--store", request.getfixturevalue("postgres_url")]
    proc = SchedulerProcess(tmp_path / "state", *OPTIONS, *store)
    yield proc
    proc.stop()


async def test_usage_is_exact_and_the_same_after_kill_9(process: SchedulerProcess) -> None:
    address = process.start()
    farm = Farm(address)
    w = await workload(farm)
    before = await check_workload(farm, w)

    process.kill()
    await farm.channel.close()
    process.start(listen=address)
    farm.channel = grpc.aio.insecure_channel(address)
    after = [
        await usage(farm.admin, w.since, w.until, by)
        for by in (R.USAGE_GROUPING_USER, R.USAGE_GROUPING_GROUP)
    ]
    assert after == before
    # The job that ran through the restart ends now: its board time runs to its end.
    bob = farm.client("bob", BOB_GROUPS)
    ended = await bob.close(w.running)
    end = seconds(ended.updated_at)
    reply = await usage(bob, w.since, end + 1)
    r4_board = end - max(seconds(ended.job.started_at), w.since)
    assert abs(shown(reply)["bob"].board - r4_board) < 1e-6
    await farm.close()


@pytest.fixture
async def schedulers(
    tmp_path: Path, postgres_url: str
) -> AsyncIterator[Callable[[str], SchedulerProcess]]:
    made = Schedulers(tmp_path, *OPTIONS, "--store", postgres_url)
    yield made
    made.stop_all()


async def test_usage_is_the_same_after_a_takeover(
    schedulers: Callable[[str], SchedulerProcess],
) -> None:
    first, second = schedulers("first"), schedulers("second")
    leader = first.start()
    assert await asyncio.to_thread(first.wait_leading) == 1
    standby = second.start()
    farm = Farm(leader)
    w = await workload(farm)
    before = await check_workload(farm, w)
    first.kill()
    assert await asyncio.to_thread(second.wait_leading) == 2
    other = Farm(standby)
    after = [
        await usage(other.admin, w.since, w.until, by)
        for by in (R.USAGE_GROUPING_USER, R.USAGE_GROUPING_GROUP)
    ]
    assert after == before
    await farm.close()
    await other.close()


async def test_users_see_their_own_usage_only_and_bad_periods_say_what_to_fix(
    tmp_path: Path,
) -> None:
    proc = SchedulerProcess(tmp_path / "state", *OPTIONS)
    farm = Farm(proc.start())
    try:
        w = await workload(farm)
        bob = farm.client("bob", BOB_GROUPS)
        mine = await usage(bob, w.since, w.until)
        assert [t.key for t in mine.totals] == ["bob"]
        by_group = await usage(bob, w.since, w.until, R.USAGE_GROUPING_GROUP)
        assert [t.key for t in by_group.totals] == ["(none)", "(open)"]  # bob's jobs only
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await usage(bob, w.since, w.until, owner="alice")
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "only your own usage" in str(denied.value.details())
        admin = await usage(farm.admin, w.since, w.until, owner="alice")
        assert [t.key for t in admin.totals] == ["alice"]

        bad = [
            (R.GetUsageRequest(), "since is required"),
            (R.GetUsageRequest(since=ts(w.until), until=ts(w.since)), "until must be after since"),
            (R.GetUsageRequest(since=ts(time.time() + 3600)), "in the future"),
            (R.GetUsageRequest(since=ts(w.since), by=7), "USAGE_GROUPING_USER"),  # type: ignore[arg-type]
        ]
        for message, says in bad:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await bob.requests.GetUsage(message, metadata=bob.metadata)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert says in str(refused.value.details())
    finally:
        await farm.close()
        proc.stop()


def schedctl(env: dict[str, str], *args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "schedctl.main", *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == check, (done.returncode, done.stdout, done.stderr)
    return done


async def test_schedctl_usage_prints_a_table_and_json(tmp_path: Path) -> None:
    proc = SchedulerProcess(tmp_path / "state", *OPTIONS)
    address = proc.start()
    farm = Farm(address)
    try:
        w = await workload(farm)
        period = await usage(farm.admin, w.since, w.until)
        since = datetime.fromtimestamp(w.since, UTC).isoformat()
        until = datetime.fromtimestamp(w.until, UTC).isoformat()
        root = {**schedctl_env(address, tmp_path / "root", "root"), "BORUTA_ADMIN": "yes"}
        out = await asyncio.to_thread(
            schedctl, root, "usage", "--since", since, "--until", until, "-o", "json"
        )
        printed = json.loads(out.stdout)
        assert printed["by"] == "USER"
        assert [t["key"] for t in printed["totals"]] == ["alice", "bob"]
        # The same figures, to the microsecond: the times schedctl was given and the
        # timedelta it prints are microseconds.
        for got, want in zip(printed["totals"], period.totals, strict=True):
            board_time = want.board_time.ToNanoseconds() / 1e9
            assert got["board_time"] == pytest.approx(board_time, abs=5e-6)
            assert (got["jobs"], got["requests"], got["unstarted"]) == (
                want.jobs,
                want.requests,
                want.unstarted,
            )
        table = await asyncio.to_thread(schedctl, root, "usage", "--since", "1h", "--by", "group")
        lines = table.stdout.splitlines()
        assert lines[0].startswith("usage from ") and lines[0].endswith(" UTC, by group")
        assert lines[1].split()[:3] == ["GROUP", "BOARD", "HOURS"]
        assert [line.split()[0] for line in lines[2:]] == ["(none)", "(open)", "lab"]
        # A user sees their own; naming another is refused with schedctl's permission code.
        bob = schedctl_env(address, tmp_path / "bob", "bob")
        mine = await asyncio.to_thread(schedctl, bob, "usage", "--since", "1h", "-o", "json")
        assert [t["key"] for t in json.loads(mine.stdout)["totals"]] == ["bob"]
        refused = await asyncio.to_thread(
            schedctl, bob, "usage", "--since", "1h", "--owner", "alice", check=77
        )
        assert "only your own usage" in refused.stderr
        # A period that is none says which option to fix.
        backwards = await asyncio.to_thread(
            schedctl, bob, "usage", "--since", "1h", "--until", "2h", check=2
        )
        assert "Invalid value for --until: must be after --since" in backwards.stderr
        nonsense = await asyncio.to_thread(schedctl, bob, "usage", "--since", "lately", check=2)
        assert "neither N[s|m|h|d] ago" in nonsense.stderr
    finally:
        await farm.close()
        proc.stop()
