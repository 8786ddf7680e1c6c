"""Utilisation per group over time: how many of each group's boards run a job, sampled
from the core at a fixed interval and kept in memory (a restart starts a new series)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from boruta_scheduler.types import WorkerState, WorkerView

log = logging.getLogger(__name__)

# Boards in no group are open to every user; the chart names them so.
OPEN_TO_ALL = "(open to all)"


@dataclass(frozen=True, slots=True)
class Sample:
    """At time, per group: (boards running a job, boards registered)."""

    time: float
    groups: dict[str, tuple[int, int]]


def sample_of(workers: Iterable[WorkerView], now: float) -> Sample:
    counts: dict[str, list[int]] = {}
    for worker in workers:
        for group in worker.groups or (OPEN_TO_ALL,):
            busy_total = counts.setdefault(group, [0, 0])
            busy_total[0] += worker.state is WorkerState.RUNNING
            busy_total[1] += 1
    return Sample(now, {g: (b, t) for g, (b, t) in sorted(counts.items())})


class UtilisationSeries:
    """Samples every interval seconds, keeping the latest `keep` samples."""

    def __init__(self, interval: float, keep: int = 1440) -> None:
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None

    def start(self, read: Callable[[], Awaitable[Sample]]) -> None:
        self._task = asyncio.ensure_future(self._run(read))

    async def _run(self, read: Callable[[], Awaitable[Sample]]) -> None:
        while True:
            try:
                self.samples.append(await read())
            except Exception:  # an engine that stopped: the next sample tells
                log.warning("utilisation sample failed", exc_info=True)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


@dataclass(frozen=True, slots=True)
class Line:
    """One group's polyline on the chart (SVG coordinates), and its latest figures."""

    group: str
    points: str
    busy: int
    total: int
    colour: str


# Chart size in SVG units; the page scales it.
WIDTH, HEIGHT = 600.0, 200.0
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def chart_lines(samples: list[Sample]) -> list[Line]:
    """Each group's share of busy boards (0 to 1) over the samples' span, as polylines."""
    if not samples:
        return []
    start, end = samples[0].time, samples[-1].time
    span = max(end - start, 1e-9)
    groups = sorted({g for s in samples for g in s.groups})
    lines = []
    for index, group in enumerate(groups):
        points = []
        for sample in samples:
            busy, total = sample.groups.get(group, (0, 0))
            x = 0.0 if len(samples) == 1 else (sample.time - start) / span * WIDTH
            y = HEIGHT - (busy / total if total else 0.0) * HEIGHT
            points.append(f"{x:.1f},{y:.1f}")
        if len(samples) == 1:  # one sample: a level line across the chart
            points.append(f"{WIDTH:.1f},{points[0].partition(',')[2]}")
        busy, total = samples[-1].groups.get(group, (0, 0))
        colour = COLOURS[index % len(COLOURS)]
        lines.append(Line(group, " ".join(points), busy, total, colour))
    return lines
