"""The Python client against a real farm: leases, SSH through the tunnel, auto-prolong."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from boruta_client import (
    AsyncClient,
    Busy,
    Client,
    Colocation,
    CommandTimeout,
    JobSpec,
    NoSuchWorker,
    PendingCode,
    PendingReason,
    Phase,
    Placement,
    RequestEnded,
    RequestState,
    ScheduleTimeout,
    Transfer,
    WorkerState,
    run_job,
)
from live_farm import LiveFarm, lease_holder, live_farm
from system_kit import INTERRUPTIBLE, unique_uuid

CAMERA_BOARD = unique_uuid("rpi-a")
BOARDS = {CAMERA_BOARD: {"board": "rpi4", "camera": "yes"}, unique_uuid("rpi-b"): {"board": "rpi4"}}
# Short jobs, asked for by the tests about prolonging, so that a lease prolongs several times
# within a test; the other tests get the lease's default, so a loaded machine cannot time
# their jobs out under them.
JOB_TIMEOUT = 1.5
SHORT_JOB = timedelta(seconds=JOB_TIMEOUT)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    with live_farm(
        tmp_path_factory.mktemp("farm"), BOARDS, "--min-job-timeout", f"{JOB_TIMEOUT}s"
    ) as running:
        yield running


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    give_up = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < give_up, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)


@pytest.fixture
def client(farm: LiveFarm) -> Iterator[Client]:
    farm.reset()
    with farm.client() as c:
        yield c


def test_lease_runs_commands_streams_output_and_copies_files(
    client: Client, tmp_path: Path
) -> None:
    chunks: list[bytes] = []
    with client.lease({"board": "rpi4", "camera": "yes"}) as board:
        assert board.worker_uuid == CAMERA_BOARD
        whoami = board.ssh.run("id -un")
        assert whoami.ok and whoami.output.strip() == board.access.username
        failing = board.ssh.run("echo out; echo err >&2; exit 3", stdout=chunks.append)
        assert (failing.exit_status, failing.stdout, failing.stderr) == (3, b"out\n", b"err\n")
        assert b"".join(chunks) == b"out\n"
        assert board.ssh.run(["printf", "%s", "a b"]).stdout == b"a b"
        assert board.ssh.run("cat", input=b"piped").stdout == b"piped"

        local = tmp_path / "up.txt"
        local.write_text("hello board\n")
        board.ssh.put(local, "up.txt")
        assert board.ssh.run("cat up.txt").output == "hello board\n"
        back = board.ssh.get("up.txt", tmp_path / "down" / "back.txt")
        assert back.read_text() == "hello board\n"
        request_id = board.request.id
    closed = client.get_request(request_id)
    assert closed.state is RequestState.DONE


def test_lease_boards_gives_a_real_shell_on_each_board_at_once(client: Client) -> None:
    profiles = {"cam": {"camera": "yes"}, "plain": {"board": "rpi4"}}
    with client.lease_boards(profiles) as boards:
        assert boards.names == ("cam", "plain") and len(boards) == 2
        assert boards["cam"].worker_uuid == CAMERA_BOARD
        assert boards["plain"].worker_uuid != CAMERA_BOARD
        assert [b.index for b in boards] == [0, 1] and boards[1].name == "plain"
        users = {b.name: b.ssh.run("id -un").output.strip() for b in boards}
        assert users == {b.name: b.access.username for b in boards}
        assert users["cam"] != users["plain"]
        request_id = boards["cam"].request.id
        info = client.get_request(request_id)
        assert [p.name for p in info.profiles] == ["cam", "plain"]
        assert [j.worker_uuid for j in info.jobs] == [b.worker_uuid for b in boards]
    assert client.get_request(request_id).state is RequestState.DONE


def test_async_lease_boards_and_an_impossible_set(farm: LiveFarm) -> None:
    farm.reset()

    async def scenario() -> None:
        async with AsyncClient(farm.address, user="bob") as client:
            with pytest.raises(NoSuchWorker, match="a different one for each of the 2"):
                await client.new_request(profiles=[{"camera": "yes"}, {"camera": "yes"}])
            async with client.lease_boards([{"board": "rpi4"}, {"board": "rpi4"}]) as boards:
                assert boards.names == ("", "")
                outputs = [(await b.ssh.run("id -un")).output.strip() for b in boards]
                assert outputs == [b.access.username for b in boards]
                request_id = boards[0].request.id
            assert (await client.get_request(request_id)).state is RequestState.DONE

    asyncio.run(scenario())


def test_boards_together_on_one_host_get_real_shells_and_a_stack_holds_its_rest(
    client: Client, farm: LiveFarm
) -> None:
    """Both boards are served by the farm's one dryad process: on one host. A stack
    group is impossible while there is no stack (refused at once); once the boards are a
    stack, the board a request leaves is its collateral, refused to another user."""
    with client.lease([{"board": "rpi4"}, {"board": "rpi4"}], together="host") as boards:
        assert {b.worker_uuid for b in boards} == set(farm.boards)
        users = [b.ssh.run("id -un").output.strip() for b in boards]
        assert users == [b.access.username for b in boards] and users[0] != users[1]
        request = client.get_request(boards[0].request.id)
        assert request.together == (Colocation((), Placement.HOST),)
    with pytest.raises(NoSuchWorker, match="on one stack"):
        client.new_request(profiles=[{"board": "rpi4"}, {"board": "rpi4"}], together="stack")
    with farm.admin() as admin:
        admin.create_stack(unique_uuid("bench"), farm.boards)
    with client.lease({"camera": "yes"}) as board, farm.client("bob") as bob:
        other = next(b for b in farm.boards if b != board.worker_uuid)
        assert bob.get_worker(other).collateral_of == board.request.id
        with pytest.raises(Busy):
            bob.new_request({"board": "rpi4"}, no_wait=True)
    farm.reset()


def test_large_output_arrives_whole_every_time(client: Client) -> None:
    expected = "".join(f"{i}\n" for i in range(1, 50001)).encode()
    with client.lease({"board": "rpi4"}) as board:
        for _ in range(10):
            result = board.ssh.run("seq 1 50000; echo done >&2")
            assert (result.stdout, result.stderr) == (expected, b"done\n")


def test_command_timeout_and_the_runner_carries_on(client: Client, tmp_path: Path) -> None:
    with client.lease({"board": "rpi4"}) as board:
        with pytest.raises(CommandTimeout, match=r"did not finish within 0\.5 s"):
            board.ssh.run("sleep 30", timeout=0.5)
        assert board.ssh.run("echo still here").output == "still here\n"
    spec = JobSpec(
        commands=("echo partial > log.txt; sleep 30", "echo never"),
        caps={"board": "rpi4"},
        command_timeout=1.0,
        fetch=(Transfer("log.txt", str(tmp_path / "log.txt")),),
    )
    statuses: list[Phase] = []
    result = run_job(client, spec, on_status=lambda s: statuses.append(s.phase))
    assert result.phase is Phase.FAILED and "did not finish" in result.error
    assert result.exit_status == 255 and result.commands == ()
    assert (tmp_path / "log.txt").read_text() == "partial\n"  # fetched after the timeout
    assert statuses == [Phase.RUNNING, Phase.FAILED]


def test_port_forward_reaches_a_port_on_the_board_side(client: Client, farm: LiveFarm) -> None:
    sshd_port = int(farm.sshd.address.rsplit(":", 1)[1])
    with (
        client.lease({"board": "rpi4"}) as board,
        board.ssh.forward(sshd_port) as forward,
        socket.create_connection(("127.0.0.1", forward.local_port), timeout=10) as conn,
    ):
        assert conn.recv(64).startswith(b"SSH-2.0-")


def test_lease_outlives_several_job_timeouts_by_prolonging(client: Client) -> None:
    with client.lease({"board": "rpi4"}, job_timeout=SHORT_JOB) as board:

        def prolonged_three_times() -> bool:
            job = client.get_request(board.request.id).job
            return job is not None and job.prolong_count >= 3

        wait_for("three prolongs", prolonged_three_times)
        info = client.get_request(board.request.id)
        assert info.state is RequestState.IN_PROGRESS
        assert info.job is not None and info.job.timeout_at > info.job.started_at + SHORT_JOB
        assert board.ssh.run("true").ok
        assert board.prolong_error is None


def test_a_draining_board_keeps_its_job_and_ssh_then_goes_into_maintenance(
    client: Client, farm: LiveFarm
) -> None:
    with farm.admin() as admin:
        try:
            with client.lease({"board": "rpi4", "camera": "yes"}) as board:
                draining = admin.set_worker_state(
                    CAMERA_BOARD, WorkerState.MAINTENANCE, "new camera", after_job=True
                )
                assert (draining.state, draining.drain_reason) == (
                    WorkerState.RUNNING,
                    "new camera",
                )
                # The job goes on: its board, its user and the SSH tunnel stay.
                whoami = board.ssh.run("id -un")
                assert whoami.ok and whoami.output.strip() == board.access.username
                shown = admin.get_worker(CAMERA_BOARD)
                assert (shown.state, shown.request_id) == (WorkerState.RUNNING, board.request.id)
                assert shown.drain_reason == "new camera"
                assert client.get_request(board.request.id).state is RequestState.IN_PROGRESS
                assert board.ssh.run("true").ok
                request_id = board.request.id
            assert client.get_request(request_id).state is RequestState.DONE
            wait_for(
                "maintenance after the job",
                lambda: admin.get_worker(CAMERA_BOARD).state is WorkerState.MAINTENANCE,
            )
            after = admin.get_worker(CAMERA_BOARD)
            assert (after.reason, after.drain_reason) == ("new camera", "")
        finally:
            admin.set_worker_state(CAMERA_BOARD, WorkerState.IDLE, "back from the test")
            farm.wait_idle()


def test_without_auto_prolong_the_job_times_out(client: Client) -> None:
    with client.lease({"board": "rpi4"}, auto_prolong=False, job_timeout=SHORT_JOB) as board:
        wait_for(
            "the job's timeout",
            lambda: client.get_request(board.request.id).state is not RequestState.IN_PROGRESS,
        )
        info = client.get_request(board.request.id)
    assert info.state is RequestState.DONE and info.reason == "job timed out"


def test_exception_in_the_block_closes_the_request(client: Client) -> None:
    with pytest.raises(RuntimeError, match="test failed"), client.lease() as board:
        request_id = board.request.id
        raise RuntimeError("test failed")
    assert client.get_request(request_id).state is RequestState.DONE


def test_sigint_in_the_block_closes_the_request(farm: LiveFarm, client: Client) -> None:
    child, request_id = lease_holder(farm.address)
    assert client.get_request(request_id).state is RequestState.IN_PROGRESS
    child.send_signal(signal.SIGINT)
    assert child.wait(30) != 0
    assert client.get_request(request_id).state is RequestState.DONE


def test_sigint_while_waiting_in_the_queue_cancels_the_request(
    farm: LiveFarm, client: Client
) -> None:
    script = textwrap.dedent(
        f"""
        from boruta_client import Client
        with Client({farm.address!r}, user="alice") as client:
            with client.lease({{"camera": "yes"}}, on_wait=lambda r: print(r.id, flush=True)):
                pass
        """
    )
    with client.lease({"camera": "yes"}):
        child = subprocess.Popen(
            [sys.executable, "-c", INTERRUPTIBLE + script], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        request_id = int(child.stdout.readline())
        assert client.get_request(request_id).state is RequestState.WAITING
        child.send_signal(signal.SIGINT)
        assert child.wait(30) != 0
        assert client.get_request(request_id).state is RequestState.CANCELLED


def test_busy_no_such_worker_and_schedule_timeout(client: Client) -> None:
    with pytest.raises(NoSuchWorker, match="board=rpi5"):
        client.lease({"board": "rpi5"}).__enter__()
    with client.lease({"camera": "yes"}):
        with pytest.raises(Busy, match="busy"):
            client.lease({"camera": "yes"}, no_wait=True).__enter__()
        seen = []
        with pytest.raises(ScheduleTimeout):
            client.lease({"camera": "yes"}, wait_timeout=1.0, on_wait=seen.append).__enter__()
        assert seen and seen[0].state is RequestState.WAITING
        assert seen[0].queue_position == 0
    timed_out = client.get_request(seen[0].id)
    assert timed_out.state is RequestState.CANCELLED


def test_both_clients_say_why_a_request_waits(client: Client, farm: LiveFarm) -> None:
    with client.lease({"camera": "yes"}):
        (running,) = client.list_requests(states=[RequestState.IN_PROGRESS])
        waiting = client.new_request({"camera": "yes"})
        why = client.get_request(waiting.id).pending_reason
        assert why is not None and why.code is PendingCode.BOARDS_BUSY
        assert why.requests_ahead == 0 and why.boards_total == 1
        (board,) = why.boards
        assert (board.uuid, board.state, board.held_by) == (
            CAMERA_BOARD,
            WorkerState.RUNNING,
            running.id,
        )
        assert why.expected_start is not None and why.expected_start == board.frees_at
        assert why.latest_start is not None and why.latest_start == board.frees_at_latest

        async def listed() -> dict[int, PendingReason | None]:
            async with AsyncClient(farm.address, user="alice") as aio:
                found = await aio.list_requests(states=[RequestState.WAITING])
                return {r.id: r.pending_reason for r in found}

        assert asyncio.run(listed()) == {waiting.id: why}
        client.close_request(waiting.id)


def test_request_that_ends_while_waiting_raises_request_ended(client: Client) -> None:
    from datetime import UTC, datetime, timedelta

    with client.lease({"camera": "yes"}):
        soon = datetime.now(UTC) + timedelta(seconds=1)
        with pytest.raises(RequestEnded) as info:
            client.lease({"camera": "yes"}, deadline=soon).__enter__()
    assert info.value.state == "TIMEOUT"


def test_async_client_lease_prolongs_and_closes_on_cancel(farm: LiveFarm, tmp_path: Path) -> None:
    farm.reset()

    async def scenario() -> None:
        async with AsyncClient(farm.address, user="bob") as client:
            async with client.lease({"board": "rpi4"}, job_timeout=SHORT_JOB) as board:
                ssh = await board.ssh()
                loop_thread = threading.get_ident()
                out, err, threads = bytearray(), bytearray(), set()

                def sink(into: bytearray) -> Callable[[bytes], None]:
                    return lambda data: (into.extend(data), threads.add(threading.get_ident()))

                result = await ssh.run("id -un; echo oops >&2", stdout=sink(out), stderr=sink(err))
                assert result.output.strip() == board.access.username
                # The sinks saw all of the output, and ran in the event loop.
                assert (bytes(out), bytes(err)) == (result.stdout, result.stderr)
                assert threads == {loop_thread}
                local = tmp_path / "sent.txt"
                local.write_text("sent and fetched\n")
                await ssh.put(local, "sent.txt")
                fetched = await ssh.get("sent.txt", tmp_path / "fetched.txt")
                assert fetched.read_text() == "sent and fetched\n"
                give_up = time.monotonic() + 60
                while True:
                    info = await client.get_request(board.request.id)
                    assert info.state is RequestState.IN_PROGRESS
                    assert info.job is not None
                    if info.job.prolong_count >= 2:
                        break
                    assert time.monotonic() < give_up, "the lease did not prolong twice"
                    await asyncio.sleep(0.05)
            assert (await client.get_request(board.request.id)).state is RequestState.DONE

            started = asyncio.Event()
            ids: list[int] = []

            async def hold() -> None:
                async with client.lease({"board": "rpi4"}) as held:
                    ids.append(held.request.id)
                    started.set()
                    await asyncio.sleep(60)

            task = asyncio.create_task(hold())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await client.get_request(ids[0])).state is RequestState.DONE

    asyncio.run(scenario())
