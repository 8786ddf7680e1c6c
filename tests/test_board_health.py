"""Board health on live farms (a scheduler process, a real dryad process, OpenSSH sshd):
a board whose dryad was paused past its heartbeat timeout fails and comes back IDLE by
itself once the dryad resumes, also across a kill -9 of the scheduler and a PostgreSQL
takeover; the dryad reports its board failed when a local check fails; a board that fails
too often is quarantined until an admin puts it back; boards with long failure records
still list."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from access_kit import DryadProcess, dryad_toml
from boruta.v1 import types_pb2
from boruta_client import AsyncClient, FailureKind, Worker, WorkerState
from boruta_dryad.devsshd import DevSshd
from boruta_scheduler.core import Changes, Policy
from boruta_scheduler.core.health import KEPT
from boruta_scheduler.store import SQLiteStore
from boruta_scheduler.types import WorkerState as ServerWorkerState
from conftest import start_scheduler
from core_kit import CoreKit
from farm_kit import Farm, SchedulerProcess, schedctl_env
from test_access_e2e import FAST_HEARTBEATS, farm_processes, one_board_dryad, prefix, sshd

__all__ = ["prefix", "sshd"]  # fixtures: a private sshd, a unique job user prefix

# How long a state may take to come on a loaded machine; not a measure of anything.
PATIENCE = 120.0


@asynccontextmanager
async def admin_of(*addresses: str) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(list(addresses), user="root", admin=True, failover_timeout=PATIENCE)
    try:
        yield client
    finally:
        await client.close()


async def until_state(admin: AsyncClient, uuid: str, state: WorkerState) -> Worker:
    """Watch the worker until it is in state (the watch starts with its current state)."""
    watch = await admin.watch_workers(uuids=[uuid], include_current=True, timeout=PATIENCE)
    async with watch:
        async for change in watch:
            if change.worker.state is state:
                return change.worker
    raise AssertionError(f"worker {uuid} did not become {state.name} within {PATIENCE} s")


@contextmanager
def paused(dryad: DryadProcess) -> Iterator[None]:
    """The dryad stopped (SIGSTOP) while the block runs, as a network partition or a hung
    host would leave it; continued (SIGCONT) afterwards, whatever happened."""
    assert dryad.proc is not None
    dryad.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        dryad.proc.send_signal(signal.SIGCONT)


async def expect_recovered(admin: AsyncClient, uuid: str, failed_at_least: int = 1) -> Worker:
    """The board is IDLE again, by way of a healthcheck and a Prepare after its failure."""
    back = await until_state(admin, uuid, WorkerState.IDLE)
    assert not back.quarantined
    assert len(back.recent_failures) >= failed_at_least
    lost = back.recent_failures[0]
    assert lost.kind is FailureKind.HEARTBEAT and lost.reason.startswith("heartbeat lost")
    history = await admin.worker_history(uuid, limit=10)
    changes = [(h.from_state, h.to_state, h.reason) for h in history]
    recovering = (
        WorkerState.FAILED,
        WorkerState.PREPARE,
        "dryad heard again after a heartbeat loss",
    )
    assert recovering in changes, changes
    assert changes.index(recovering) > 0  # IDLE came after it
    return back


async def test_a_paused_dryad_s_board_fails_and_comes_back_idle(
    sshd: DevSshd, prefix: str, tmp_path: Path
) -> None:
    async with (
        farm_processes(tmp_path, sshd, prefix, *FAST_HEARTBEATS) as (_, dryad, farm, uuid),
        admin_of(farm.address) as admin,
    ):
        alice = AsyncClient(farm.address, user="alice")
        try:
            request = await alice.new_request({"board": "rpi4"})
            await alice.acquire_worker(request.id)
            with paused(dryad):
                failed = await until_state(admin, uuid, WorkerState.FAILED)
                assert failed.reason.startswith("heartbeat lost")
            back = await expect_recovered(admin, uuid)
            assert back.failures == 1 and back.failures_per_day > 0
            # The job that ran on it failed; the board serves the next one.
            assert (await alice.get_request(request.id)).state.name == "FAILED"
            again = await alice.new_request({"board": "rpi4"})
            acquired = await alice.acquire_worker(again.id)
            assert acquired.access.username
            await alice.close_request(again.id)
        finally:
            await alice.close()
        # schedctl shows the failure and the rate.
        shown = subprocess.run(
            [sys.executable, "-m", "schedctl.main", "workers", "show", uuid],
            env=schedctl_env(farm.address, tmp_path / "home"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "per day over the last week" in shown, shown
        assert "(heartbeat) heartbeat lost" in shown, shown


async def test_recovery_survives_a_kill_9_of_the_scheduler(
    sshd: DevSshd, prefix: str, tmp_path: Path
) -> None:
    async with farm_processes(tmp_path, sshd, prefix, *FAST_HEARTBEATS) as parts:
        scheduler, dryad, farm, uuid = parts
        with paused(dryad):
            async with admin_of(farm.address) as admin:
                await until_state(admin, uuid, WorkerState.FAILED)
            scheduler.kill()
            scheduler.start(listen=farm.address)
            async with admin_of(farm.address) as admin:
                # Restored from the store: still FAILED, and still to be recovered.
                assert (await admin.get_worker(uuid)).state is WorkerState.FAILED
        async with admin_of(farm.address) as admin:
            await expect_recovered(admin, uuid)


async def test_recovery_survives_a_postgresql_takeover(
    sshd: DevSshd, prefix: str, tmp_path: Path, postgres_url: str
) -> None:
    schedulers = [
        SchedulerProcess(tmp_path / name, *FAST_HEARTBEATS, "--store", postgres_url)
        for name in ("a", "b")
    ]
    uuid = f"board-{prefix.strip('-')}"
    dryad: DryadProcess | None = None
    try:
        schedulers[0].start()
        await asyncio.to_thread(schedulers[0].wait_leading)
        schedulers[1].start()
        addresses = [s.address for s in schedulers]
        config = tmp_path / "dryad.toml"
        config.write_text(
            dryad_toml(
                ",".join(addresses),
                sshd.address,
                tmp_path / "dryad",
                prefix,
                uuid=uuid,
                host_keys=sshd.host_key_public,
            )
        )
        dryad = DryadProcess(config)
        dryad.start()
        async with admin_of(*addresses) as admin:
            await until_state(admin, uuid, WorkerState.MAINTENANCE)
            await admin.set_worker_state(uuid, WorkerState.IDLE, "health test")
            await until_state(admin, uuid, WorkerState.IDLE)
            with paused(dryad):
                await until_state(admin, uuid, WorkerState.FAILED)
                schedulers[0].kill()
                await asyncio.to_thread(schedulers[1].wait_leading)
                # The new leader read the board's record from the database.
                assert (await admin.get_worker(uuid)).state is WorkerState.FAILED
            await expect_recovered(admin, uuid)
    finally:
        if dryad is not None:
            dryad.stop()
        for scheduler in schedulers:
            if scheduler.proc is not None:
                scheduler.stop()


def failing_check(marker: Path) -> str:
    """Checks every 0.2 s, reported after two failing rounds; the command fails while the
    marker exists."""
    command = f'["/bin/sh", "-c", "test ! -e {marker}"]'
    return f"interval = 0.2\nfail_after = 2\ntimeout = 10\ncommands = [{command}]\n"


async def test_the_dryad_reports_its_board_failed_when_a_local_check_fails(
    sshd: DevSshd, prefix: str, tmp_path: Path
) -> None:
    marker = tmp_path / "broken"
    async with (
        farm_processes(tmp_path, sshd, prefix, *FAST_HEARTBEATS, checks=failing_check(marker)) as (
            _,
            _,
            farm,
            uuid,
        ),
        admin_of(farm.address) as admin,
    ):
        marker.touch()
        failed = await until_state(admin, uuid, WorkerState.FAILED)
        assert failed.reason.startswith("local checks failed 2 times in a row: sh: exit status 1")
        (report,) = failed.recent_failures
        assert report.kind is FailureKind.REPORTED and report.reason == failed.reason
        # Not a heartbeat loss: it stays FAILED while its dryad heartbeats, until an admin
        # acts; fixed, it goes back into service.
        os.unlink(marker)
        await admin.set_worker_state(uuid, WorkerState.IDLE, "fixed")
        await until_state(admin, uuid, WorkerState.IDLE)


async def test_a_board_that_fails_too_often_is_quarantined(
    sshd: DevSshd, prefix: str, tmp_path: Path
) -> None:
    marker = tmp_path / "broken"
    quarantine = ("--quarantine-failures", "2", "--quarantine-window", "1h")
    async with (
        farm_processes(
            tmp_path, sshd, prefix, *FAST_HEARTBEATS, *quarantine, checks=failing_check(marker)
        ) as (_, _, farm, uuid),
        admin_of(farm.address) as admin,
    ):
        marker.touch()
        await until_state(admin, uuid, WorkerState.FAILED)  # 1: the dryad's report
        # An admin puts it back too soon: its healthcheck fails (2), and out it goes.
        await admin.set_worker_state(uuid, WorkerState.IDLE, "try again")
        quarantined = await until_state(admin, uuid, WorkerState.MAINTENANCE)
        assert quarantined.quarantined
        assert quarantined.reason.startswith("quarantined: Healthcheck failed: ")
        assert "sh: exit status 1" in quarantined.reason
        kinds = [f.kind for f in quarantined.recent_failures]
        assert kinds == [FailureKind.DRYAD_CALL, FailureKind.REPORTED]
        # Only an admin brings it back.
        os.unlink(marker)
        await admin.set_worker_state(uuid, WorkerState.IDLE, "fixed for real")
        back = await until_state(admin, uuid, WorkerState.IDLE)
        assert not back.quarantined


def slow_failing_check(marker: Path, seconds: float) -> str:
    """Checks every 0.2 s, reported after one failing round; the command tests the marker
    first and answers only after the given seconds, as a slow check on a busy host would."""
    script = f"test ! -e {marker}; failed=$?; sleep {seconds}; exit $failed"
    command = f'["/bin/sh", "-c", "{script}"]'
    return f"interval = 0.2\nfail_after = 1\ntimeout = 30\ncommands = [{command}]\n"


async def test_a_check_begun_before_the_board_was_fixed_does_not_fail_it_again(
    sshd: DevSshd, prefix: str, tmp_path: Path
) -> None:
    """A round of the dryad's own checks that began while the board was broken answers
    after the admin fixed it and put it back: the Prepare's fresher checks decide, so the
    board comes back IDLE, not quarantined again by the stale report."""
    marker = tmp_path / "broken"
    quarantine = ("--quarantine-failures", "2", "--quarantine-window", "1h")
    async with (
        farm_processes(
            tmp_path,
            sshd,
            prefix,
            *FAST_HEARTBEATS,
            *quarantine,
            checks=slow_failing_check(marker, 1.0),
        ) as (_, _, farm, uuid),
        admin_of(farm.address) as admin,
    ):
        marker.touch()
        await until_state(admin, uuid, WorkerState.FAILED)  # 1: the dryad's report
        # Put back too soon: while its Prepare's checks run (a second), the heartbeats say
        # PREPARE and the dryad's own rounds begin, each testing the marker at once.
        await admin.set_worker_state(uuid, WorkerState.IDLE, "try again")
        quarantined = await until_state(admin, uuid, WorkerState.MAINTENANCE)  # 2
        assert quarantined.quarantined
        os.unlink(marker)
        watch = await admin.watch_workers(uuids=[uuid], include_current=False, timeout=PATIENCE)
        async with watch:
            await admin.set_worker_state(uuid, WorkerState.IDLE, "fixed for real")
            async for change in watch:
                if change.worker.state in (WorkerState.IDLE, WorkerState.FAILED):
                    break
        assert change.worker.state is WorkerState.IDLE, change.worker.reason
        assert not change.worker.quarantined


async def test_a_board_taken_out_of_service_is_not_reported_by_its_dryad(
    sshd: DevSshd, prefix: str, tmp_path: Path
) -> None:
    """PutInMaintenance tells the dryad's own checks at once that the board is out, before
    any heartbeat reply could (here none comes: the interval is an hour)."""
    scheduler = await start_scheduler(tmp_path, heartbeat_interval=3600.0)
    farm = Farm(f"127.0.0.1:{scheduler.port}")
    dryad = one_board_dryad(farm, sshd, prefix, tmp_path / "dryad", sshd.host_key_public)
    try:
        await dryad.start()
        assert dryad.link is not None
        await dryad.link.wait_registered()
        uuid = dryad.config.boards[0].uuid
        await farm.admin.set_state(uuid, types_pb2.WORKER_STATE_IDLE)
        await farm.admin.wait_worker(uuid, types_pb2.WORKER_STATE_IDLE)
        # As the next heartbeat's reply would say.
        dryad.link.states[uuid] = types_pb2.WORKER_STATE_IDLE
        assert dryad.link.in_service(uuid)
        await farm.admin.set_state(uuid, types_pb2.WORKER_STATE_MAINTENANCE)
        await farm.admin.wait_worker(uuid, types_pb2.WORKER_STATE_MAINTENANCE)
        assert not dryad.link.in_service(uuid)
    finally:
        await dryad.stop()
        await farm.close()
        await scheduler.stop(grace=0)


async def test_boards_with_long_failure_records_are_listed(tmp_path: Path) -> None:
    """Every WorkerInfo carries its board's kept failures: a farm that ran long enough to
    fill them with long reasons must still list in pages a client can receive (gRPC's
    default limit is 4 MiB a message), all boards, every failure kept."""
    kit = CoreKit(Policy(quarantine_failures=0))
    boards = [f"long-{n:03}" for n in range(100)]
    for uuid in boards:
        kit.add_worker(uuid, idle=False)
        for n in range(KEPT):
            kit.core.set_fail(kit.now, uuid, f"local checks failed {n}: " + "x" * 1000)
            kit.core.set_state(kit.now, uuid, ServerWorkerState.MAINTENANCE)
            kit.answer_calls()
    store = SQLiteStore(tmp_path / "state" / "boruta.db")
    store.commit(Changes(workers=kit.core.workers()))  # the rows as they end up
    store.close()
    scheduler = await start_scheduler(tmp_path)
    try:
        async with admin_of(f"127.0.0.1:{scheduler.port}") as admin:
            listed = await admin.list_workers()
            assert [w.uuid for w in listed] == boards
            assert all(len(w.recent_failures) == KEPT for w in listed)
    finally:
        await scheduler.stop(grace=0)
