"""Scheduler CPU per heartbeat, in-process and without gRPC: service, engine, core and the
durable SQLite store, with 1,000 workers heard in turn as their dryads would be.

The figure excludes gRPC's own work per call (the same for any server); it is what the
scheduler adds, and what 10,000 boards at one heartbeat in 10 s cost it while idle.
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path

from boruta_scheduler.app.engine import Engine
from boruta_scheduler.app.service import SchedulerService, ServiceSettings
from boruta_scheduler.app.watch import WatchHub
from boruta_scheduler.core import Core
from boruta_scheduler.store import SQLiteStore
from boruta_scheduler.types import Access, Identity, Role, WorkerView


def _register(core: Core, now: float, caps: dict[str, str]) -> WorkerView:
    return core.register(now, caps, "127.0.0.1:1", "127.0.0.1:2")


class _Dryads:
    async def call(self, call: object) -> Access | None:
        return None


async def _measure(workers: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="boruta-bench-") as tmp:
        store = SQLiteStore(Path(tmp) / "boruta.db")
        engine = Engine(Core(), store, _Dryads())
        engine.start()
        service = SchedulerService(engine, store, WatchHub(), ServiceSettings())
        uuids = [f"hb{i}" for i in range(workers)]
        for uuid in uuids:
            await engine.execute(partial(_register, caps={"UUID": uuid}))
        dryads = [Identity(u, frozenset(), Role.DRYAD, workers=frozenset({u})) for u in uuids]

        async def beat(who: Identity) -> None:
            await service.heartbeat(who, who.user, None)

        # One at a time, each its own batch: an idle farm's dryads are heard apart.
        for who in dryads:  # warm up
            await beat(who)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            for who in dryads:
                await beat(who)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await engine.stop()
        store.close()
        beats = workers * rounds
        return {
            "heartbeats": beats,
            "cpu_ms_per_heartbeat": cpu / beats * 1000,
            "per_second": beats / wall,
        }


def run(workers: int = 1000, rounds: int = 20) -> dict[str, float]:
    from boruta_scheduler.main import run as run_on_loop

    result: dict[str, float] = {}

    async def main() -> int:
        result.update(await _measure(workers, rounds))
        return 0

    run_on_loop(main())
    return result


HEADING = "## Heartbeats: what an idle farm costs"


def render(result: dict[str, float] | None, when: str) -> list[str]:
    """This benchmark's section of docs/benchmarks.md."""
    if result is None:
        return []
    from bench.machine import machine

    per = result["cpu_ms_per_heartbeat"]
    return [
        HEADING,
        "",
        f"Measured {when} on {machine()}.",
        f"`bench/heartbeat_bench.py`: {result['heartbeats']:,.0f} heartbeats of 1,000 workers, "
        "one at a time, through",
        "the service, engine, core and a durable SQLite store, in-process (gRPC's own",
        "per-call work, the same for any server, is not counted). A heartbeat that changes",
        "nothing durable costs no commit: last-seen times are kept in memory and stored at",
        "most once a minute with a batch that commits anyway.",
        "",
        "| measure | figure | target |",
        "|---|---|---|",
        f"| scheduler CPU per heartbeat (ms) | {per:.3f} | <= 0.05: "
        f"{'met' if per <= 0.05 else '**missed**'} |",
        # 10,000 boards / 10 s = 1,000 heartbeats a second, each per ms of CPU.
        f"| 10,000 boards at one heartbeat in 10 s: share of one core | {per * 1000 / 1000:.1%}"
        " (gRPC's work not counted) | |",
        "",
    ]


if __name__ == "__main__":
    print(run())
