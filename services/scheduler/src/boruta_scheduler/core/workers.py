"""Workers indexed by their caps, kept in an order (rank order: least capable first).

The core keeps two indexes: one of every registered worker (to tell whether a request
could ever be satisfied) and one of IDLE workers (to pick a worker for a request), the
latter in two parts: the workers kept for no request, in rank order, and those reserved
for a waiting request, by their holder's serving order. A worker is indexed under each
(key, item) pair of its caps (caps.py), so a list-valued cap puts it under each of its
items.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, TypeVar

from sortedcontainers import SortedSet

from boruta_scheduler.core.caps import Alternative, Need
from boruta_scheduler.core.model import Request, Worker, groups_compatible
from boruta_scheduler.types import CapPair

# Where a member sorts in an index: a tuple that ends with its UUID (its rank, or its
# holder's serving order and then its rank).
Rank = tuple[Any, ...]
# Members in a row a walk steps past, missing from one of the sets a candidate must be in,
# before it leaps to that set's next member instead.
LEAP_AFTER = 8
# Walks firsts() remembers before it forgets them all: a bound on memory, reached only by
# a farm with that many distinct (need, owner groups) pairs asked about between changes.
FIRSTS_KEPT = 4096
K = TypeVar("K")


def rank_of(worker: Worker) -> Rank:
    return worker.rank


def holder_rank(worker: Worker) -> Rank:
    """A reserved worker's place: its holder's serving order (priority, id), then its rank."""
    holder = worker.reserved_for
    assert holder is not None, f"worker {worker.uuid} is not reserved"
    return (holder.priority, holder.id, *worker.rank)


def _union(parts: Sequence[Iterable[Rank]]) -> Iterator[Rank]:
    """The ranks of several sorted sets, in order, each once."""
    last: Rank | None = None
    for rank in heapq.merge(*parts):
        if rank != last:
            yield rank
            last = rank


# Emptied lists an index keeps to fill again (a new SortedSet costs more than the add):
# the small index of reserved boards empties and refills lists on most events.
SPARE_LISTS = 64


def _file(
    index: dict[K, SortedSet[Rank]], keys: Iterable[K], rank: Rank, spare: list[SortedSet[Rank]]
) -> None:
    """Put a rank into the list of each key."""
    for key in keys:
        ranks = index.get(key)
        if ranks is None:
            ranks = index[key] = spare.pop() if spare else SortedSet()
        ranks.add(rank)


def _unfile(
    index: dict[K, SortedSet[Rank]], keys: Iterable[K], rank: Rank, spare: list[SortedSet[Rank]]
) -> None:
    """Take a rank out of the list of each key, and empty lists out of the index."""
    for key in keys:
        ranks = index[key]
        ranks.discard(rank)
        if not ranks:
            del index[key]
            if len(spare) < SPARE_LISTS:
                spare.append(ranks)


class WorkerIndex:
    """A set of workers with, for each cap pair, the workers that have it in order (by
    rank unless another key is given; a member keeps the place it was added at)."""

    def __init__(self, key: Callable[[Worker], Rank] = rank_of) -> None:
        self._key = key
        self._members: dict[str, Worker] = {}
        self._places: dict[str, Rank] = {}
        self._ranked: SortedSet[Rank] = SortedSet()
        self._by_pair: dict[CapPair, SortedSet[Rank]] = {}
        # Members by group, and those without groups (they serve every owner): an owner's
        # request walks only the boards open to it when those are fewer.
        self._by_group: dict[str, SortedSet[Rank]] = {}
        self._ungrouped: SortedSet[Rank] = SortedSet()
        self._spare: list[SortedSet[Rank]] = []
        # Members the walks have looked at, ever: what tests of the cost of an event count
        # (tests/test_core_index.py).
        self.visits = 0
        # firsts()'s answers while no member is added or removed.
        self._firsts: dict[tuple[Need, frozenset[str], int], tuple[Worker, ...]] = {}

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, worker: Worker) -> bool:
        return self._members.get(worker.uuid) is worker

    def __iter__(self) -> Iterator[Worker]:
        """Members in order."""
        members = self._members
        return (members[place[-1]] for place in self._ranked)

    def add(self, worker: Worker) -> None:
        self._firsts.clear()
        place = self._places[worker.uuid] = self._key(worker)
        self._members[worker.uuid] = worker
        self._ranked.add(place)
        _file(self._by_pair, worker.items, place, self._spare)
        _file(self._by_group, worker.groups, place, self._spare)
        if not worker.groups:
            self._ungrouped.add(place)

    def holders(self, pair: CapPair) -> int:
        """How many members hold this pair."""
        return len(self._by_pair.get(pair, ()))

    def remove(self, worker: Worker) -> None:
        """Remove a worker; its caps and groups must be those it was added with."""
        if self._members.pop(worker.uuid, None) is None:
            return
        self._firsts.clear()
        place = self._places.pop(worker.uuid)
        self._ranked.discard(place)
        _unfile(self._by_pair, worker.items, place, self._spare)
        _unfile(self._by_group, worker.groups, place, self._spare)
        self._ungrouped.discard(place)

    def _rarest(self, pairs: Alternative) -> SortedSet[Rank] | None:
        """The holders of the pair fewest members hold, or None if some pair has none."""
        rarest: SortedSet[Rank] | None = None
        for pair in pairs:
            holders = self._by_pair.get(pair)
            if holders is None:
                return None
            if rarest is None or len(holders) < len(rarest):
                rarest = holders
        return rarest

    def _candidates(
        self, need: Need, owner_groups: frozenset[str] | None = None, start: Rank | None = None
    ) -> Iterable[Rank]:
        """Places, in order from start on, of a few members among which are all that meet
        need (for owner_groups, if given): a walk of the holders of its rarest required
        pair, of the union over the alternatives of its smallest choice of each
        alternative's rarest pair, or of the members open to owner_groups, whichever is
        fewest, that keeps only members that also hold every required pair and are open to
        owner_groups."""
        required: list[SortedSet[Rank]] = []
        for pair in need.required:
            holders = self._by_pair.get(pair)
            if holders is None:
                return ()
            required.append(holders)
        required.sort(key=len)
        walked: list[SortedSet[Rank]] = required[:1] or [self._ranked]
        size = len(walked[0])
        for choice in need.choices:
            parts = [p for p in map(self._rarest, choice) if p is not None]
            if not parts:
                return ()
            total = sum(map(len, parts))
            if total < size:
                walked, size = parts, total
        open_to: list[SortedSet[Rank]] | None = None
        if owner_groups is not None and len(self._ungrouped) < len(self._members):
            by_group = self._by_group
            open_to = [self._ungrouped, *(by_group[g] for g in owner_groups if g in by_group)]
            if sum(map(len, open_to)) < size:
                walked = open_to
        # Sets a candidate must be in (each a union of its parts), besides those walked.
        filters = [[h] for h in required if not (len(walked) == 1 and walked[0] is h)]
        if open_to is not None and walked is not open_to:
            filters.append(open_to)
        if filters:
            return self._leap(walked, filters, start)
        if start is not None:
            after = [part.irange(minimum=start) for part in walked]
            return after[0] if len(after) == 1 else _union(after)
        return walked[0] if len(walked) == 1 else _union(walked)

    def _leap(
        self,
        walked: list[SortedSet[Rank]],
        filters: list[list[SortedSet[Rank]]],
        start: Rank | None = None,
    ) -> Iterator[Rank]:
        """The ranks of the union of walked that are in every filter, in order. Past
        LEAP_AFTER members in a row missing from some filter, the walk leaps to that
        filter's next rank (a bisection, dearer than a step): members that hold the rarest
        pair but not the others (or are closed to the owner), however many rank before
        the first that fits, cost a few steps per leap, not one each."""
        while True:
            parts = [part.irange(minimum=start) for part in walked]
            misses = 0
            for rank in parts[0] if len(parts) == 1 else _union(parts):
                for f in filters:
                    if rank not in f[0] and not any(rank in p for p in f[1:]):
                        break
                else:
                    misses = 0
                    yield rank
                    continue
                self.visits += 1
                misses += 1
                if misses < LEAP_AFTER:
                    continue
                nexts = [p[i] for p in f if (i := p.bisect_left(rank)) < len(p)]
                if not nexts:
                    return
                start = min(nexts)
                break
            else:
                return

    def capable(
        self,
        need: Need,
        owner_groups: frozenset[str],
        exclude: str = "",
        start: Rank | None = None,
    ) -> Iterator[Worker]:
        """Members that meet need and serve owner_groups, in order (from start on)."""
        members = self._members
        required, choices = need.required, need.choices
        for place in self._candidates(need, owner_groups, start):
            self.visits += 1
            uuid = place[-1]
            worker = members[uuid]
            items = worker.items
            if (
                uuid != exclude
                and required <= items
                and (not choices or need.met_by(items))
                and groups_compatible(worker.groups, owner_groups)
            ):
                yield worker

    def firsts(self, need: Need, owner_groups: frozenset[str], limit: int) -> tuple[Worker, ...]:
        """The first limit members capable() yields, remembered until a member is added
        or removed: for an index that changes seldom (every registered worker) and is
        asked the same often (the expected start of a set, on every free event)."""
        key = (need, owner_groups, limit)
        found = self._firsts.get(key)
        if found is None:
            if len(self._firsts) >= FIRSTS_KEPT:
                self._firsts.clear()
            found = self._firsts[key] = tuple(islice(self.capable(need, owner_groups), limit))
        return found

    def capable_remembered(
        self, need: Need, owner_groups: frozenset[str], limit: int
    ) -> Iterator[Worker]:
        """capable(), its first limit members from firsts(), the rest walked as needed."""
        found = self.firsts(need, owner_groups, limit)
        yield from found
        if len(found) == limit:
            last = found[-1]
            start = self._places[last.uuid]
            yield from self.capable(need, owner_groups, exclude=last.uuid, start=start)

    def meeting(self, need: Need) -> Worker | None:
        """The least capable member that meets need, whatever its groups."""
        members = self._members
        for place in self._candidates(need):
            self.visits += 1
            worker = members[place[-1]]
            if need.met_by(worker.items):
                return worker
        return None

    def best(self, need: Need, owner_groups: frozenset[str]) -> Worker | None:
        """The least capable member that meets need for owner_groups."""
        return next(self.capable(need, owner_groups), None)

    def any_capable(self, need: Need, owner_groups: frozenset[str], exclude: str = "") -> bool:
        return next(self.capable(need, owner_groups, exclude), None) is not None


class IdleWorkers:
    """The IDLE workers in two indexes: those kept for no request, least capable first,
    and those reserved for a waiting request (Worker.reserved_for), by their holder's
    serving order, most important first, then least capable first. A request walks the
    free ones apart from those kept for others, and those by their holder's place beside
    its own (docs/architecture.md, reservations)."""

    def __init__(self) -> None:
        self.free = WorkerIndex()
        self.kept = WorkerIndex(holder_rank)

    @property
    def visits(self) -> int:
        return self.free.visits + self.kept.visits

    def __len__(self) -> int:
        return len(self.free) + len(self.kept)

    def __contains__(self, worker: Worker) -> bool:
        return worker in self.free or worker in self.kept

    def __iter__(self) -> Iterator[Worker]:
        """Members in rank order."""
        return heapq.merge(self.free, sorted(self.kept, key=rank_of), key=rank_of)

    def add(self, worker: Worker) -> None:
        (self.free if worker.reserved_for is None else self.kept).add(worker)

    def remove(self, worker: Worker) -> None:
        self.free.remove(worker)
        self.kept.remove(worker)

    def keep(self, worker: Worker, holder: Request | None) -> None:
        """Reserve a worker for holder (None: for no one), moving it between the indexes
        if it is idle."""
        idle = worker in self
        if idle:
            self.remove(worker)
        worker.reserved_for = holder
        if idle:
            self.add(worker)

    def may_serve(self, needs: Iterable[Need]) -> bool:
        """Whether, for each need, some member holds every pair it requires: what a set of
        idle boards needs at least, checked in a few lookups before any walk (a freed
        board offered to every set it could join, beside idle boards of other kinds,
        would otherwise walk for each set's other profiles in vain)."""
        free, kept = self.free, self.kept
        for need in needs:
            for pair in need.required:
                if not free.holders(pair) and not kept.holders(pair):
                    return False
        return True

    def kept_after(
        self, need: Need, owner_groups: frozenset[str], order: tuple[int, int]
    ) -> Iterator[Worker]:
        """Members reserved for requests less important than order (priority, id) that
        meet need and serve owner_groups, the most important holder first."""
        return self.kept.capable(need, owner_groups, start=(order[0], order[1] + 1))
