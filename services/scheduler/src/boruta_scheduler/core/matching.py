"""One distinct worker per profile: a bipartite matching over each profile's candidates.

A pure function over candidate lists, so that later rules (co-location, stacks) can filter
the candidates or run it once per host without changing it. With k profiles, a profile
with k candidates can always be given one the other k - 1 profiles leave free; so the first
k candidates of each profile (in preference order) have a matching whenever all of them
do, and the cost depends on k alone, not on how many workers could serve.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from itertools import islice
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


def shortlist(candidates: Iterable[T], profiles: int) -> list[T]:
    """The first candidates of one profile that a matching of this many profiles needs."""
    return list(islice(candidates, profiles))


def match(candidates: Sequence[Sequence[T]]) -> list[T] | None:
    """One distinct candidate per profile, in profile order, or None if there is none.

    Augmenting paths (Kuhn's algorithm) in profile order. A profile takes its most
    preferred free candidate, and moves an earlier profile only when none is free."""
    taken: dict[T, int] = {}
    chosen: list[T | None] = [None] * len(candidates)

    def augment(profile: int, seen: set[T]) -> bool:
        options = candidates[profile]
        for candidate in options:
            if candidate not in taken:
                taken[candidate] = profile
                chosen[profile] = candidate
                return True
        for candidate in options:
            if candidate in seen:
                continue
            seen.add(candidate)
            if augment(taken[candidate], seen):
                taken[candidate] = profile
                chosen[profile] = candidate
                return True
        return False

    for profile in range(len(candidates)):
        if not augment(profile, set()):
            return None
    return [candidate for candidate in chosen if candidate is not None]
