"""Co-location: groups of a request's profiles whose boards must share one host (one dryad
process) or one stack (docs/api.md, "Co-location").

A set for a request with groups is found place by place: for each group, the places
(hosts or stacks) of the candidates of one of its profiles, each tried once, and at each
the group's profiles matched against that place's boards alone (matching.py); once every
group has a place, one matching over all profiles (the loose ones against any board)
decides. The cost is the number of candidate places times the size of a place, never the
number of waiting requests, nor of workers beyond those candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice, product
from typing import Any

from boruta_scheduler.core.caps import Need
from boruta_scheduler.core.matching import match, shortlist
from boruta_scheduler.core.model import Worker, groups_compatible
from boruta_scheduler.core.workers import WorkerIndex
from boruta_scheduler.errors import InvalidArgument
from boruta_scheduler.types import Colocation, Placement

# One group, as the indexes of its profiles (in profile order) and where they must be.
Group = tuple[tuple[int, ...], Placement]
# The registered workers at a place: (placement, host address or stack name) -> workers.
MembersAt = Callable[[Placement, str], Iterable[Worker]]
# Place assignments tried when checking a reservation (a heuristic: see fits_reserved).
MAX_RESERVATION_TRIES = 256
# Places a search of find_set looks at, over all its groups, before it gives up: what bounds
# a request of many groups on a farm of many small hosts, whose places would otherwise be
# tried in every combination.
MAX_PLACES_SEARCHED = 4096

PLACE_WORDS = {Placement.HOST: "one host", Placement.STACK: "one stack"}


def place_of(worker: Worker, placement: Placement) -> str:
    """The worker's host (its dryad's address) or stack ("": in none)."""
    return worker.dryad_address if placement is Placement.HOST else worker.stack


def check_together(
    together: Sequence[Colocation], names: Sequence[str]
) -> tuple[tuple[Colocation, ...], tuple[Group, ...]]:
    """The groups as given and as profile indexes, refusing groups that name unknown
    profiles, share a profile, have fewer than two, or no placement."""
    if not together:
        return (), ()
    if len(names) < 2:
        raise InvalidArgument(
            "together groups the boards of a request of several profiles; give two or more "
            "profiles, or leave together out"
        )
    index_of = {name: i for i, name in enumerate(names) if name}
    taken: dict[int, int] = {}
    groups: list[Group] = []
    for number, colocation in enumerate(together):
        if colocation.placement not in (Placement.HOST, Placement.STACK):
            raise InvalidArgument(
                f"together group {number} has no placement; set it to PLACEMENT_HOST (one "
                "host) or PLACEMENT_STACK (one stack)"
            )
        if colocation.profiles:
            indexes = []
            for name in colocation.profiles:
                if name not in index_of:
                    known = ", ".join(sorted(index_of)) or "none: name the profiles"
                    raise InvalidArgument(
                        f"together group {number} names profile {name[:80]!r}, which the "
                        f"request has not; its profile names are: {known}"
                    )
                indexes.append(index_of[name])
        else:
            indexes = list(range(len(names)))  # an empty group is every profile
        for index in indexes:
            if taken.get(index) == number:
                raise InvalidArgument(
                    f"together group {number} names profile {names[index]!r} twice; name "
                    "each of its profiles once"
                )
            if index in taken:
                shown = names[index] or str(index)
                raise InvalidArgument(
                    f"profile {shown!r} is in together group {taken[index]} and again in "
                    f"group {number}; a profile is in one group at most (an empty group "
                    "holds every profile)"
                )
            taken[index] = number
        if len(indexes) < 2:
            raise InvalidArgument(
                f"together group {number} has only one profile; a group holds two or more "
                "(one board is always on one host)"
            )
        groups.append((tuple(sorted(indexes)), colocation.placement))
    return tuple(together), tuple(groups)


def describe(groups: Sequence[Group], names: Sequence[str]) -> str:
    """The groups as a user reads them: "dut, relay on one host"."""
    return "; ".join(
        ", ".join(names[i] or str(i) for i in indexes) + " on " + PLACE_WORDS[placement]
        for indexes, placement in groups
    )


# Candidates of a need, least capable first, and whether a worker is a candidate at all
# (of the pool, open to the owner, usable).
Capable = Callable[[Need], Iterable[Worker]]
Candidate = Callable[[Worker], bool]


def from_index(
    pool: WorkerIndex, owner_groups: frozenset[str], usable: Callable[[Worker], bool] | None
) -> tuple[Capable, Candidate]:
    """find_set's view of an index of workers, open to owner_groups and usable."""

    def capable(need: Need) -> Iterable[Worker]:
        found = pool.capable(need, owner_groups)
        return found if usable is None else filter(usable, found)

    def candidate(worker: Worker) -> bool:
        return (
            worker in pool
            and groups_compatible(worker.groups, owner_groups)
            and (usable is None or usable(worker))
        )

    return capable, candidate


def find_set(
    needs: Sequence[Need],
    groups: Sequence[Group],
    capable: Capable,
    candidate: Candidate,
    members_at: MembersAt,
    order: Callable[[Worker], Any] = lambda worker: worker.rank,
) -> list[Worker] | None:
    """A different candidate for each need, each group's on one place, the first in
    order (capable's, and at a place by order: least capable first) where there is a
    choice; None if there is none (or if the search looked at MAX_PLACES_SEARCHED places
    without finding one)."""
    count = len(needs)
    searched = 0
    grouped = {i for indexes, _ in groups for i in indexes}
    candidates: list[list[Worker]] = [[] for _ in range(count)]
    for i in range(count):
        if i not in grouped:
            candidates[i] = shortlist(capable(needs[i]), count)
            if not candidates[i]:
                return None

    def at_places(group: Group) -> Iterator[list[list[Worker]]]:
        """Per place, the candidates of the group's profiles there, if they match."""
        indexes, placement = group
        seen: set[str] = set()
        for anchor in capable(needs[indexes[0]]):
            place = place_of(anchor, placement)
            if not place or place in seen:
                continue
            seen.add(place)
            nonlocal searched
            searched += 1
            if searched > MAX_PLACES_SEARCHED:
                raise _GaveUp
            members = sorted(filter(candidate, members_at(placement, place)), key=order)
            here = [
                list(islice((w for w in members if needs[i].met_by(w.items)), count))
                for i in indexes
            ]
            if match(here) is not None:
                yield here

    def search(number: int) -> list[Worker] | None:
        if number == len(groups):
            return match(candidates)
        indexes = groups[number][0]
        placed = [i for g in groups[: number + 1] for i in g[0]]
        for here in at_places(groups[number]):
            for i, found in zip(indexes, here, strict=True):
                candidates[i] = found
            # The groups placed so far must fit together before the next is placed.
            if number and match([candidates[i] for i in placed]) is None:
                continue
            chosen = search(number + 1)
            if chosen is not None:
                return chosen
        return None

    try:
        return search(0)
    except _GaveUp:
        return None


class _GaveUp(Exception):
    """find_set looked at too many places."""


def fits_reserved(held: Sequence[Worker], needs: Sequence[Need], groups: Sequence[Group]) -> bool:
    """Whether the held workers can serve distinct profiles with each group's on one place
    (a set can grow from them). Tries the places of the held workers for each group, at
    most MAX_RESERVATION_TRIES assignments: reservations are a heuristic, the request
    starts whenever find_set finds a set."""
    group_of = {i: g for g, (indexes, _) in enumerate(groups) for i in indexes}
    options: list[list[str]] = [
        ["", *dict.fromkeys(p for w in held if (p := place_of(w, placement)))]
        for _, placement in groups
    ]
    for places in islice(product(*options), MAX_RESERVATION_TRIES):

        def allowed(worker: Worker, i: int, places: tuple[str, ...] = places) -> bool:
            g = group_of.get(i)
            if g is None:
                return True
            return bool(places[g]) and place_of(worker, groups[g][1]) == places[g]

        fits = [
            [i for i, need in enumerate(needs) if need.met_by(w.items) and allowed(w, i)]
            for w in held
        ]
        if match(fits) is not None:
            return True
    return False
