"""Workers indexed by their caps, kept in rank order (least capable first).

The core keeps two indexes: one of every registered worker (to tell whether a request
could ever be satisfied) and one of IDLE workers (to pick a worker for a request).
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedSet

from boruta_scheduler.core.model import Worker, groups_compatible
from boruta_scheduler.types import CapPair

Rank = tuple[int, str]


class WorkerIndex:
    """A set of workers with, for each cap pair, the workers that have it in rank order."""

    def __init__(self) -> None:
        self._members: dict[str, Worker] = {}
        self._ranked: SortedSet[Rank] = SortedSet()
        self._by_pair: dict[CapPair, SortedSet[Rank]] = {}

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, worker: Worker) -> bool:
        return self._members.get(worker.uuid) is worker

    def __iter__(self) -> Iterator[Worker]:
        """Members in rank order."""
        members = self._members
        return (members[uuid] for _, uuid in self._ranked)

    def add(self, worker: Worker) -> None:
        self._members[worker.uuid] = worker
        self._ranked.add(worker.rank)
        for pair in worker.caps_sig:
            holders = self._by_pair.get(pair)
            if holders is None:
                holders = self._by_pair[pair] = SortedSet()
            holders.add(worker.rank)

    def remove(self, worker: Worker) -> None:
        """Remove a worker; its rank and caps must be those it was added with."""
        if self._members.pop(worker.uuid, None) is None:
            return
        self._ranked.discard(worker.rank)
        for pair in worker.caps_sig:
            holders = self._by_pair[pair]
            holders.discard(worker.rank)
            if not holders:
                del self._by_pair[pair]

    def capable(
        self, sig: frozenset[CapPair], owner_groups: frozenset[str], exclude: str = ""
    ) -> Iterator[Worker]:
        """Members with every pair of sig that serve owner_groups, least capable first."""
        ranks = self._ranked
        if sig:
            # Walk the rarest pair's holders; the others are checked per worker.
            for i, pair in enumerate(sig):
                holders = self._by_pair.get(pair)
                if holders is None:
                    return
                if i == 0 or len(holders) < len(ranks):
                    ranks = holders
        members = self._members
        for _, uuid in ranks:
            worker = members[uuid]
            if (
                uuid != exclude
                and sig <= worker.caps_sig
                and groups_compatible(worker.groups, owner_groups)
            ):
                yield worker

    def best(self, sig: frozenset[CapPair], owner_groups: frozenset[str]) -> Worker | None:
        """The least capable member that satisfies sig for owner_groups."""
        return next(self.capable(sig, owner_groups), None)

    def any_capable(
        self, sig: frozenset[CapPair], owner_groups: frozenset[str], exclude: str = ""
    ) -> bool:
        return next(self.capable(sig, owner_groups, exclude), None) is not None
