"""Hostile workloads for the core's indexes: does one event's cost grow with the queue or
the farm?

Each workload builds a core with N waiting requests (or N workers) shaped to defeat an
index, then times one event and counts what the indexes looked at for it
(`Core.index_visits`: buckets of waiting requests and workers). It runs at N and 10 N:
if the event only touches its few candidates, both stay flat.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from boruta_scheduler.core import Core, Policy
from boruta_scheduler.types import WorkerState

from bench.core_bench import answer_prepares
from bench.machine import measured

T0 = 1_800_000_000.0
POLICY = Policy(
    default_deadline=1e9,
    heartbeat_timeout=1e9,
    job_timeout=1e8,
    max_job_duration=1e8,
    max_waiting_per_user=10**9,
    max_waiting_cap_sets_per_user=10**9,
)
Event = Callable[[], object]
Workload = tuple[Core, Event]


def _farm(workers: int, caps: dict[str, str], groups: frozenset[str] = frozenset()) -> Core:
    core = Core(POLICY)
    for i in range(workers):
        uuid = f"w{i}"
        core.register(T0, {**caps, "UUID": uuid}, "d:1", "s:22", instance_id="i")
        if groups:
            core.set_groups(T0, uuid, groups)
        core.set_state(T0, uuid, WorkerState.IDLE)
    answer_prepares(core, T0)
    return core


def _busy(core: Core) -> list[int]:
    """Give every idle worker a job of its own; the ids of those requests."""
    return [
        core.new_request(T0, "owner", view.groups, {"UUID": view.uuid}, priority=1).id
        for view in core.workers()
    ]


def _freeing(core: Core, running: list[int]) -> Event:
    """An event that ends one running job: its board comes free and looks for a request."""

    def free() -> None:
        request_id = running.pop()
        view = core.close_request(T0, request_id)
        answer_prepares(core, T0)
        assert view.job is not None
        worker = core.worker(view.job.worker_uuid)
        if worker.state is WorkerState.IDLE:
            # Nothing took it: keep it busy, so the next event frees a board again.
            again = core.new_request(T0, "owner", worker.groups, {"UUID": worker.uuid})
            running.insert(0, again.id)
        elif worker.request_id:
            running.insert(0, worker.request_id)

    return free


def _queue(
    core: Core,
    count: int,
    caps: Callable[[int], dict[str, str]],
    *,
    own_team: bool = True,
    valid_after: float | None = None,
) -> None:
    """Queue requests of these caps, each of a team of its own (a bucket each) or all of no
    team."""
    for i in range(count):
        core.new_request(
            T0,
            f"user{i}",
            frozenset({f"team{i}"}) if own_team else frozenset(),
            caps(i),
            valid_after=valid_after,
            accept_unsatisfiable=True,
        )
    core.drain()


def not_valid_yet(n: int) -> Workload:
    """N requests (of N teams) for any arm board that may only start tomorrow; a board frees."""
    core = _farm(10, {"arch": "arm"})
    running = _busy(core)
    _queue(core, n, lambda i: {"arch": "arm"}, valid_after=T0 + 86400)
    return core, _freeing(core, running)


def common_plus_rare(n: int) -> Workload:
    """N requests (of N teams) for a cap every board has plus one no board has; a board frees."""
    core = _farm(10, {"arch": "arm"})
    running = _busy(core)
    _queue(core, n, lambda i: {"arch": "arm", "gpu": "yes"})
    return core, _freeing(core, running)


def common_plus_alternatives(n: int) -> Workload:
    """N requests for a cap every board has plus a choice of two serials no board has."""
    core = _farm(10, {"arch": "arm"})
    running = _busy(core)
    _queue(core, n, lambda i: {"arch": "arm", "serial": f"s{i}|t{i}"}, own_team=False)
    return core, _freeing(core, running)


def other_groups(n: int) -> Workload:
    """N requests of N teams for arm boards, none of which may use the lab's; a lab board
    frees."""
    core = _farm(10, {"arch": "arm"}, frozenset({"lab"}))
    running = _busy(core)
    _queue(core, n, lambda i: {"arch": "arm"})
    return core, _freeing(core, running)


def empty_caps_other_groups(n: int) -> Workload:
    """N any-board requests of N teams, none of which may use the lab's boards; a lab board
    frees."""
    core = _farm(10, {"arch": "arm"}, frozenset({"lab"}))
    running = _busy(core)
    _queue(core, n, lambda i: {})
    return core, _freeing(core, running)


def empty_caps_not_valid_yet(n: int) -> Workload:
    """N any-board requests of N teams that may only start tomorrow; a board frees."""
    core = _farm(10, {"arch": "arm"})
    running = _busy(core)
    _queue(core, n, lambda i: {}, valid_after=T0 + 86400)
    return core, _freeing(core, running)


def identical_sets(n: int) -> Workload:
    """N identical requests for two arm boards; a board frees (half a set)."""
    core = _farm(10, {"arch": "arm"})
    running = _busy(core)
    for i in range(n):
        core.new_request(
            T0,
            f"user{i}",
            frozenset(),
            {},
            profiles=[("a", {"arch": "arm"}), ("b", {"arch": "arm"})],
        )
    core.drain()
    return core, _freeing(core, running)


def identical_sets_arrive(n: int) -> Workload:
    """N idle arm boards and a busy x86 one; requests for an arm and an x86 board keep
    arriving (each but the first could only reserve an arm board)."""
    core = _farm(n, {"arch": "arm"})
    core.register(T0, {"arch": "x86", "UUID": "x86"}, "d:1", "s:22", instance_id="i")
    core.set_state(T0, "x86", WorkerState.IDLE)
    answer_prepares(core, T0)
    core.new_request(T0, "owner", frozenset(), {"UUID": "x86"})
    ids = iter(range(10**9))

    def arrive() -> None:
        profiles = [("a", {"arch": "arm"}), ("b", {"arch": "x86"})]
        core.new_request(T0, f"user{next(ids)}", frozenset(), {}, profiles=profiles)
        core.drain()

    for _ in range(n // 2):
        arrive()
    return core, arrive


def beside_reserved(n: int) -> Workload:
    """N idle arm boards, each reserved for the set (an arm and the x86 board, busy) of
    another team; one-board requests arrive that could backfill none of them."""
    core = _farm(n, {"arch": "arm"})
    core.register(T0, {"arch": "x86", "UUID": "x86"}, "d:1", "s:22", instance_id="i")
    core.set_state(T0, "x86", WorkerState.IDLE)
    answer_prepares(core, T0)
    core.new_request(T0, "owner", frozenset(), {"UUID": "x86"}, job_timeout=10)
    profiles = [("a", {"arch": "arm"}), ("b", {"arch": "x86"})]
    for i in range(n):
        core.new_request(T0, f"user{i}", frozenset({f"team{i}"}), {}, profiles=profiles)
    ids = iter(range(10**9))

    def arrive() -> None:
        # A team of its own each: no request asks what one before it asked.
        late = next(ids)
        core.new_request(T0, f"late{late}", frozenset({f"late{late}"}), {"arch": "arm"})
        core.drain()

    return core, arrive


def other_groups_farm(n: int) -> Workload:
    """N idle lab boards; a request of another team for an arm board arrives."""
    core = _farm(n, {"arch": "arm"}, frozenset({"lab"}))
    ids = iter(range(10**9))

    def arrive() -> None:
        core.new_request(
            T0,
            f"user{next(ids)}",
            frozenset({"outsiders"}),
            {"arch": "arm"},
            accept_unsatisfiable=True,
        )
        core.drain()

    return core, arrive


WORKLOADS: dict[str, Callable[[int], Workload]] = {
    "requests not valid yet, a board frees": not_valid_yet,
    "common cap + one no board has, a board frees": common_plus_rare,
    "common cap + alternatives no board has, a board frees": common_plus_alternatives,
    "arm requests of other teams, a lab arm board frees": other_groups,
    "any-board requests of other teams, a lab board frees": empty_caps_other_groups,
    "any-board requests not valid yet, a board frees": empty_caps_not_valid_yet,
    "identical two-board requests, a board frees": identical_sets,
    "N idle boards, N/2 two-board requests wait for a busy one, one more arrives": (
        identical_sets_arrive
    ),
    "N idle boards reserved for N sets, a one-board request arrives": beside_reserved,
    "N idle boards of another team, a request arrives": other_groups_farm,
}


# The same workloads on main before issue 12's index changes (commit b3699da, which only
# adds the counters), measured 2026-12-03 06:20 UTC on the machine of docs/benchmarks.md:
# (visits, median us) at 1,000 and at 10,000.
# None: not measured (quadratic: 10,000 would take about 50 million visits per event).
BEFORE: dict[str, tuple[tuple[float, float], tuple[float, float] | None]] = {
    "requests not valid yet, a board frees": (
        (1002, 272),
        (10002, 8928),
    ),
    "common cap + one no board has, a board frees": (
        (502, 128),
        (5002, 333),
    ),
    "common cap + alternatives no board has, a board frees": (
        (1002, 1677),
        (10002, 53854),
    ),
    "arm requests of other teams, a lab arm board frees": (
        (1002, 241),
        (10002, 8087),
    ),
    "any-board requests of other teams, a lab board frees": (
        (1002, 183),
        (10002, 7319),
    ),
    "any-board requests not valid yet, a board frees": (
        (1002, 235),
        (10002, 12105),
    ),
    "identical two-board requests, a board frees": (
        (5, 115),
        (5, 185),
    ),
    "N idle boards, N/2 two-board requests wait for a busy one, one more arrives": (
        (538, 218),
        (5038, 6391),
    ),
    "N idle boards reserved for N sets, a one-board request arrives": ((503500, 367433), None),
    "N idle boards of another team, a request arrives": (
        (1000, 370),
        (10000, 19759),
    ),
}
BEFORE_WHEN = "2026-12-03 06:20 UTC"


@dataclass(frozen=True)
class Cost:
    n: int
    visits: float
    us: float


def measure(build: Callable[[int], Workload], n: int, events: int = 50) -> Cost:
    core, event = build(n)
    visits: list[int] = []
    times: list[float] = []
    gc.disable()
    try:
        for _ in range(events):
            before = core.index_visits
            t = time.perf_counter_ns()
            event()
            times.append((time.perf_counter_ns() - t) / 1000)
            visits.append(core.index_visits - before)
    finally:
        gc.enable()
    return Cost(n, statistics.fmean(visits), statistics.median(times))


SIZES = (1_000, 10_000)


def run(sizes: tuple[int, ...] = SIZES) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name, build in WORKLOADS.items():
        costs = [measure(build, n) for n in sizes]
        rows.append(
            {
                "workload": name,
                "costs": [{"n": c.n, "visits": c.visits, "us": c.us} for c in costs],
            }
        )
    return rows


def _pair(small: tuple[float, float], large: tuple[float, float] | None, index: int) -> str:
    """One before figure at N and 10 N."""
    tenfold = "not run" if large is None else f"{large[index]:,.0f}"
    return f"{small[index]:,.0f} / {tenfold}"


HEADING = "## Core: hostile workloads for the indexes"


def render(results: list[dict[str, object]], when: str) -> list[str]:
    lines = [
        *measured(HEADING, when),
        "`bench/hostile_bench.py`: workloads shaped so that one event would cost in",
        "proportion to the waiting requests or the workers, each at N and 10 N (N waiting",
        "requests, or N boards for the last three). *Visits*: buckets of waiting requests and",
        "workers the indexes handed out for the event (`Core.index_visits`, mean of 50",
        "events), the measure the unit test (`test_core_index.py`) holds flat; *us*: the",
        "event's median time, which on this shared machine moves by 2-3 times between runs.",
        f"*Before*: the same on main before issue 12's index changes ({BEFORE_WHEN}).",
        "",
        "| workload | visits before | visits | us before | us |",
        "|---|---|---|---|---|",
    ]
    for row in results:
        name = row["workload"]
        costs = row["costs"]
        assert isinstance(name, str) and isinstance(costs, list)
        small, large = BEFORE[name]
        lines.append(
            f"| {name} | {_pair(small, large, 0)} "
            f"| {costs[0]['visits']:,.0f} / {costs[1]['visits']:,.0f} "
            f"| {_pair(small, large, 1)} "
            f"| {costs[0]['us']:,.0f} / {costs[1]['us']:,.0f} |"
        )
    return [
        *lines,
        "",
        "Each pair is N / 10 N, N = 1,000. What made the cost grow, and what keeps it flat",
        "now (docs/architecture.md, waiting requests): requests not valid yet sat in the",
        "index a freed board walks (now only buckets with a ready request are in it);",
        "buckets were indexed under the pair fewest *buckets* were under, which half the",
        "time was a cap every board has (now the pair fewest registered *boards* hold, an",
        "alternative's pairs too); a board walked the requests of owners it does not serve",
        "(the ready index is also by owner group) and a request the boards closed to its",
        "owner (the worker index is also by group); and each of many identical set requests",
        "walked past the boards reserved for those before it (now a request whose bucket",
        "has a more important ready request is not walked again). A request passing N",
        "boards reserved for N sets worked out each set's expected start, each a walk of",
        "the boards (quadratic; 10 N not run before); then at most 8 (`BACKFILL_LOOKS`),",
        "but it still stepped past every reserved board (1,053 / 10,053 visits, 1,413 /",
        "10,686 us, 2026-12-03 06:38 UTC). Now the boards kept for sets are indexed apart",
        "from the free ones, by their holder (docs/architecture.md, reservations): the",
        "request looks at the boards of the 8 most important holders and stops.",
        "",
    ]


if __name__ == "__main__":
    import json
    import sys

    sizes = tuple(int(a) for a in sys.argv[1:]) or SIZES
    print(json.dumps(run(sizes), indent=1))
