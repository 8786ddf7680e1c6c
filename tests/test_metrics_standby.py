"""Metrics of several schedulers on one PostgreSQL store (issue 13): a standby serves its
metrics port and says it is one (boruta_leader 0, no farm figures); after a kill -9 of the
leader, it leads and its figures are the restored farm's."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from boruta.v1 import types_pb2
from farm_kit import Farm, SchedulerProcess, Schedulers, board
from metrics_kit import poll, samples, scrape, total

S = types_pb2
# Dryads heartbeat to the scheduler they were started with: the new leader must not fail
# their boards for the silence while the test looks at it.
OPTIONS = (
    *("--heartbeat-interval", "0.2s", "--heartbeat-timeout", "120s"),
    *("--metrics-listen", "127.0.0.1:0", "--metrics-anonymous", "yes"),
)


@pytest.fixture
async def schedulers(
    tmp_path: Path, postgres_url: str
) -> AsyncIterator[Callable[[str], SchedulerProcess]]:
    made = Schedulers(tmp_path, *OPTIONS, "--store", postgres_url)
    yield made
    made.stop_all()


async def test_a_standby_says_so_and_leads_with_the_restored_figures(
    schedulers: Callable[[str], SchedulerProcess],
) -> None:
    first, second = schedulers("first"), schedulers("second")
    leader = first.start()
    assert await asyncio.to_thread(first.wait_leading) == 1
    second.start()
    farm = Farm(leader)
    await farm.add_dryad([board("m1", board="x"), board("m2", board="x")])
    alice = farm.client("alice")
    running = await alice.new({"board": "x"}, priority=3)
    await alice.new({"board": "x"}, priority=3)
    await alice.new({"board": "x", "missing": "cap"}, priority=7, accept_unsatisfiable=True)
    await alice.wait_request(running.id, S.REQUEST_STATE_IN_PROGRESS)

    standby = samples(await asyncio.to_thread(scrape, second.metrics_address))
    assert total(standby, "boruta_leader") == 0
    # A standby's dashboard has nothing to show: it sends people to the leader's.
    status, text = await asyncio.to_thread(page, second.metrics_address, "/boards")
    assert status == 503 and "standby" in text
    assert not any(name == "boruta_requests" for name, _ in standby)
    led = await asyncio.to_thread(
        poll,
        first.metrics_address,
        lambda s: total(s, "boruta_boards", state="RUNNING") == 2,
        "both boards RUNNING",
    )
    assert total(led, "boruta_leader") == 1
    assert total(led, "boruta_requests", state="WAITING", priority="7") == 1

    first.kill()
    assert await asyncio.to_thread(second.wait_leading) == 2
    took_over = await asyncio.to_thread(
        poll, second.metrics_address, lambda s: total(s, "boruta_leader") == 1, "the lead"
    )
    # The live requests and boards as the store holds them: two jobs, one waiting request.
    assert total(took_over, "boruta_requests", state="IN_PROGRESS", priority="3") == 2
    assert total(took_over, "boruta_requests", state="WAITING", priority="7") == 1
    assert total(took_over, "boruta_queue_depth") == 1
    assert total(took_over, "boruta_boards", state="RUNNING") == 2
    status, text = await asyncio.to_thread(page, second.metrics_address, "/boards")
    assert status == 200 and "m1" in text and "m2" in text
    await farm.close()


def page(address: str, path: str) -> tuple[int, str]:
    """A dashboard page over plain HTTP (loopback, anonymous): status and text."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=60) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
