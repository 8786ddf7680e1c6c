"""A lease's job timeout: short, so that the board of a client that died (kill -9) comes free
within one prolong step, while the lease of a live client prolongs it for as long as it runs.
The scheduler keeps its default job timeout of an hour for everything else."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from uuid import uuid4

import pytest
from boruta_client import LEASE_JOB_TIMEOUT, Client, RequestState, WorkerState
from live_farm import LiveFarm, lease_holder, live_farm

# Unique: a dryad removes the job users of its boards' UUIDs, whichever run made them.
BOARD = f"lt-{uuid4().hex[:12]}"
BOARDS = {BOARD: {"board": "rpi4"}}
# What a test's lease asks for, so that a dead client is seen without waiting minutes. A
# lease prolongs when a third of the step is left: 2 s here, a margin a loaded machine
# should not eat (with 3 s, one CI run beside other work saw the lease holder end before
# it printed its request id; lease_holder now shows such a child's stderr).
STEP = timedelta(seconds=6)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    # The scheduler's own rules stay the defaults (job timeout and prolong step of an hour).
    with live_farm(tmp_path_factory.mktemp("farm"), BOARDS, "--min-job-timeout", "1s") as running:
        yield running


@pytest.fixture
def client(farm: LiveFarm) -> Iterator[Client]:
    farm.reset()
    with farm.client() as c:
        yield c


def test_a_lease_asks_for_minutes_not_the_schedulers_hour(client: Client) -> None:
    with client.lease({"board": "rpi4"}) as board:
        request = client.get_request(board.request.id)
        assert request.job_timeout == LEASE_JOB_TIMEOUT
        assert board.job.timeout_at - board.job.started_at == LEASE_JOB_TIMEOUT
    # Nobody would prolong a short timeout here, so the scheduler's applies.
    with client.lease({"board": "rpi4"}, auto_prolong=False) as board:
        assert client.get_request(board.request.id).job_timeout is None
        assert board.job.timeout_at - board.job.started_at == timedelta(hours=1)


def wait_until(what: str, check: Callable[[], bool]) -> None:
    """Poll a condition of the farm (no fixed sleep: it returns as soon as it holds)."""
    give_up = time.monotonic() + 120
    while not check():
        assert time.monotonic() < give_up, f"never happened: {what}"
        time.sleep(0.05)


def test_a_killed_client_frees_its_board_within_one_prolong_step(
    farm: LiveFarm, client: Client
) -> None:
    child, request_id = lease_holder(
        farm.address, f"job_timeout=timedelta(seconds={STEP.total_seconds()})"
    )
    try:

        def prolonged_twice() -> bool:
            job = client.get_request(request_id).job
            return job is not None and job.prolong_count >= 2

        # Alive, the client keeps its board past several of its job timeouts.
        wait_until("the live client prolonged its job", prolonged_twice)
        assert client.get_request(request_id).state is RequestState.IN_PROGRESS
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_at = time.time()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    job = client.get_request(request_id).job
    assert job is not None
    # Its last prolong came before the kill: the job ends within one step after it.
    assert job.timeout_at.timestamp() <= killed_at + STEP.total_seconds()

    def ended() -> bool:
        return client.get_request(request_id).state is not RequestState.IN_PROGRESS

    wait_until("the dead client's job ended", ended)
    done = client.get_request(request_id)
    assert (done.state, done.reason) == (RequestState.DONE, "job timed out")
    assert done.updated_at >= job.timeout_at
    # The board is prepared again and goes to the next user.
    farm.reset()
    with farm.client("bob") as bob, bob.lease({"board": "rpi4"}, no_wait=True) as board:
        assert board.worker_uuid == BOARD
        with farm.admin() as admin:
            assert admin.get_worker(BOARD).state is WorkerState.RUNNING
