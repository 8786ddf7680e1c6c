"""A scheduler whose disk fills up, or whose data directory is read-only, on a real file
system of the test's own (tmpfs): it refuses instead of crashing, says why, and loses
nothing it acknowledged."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest
from boruta.v1 import requests_pb2, types_pb2, workers_pb2
from boruta_scheduler.core import Core
from boruta_scheduler.errors import StoreUnavailable
from boruta_scheduler.store import Purged, SQLiteStore
from farm_kit import READY, SCHEDULER, Client, Farm, SchedulerProcess, board
from system_kit import fill, remount_read_only, tmpfs

S = types_pb2
OPTIONS = (
    "--heartbeat-interval",
    "0.2s",
    "--heartbeat-timeout",
    "2s",
    "--healthcheck-interval",
    "0",
)


async def stored_requests(client: Client) -> dict[int, int]:
    reply = await client.requests.ListRequests(
        requests_pb2.ListRequestsRequest(page_size=1000), metadata=client.metadata
    )
    return {r.id: r.state for r in reply.requests}


async def refused_for_disk_full(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    details = info.value.details() or ""
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE, details
    assert "disk full" in details, details
    return details


async def test_a_full_disk_refuses_writes_serves_reads_and_loses_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "16m") as disk:
        process = SchedulerProcess(disk / "state", *OPTIONS)
        process.log_path = tmp_path / "scheduler.log"  # not on the disk we fill
        farm: Farm | None = None
        try:
            address = process.start()
            farm = Farm(address)
            worker = f"w-{uuid.uuid4()}"
            dryad = await farm.add_dryad([board(worker, board="x")])
            alice, admin = farm.client("alice"), farm.admin
            running = await alice.new({"board": "x"})
            await alice.wait_request(running.id, S.REQUEST_STATE_IN_PROGRESS)
            waiting = [await alice.new({"board": "x"}) for _ in range(3)]
            acknowledged = {running.id, *(r.id for r in waiting)}

            filler = fill(disk)
            # The first write that needs space fails (one may still fit in SQLite's log).
            for _ in range(100):
                try:
                    acknowledged.add((await alice.new({"board": "x"})).id)
                except grpc.aio.AioRpcError as error:
                    assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
                    assert "disk full" in (error.details() or ""), error.details()
                    break
            else:
                pytest.fail("a full disk took 100 new requests")
            await refused_for_disk_full(alice.close(waiting[0].id))
            assert process.proc is not None and process.proc.poll() is None

            # Reads go on, and show exactly what was acknowledged.
            assert (await alice.info(running.id)).state == S.REQUEST_STATE_IN_PROGRESS
            assert set(await stored_requests(admin)) == acknowledged
            listed = await admin.workers.ListWorkers(
                workers_pb2.ListWorkersRequest(), metadata=admin.metadata
            )
            assert [w.state for w in listed.workers if w.uuid == worker] == [S.WORKER_STATE_RUNNING]
            # The dryad is heard all along an outage longer than the heartbeat timeout.
            heard = dryad.heartbeats(worker)
            await dryad.wait_heartbeats(worker, heard + 15)
            assert worker in dryad.registered

            filler.unlink()
            # The scheduler retries by itself; writes are accepted again once it has.
            while True:
                try:
                    later = await alice.new({"board": "x"})
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
                    await asyncio.sleep(0.05)
            acknowledged.add(later.id)
            await dryad.wait_heartbeats(worker, dryad.heartbeats(worker) + 15)
            assert (await admin.worker(worker)).state == S.WORKER_STATE_RUNNING
            history = await admin.workers.ListWorkerHistory(
                workers_pb2.ListWorkerHistoryRequest(worker_uuid=worker),
                metadata=admin.metadata,
            )
            assert S.WORKER_STATE_FAILED not in [e.to_state for e in history.entries]
            log = process.log_path.read_text()
            assert "the store refuses writes" in log and "disk full" in log
            assert "the store accepts writes again" in log
            assert "Traceback" not in log

            # After a restart, every acknowledged change is there and no refused one.
            await farm.close()
            farm = None
            assert process.stop() == 0
            process.start(listen=address)
            farm = Farm(address)
            stored = await stored_requests(farm.admin)
            assert set(stored) == acknowledged
            assert stored[waiting[0].id] == S.REQUEST_STATE_WAITING  # its close was refused
        finally:
            if farm is not None:
                await farm.close()
            if process.proc is not None:
                process.stop()


@pytest.mark.parametrize("state", ["missing", "empty", "existing"])
def test_a_read_only_data_dir_is_one_line_and_exit_73(tmp_path: Path, state: str) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        data_dir = disk if state == "empty" else disk / "state"
        if state == "existing":
            process = SchedulerProcess(data_dir)
            process.log_path = tmp_path / "first.log"
            process.start()
            assert process.stop() == 0
        remount_read_only(disk)
        options = ["--plaintext", "yes", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
        proc = subprocess.Popen(
            [*SCHEDULER, *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        if proc.stdout.readline().startswith(READY):
            proc.kill()
            proc.wait()
            pytest.fail("the scheduler served from a read-only data directory")
        errors = proc.stderr.read()
        assert proc.wait() == 73, errors
        ours = [line for line in errors.splitlines() if line.startswith("boruta-scheduler:")]
        assert ours == [
            f"boruta-scheduler: cannot write the store's directory {data_dir}: "
            "Read-only file system"
        ], errors
        assert "Traceback" not in errors


def test_a_purge_on_a_full_disk_names_the_cause(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        store = SQLiteStore(disk / "boruta.db")
        try:
            core = Core()
            for _ in range(200):
                view = core.new_request(1000.0, "u", frozenset(), {}, accept_unsatisfiable=True)
                core.close_request(1000.0, view.id)
            store.commit(core.drain())
            assert store.scrub()  # an empty log: the purge needs new space for its pages
            filler = fill(disk)
            with pytest.raises(StoreUnavailable, match="disk full") as info:
                store.purge(2000.0, 500)
            assert info.value.cause == "disk full"
            filler.unlink()
            assert store.purge(2000.0, 500) == Purged(requests=200)
        finally:
            store.close()


def start_on(url: str, tmp_path: Path) -> tuple[int, list[str], str]:
    """Start the scheduler on a store URL that will not open: exit code, its own lines on
    stderr, all of stderr."""
    options = ["--plaintext", "yes", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path)]
    proc = subprocess.run(
        [*SCHEDULER, *options, "--store", url], capture_output=True, text=True, check=False
    )
    assert not proc.stdout.startswith(READY), "the scheduler served from a store it cannot use"
    ours = [line for line in proc.stderr.splitlines() if line.startswith("boruta-scheduler:")]
    return proc.returncode, ours, proc.stderr


def test_a_postgresql_server_not_up_yet_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Exit 1: the unit starts it again until the server is up. The password is not shown."""
    url = f"postgresql://boruta:s3cret@/boruta?host={tmp_path}&port=1"
    code, ours, errors = start_on(url, tmp_path)
    assert code == 1, errors
    assert len(ours) == 1 and ours[0].startswith("boruta-scheduler: database unreachable: ")
    assert "s3cret" not in errors and "Traceback" not in errors


def test_a_postgresql_database_the_scheduler_may_not_write_is_one_line_and_exit_73(
    postgres_url: str, tmp_path: Path
) -> None:
    """Connected, but refused (here: no right to create the tables): only an admin can fix
    that, so the unit does not restart it."""
    role = f"boruta_guest_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")  # type: ignore[arg-type]
    try:
        code, ours, errors = start_on(postgres_url.replace("postgres@", f"{role}@"), tmp_path)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")  # type: ignore[arg-type]
    assert code == 73, errors
    assert len(ours) == 1 and ours[0].startswith("boruta-scheduler: cannot open the store ")
    assert "permission denied" in ours[0] and "Traceback" not in errors
