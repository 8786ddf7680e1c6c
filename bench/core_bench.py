"""Cost of one scheduling event in the pure core, at several farm sizes.

Every worker runs a job and the queue holds the given number of waiting requests; then
we time the two events that drive matching: a request arrives (and must be queued or
matched), and a worker frees (its job closes, the dryad reports it prepared, and it
takes the best waiting request).
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from boruta_scheduler.core import Core, DryadCallKind, Policy
from boruta_scheduler.types import Access, RequestState, WorkerState

from bench.farmgen import RequestSpec, request_specs, worker_specs

T0 = 1_800_000_000.0
ACCESS = Access("job", "KEY")
POLICY = Policy(
    default_deadline=1e9,
    heartbeat_timeout=1e9,
    job_timeout=1e8,
    max_job_duration=1e8,
    max_waiting_per_user=10**9,  # one user queues everything here
)


@dataclass(frozen=True)
class EventTimes:
    workers: int
    waiting: int
    arrive_us: list[float]
    free_us: list[float]

    @staticmethod
    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "mean": statistics.fmean(ordered),
            "p50": ordered[len(ordered) // 2],
            "p99": ordered[int(len(ordered) * 0.99)],
        }


def answer_prepares(core: Core, now: float) -> None:
    """Answer the dryad calls at once, like a dryad would: a Prepare that checks first."""
    calls = core.drain().calls
    while calls:
        for call in calls:
            access = ACCESS if call.kind is DryadCallKind.PREPARE else None
            core.dryad_call_succeeded(now, call, access)
        calls = core.drain().calls


def build_farm(workers: int, waiting: int) -> tuple[Core, list[int]]:
    """A core whose workers all run a job, with `waiting` requests queued behind them."""
    core = Core(POLICY)
    now = T0
    for spec in worker_specs(workers):
        core.register(now, {**spec.caps, "UUID": spec.uuid}, "d:1", "s:22", instance_id="i")
        if spec.groups:
            core.set_groups(now, spec.uuid, spec.groups)
        core.set_state(now, spec.uuid, WorkerState.IDLE)
    answer_prepares(core, now)
    running = []
    for view in core.workers():
        r = core.new_request(now, "owner", view.groups, {"UUID": view.uuid}, priority=1)
        running.append(r.id)
    queue_requests(core, now, request_specs(waiting))
    return core, running


def queue_requests(core: Core, now: float, specs: list[RequestSpec]) -> None:
    """Queue requests of these specs (satisfiable or not) and drain the core."""
    for spec in specs:
        core.new_request(
            now,
            spec.owner,
            spec.owner_groups,
            spec.caps,
            priority=spec.priority,
            accept_unsatisfiable=True,
        )
    core.drain()


def measure(workers: int, waiting: int, events: int = 2000) -> EventTimes:
    core, running = build_farm(workers, waiting)
    specs = request_specs(events, seed=99)
    now = T0 + 1
    arrive: list[float] = []
    free: list[float] = []
    perf = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(events):
            spec = specs[i]
            t = perf()
            core.new_request(
                now,
                spec.owner,
                spec.owner_groups,
                spec.caps,
                priority=spec.priority,
                accept_unsatisfiable=True,
            )
            arrive.append((perf() - t) / 1000)
            core.drain()

            # A worker frees: its job ends, Prepare comes back, it takes the best request.
            request_id = running[i % len(running)]
            t = perf()
            view = core.close_request(now, request_id)
            answer_prepares(core, now)
            free.append((perf() - t) / 1000)
            assert view.job is not None
            worker = core.worker(view.job.worker_uuid)
            running[i % len(running)] = (
                worker.request_id if worker.state is WorkerState.RUNNING else request_id
            )
            if worker.state is not WorkerState.RUNNING:
                # Nothing matched (e.g. group mismatch): keep the worker busy for the next round.
                r = core.new_request(now, "owner", worker.groups, {"UUID": worker.uuid}, priority=1)
                assert r.state is RequestState.IN_PROGRESS
                running[i % len(running)] = r.id
            core.drain()
    finally:
        gc.enable()
    assert core.waiting_count >= waiting - events
    return EventTimes(workers, waiting, arrive, free)


def traced_bytes(work: Callable[[], object]) -> int:
    """Bytes allocated by work() and still held after it, as tracemalloc counts them."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def memory_per_waiting_request(count: int = 100_000) -> float:
    """Bytes the core holds per waiting request (tracemalloc; farm of 1,000 busy workers)."""
    core, _ = build_farm(1000, 0)
    specs = request_specs(count, seed=7)

    held = traced_bytes(lambda: queue_requests(core, T0, specs))
    assert core.waiting_count == count
    return held / count


SCALES = [(100, 1_000), (1_000, 10_000), (10_000, 100_000)]


def run() -> dict[str, object]:
    results = [measure(w, r) for w, r in SCALES]
    return {
        "scales": [
            {
                "workers": t.workers,
                "waiting": t.waiting,
                "arrive": EventTimes.summary(t.arrive_us),
                "free": EventTimes.summary(t.free_us),
            }
            for t in results
        ],
        "bytes_per_waiting_request": memory_per_waiting_request(),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
