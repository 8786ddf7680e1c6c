"""One heap of every timer of the core, with lazy deletion of timers that no longer apply.

A request's timers name it by id, not by object: a timer outlives the request it was for
until it comes due or the heap is compacted, and an entry of plain numbers neither keeps
the finished request (its job, caps and views) alive nor gives the garbage collector
anything to walk (a tuple of numbers only, its kind stored as a plain int, is left out of
collections)."""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable, Iterable

from boruta_scheduler.core.model import Worker


class TimerKind(enum.IntEnum):
    """What a timer is for; at equal times the smaller kind fires first."""

    DEADLINE = 0
    JOB_TIMEOUT = 1
    HEARTBEAT = 2
    HEALTHCHECK = 3
    VALID_AFTER = 4


# A request's id, or a worker.
Target = int | Worker
Entry = tuple[float, int, int, Target]


class TimerQueue:
    """Timers ordered by due time; the owner decides at fire time whether one still applies."""

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, kind: TimerKind, target: Target) -> None:
        heapq.heappush(self._heap, (due, int(kind), next(self._seq), target))

    def push_all(self, timers: Iterable[tuple[float, TimerKind, Target]]) -> None:
        """push() each timer, in one heapify (a restore's many at once)."""
        heap = self._heap
        seq = self._seq
        heap.extend((due, int(kind), next(seq), target) for due, kind, target in timers)
        heapq.heapify(heap)

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> tuple[float, TimerKind, Target] | None:
        """Remove and return the earliest timer due at or before now, or None."""
        if not self._heap or self._heap[0][0] > now:
            return None
        due, kind, _, target = heapq.heappop(self._heap)
        return due, TimerKind(kind), target

    def compact(self, still_applies: Callable[[float, TimerKind, Target], bool]) -> None:
        """Drop timers that no longer apply, so updates cannot grow the heap without bound."""
        self._heap = [e for e in self._heap if still_applies(e[0], TimerKind(e[1]), e[3])]
        heapq.heapify(self._heap)
