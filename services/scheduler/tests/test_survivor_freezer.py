"""What survives a full collection is frozen, and a cycle frozen by mistake is freed later."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from boruta_scheduler.app import restore
from boruta_scheduler.app.restore import SurvivorFreezer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def freezer(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[SurvivorFreezer]]:
    monkeypatch.setattr(restore, "FROZEN_SLACK", 1000)
    monkeypatch.setattr(restore, "FROZEN_GROWTH", 1.0)  # the bound: 1,000 more than walked
    SurvivorFreezer.install()
    for _ in range(3):  # past the first walk of the test process's heap, frozen after it
        gc.collect()
    try:
        yield SurvivorFreezer
    finally:
        SurvivorFreezer.uninstall()
        gc.unfreeze()
        gc.collect()


def test_survivors_of_a_full_collection_are_left_out_of_the_next(
    freezer: type[SurvivorFreezer],
) -> None:
    before = gc.get_freeze_count()
    kept = [Node() for _ in range(500)]
    gc.collect()
    assert gc.get_freeze_count() >= before + len(kept)
    walked = {id(o) for o in gc.get_objects()}
    assert not any(id(node) in walked for node in kept)  # not walked again


def test_a_frozen_cycle_is_freed_once_the_frozen_heap_has_grown_enough(
    freezer: type[SurvivorFreezer],
) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    gc.collect()  # frozen while still in use
    del a, b
    gc.collect()
    assert gone() is not None  # a frozen cycle is not collected...
    walks = freezer.full_walks
    kept = [Node() for _ in range(2 * restore.FROZEN_SLACK)]  # the heap grows past the bound
    gc.collect()  # kept is frozen: past the bound now
    assert freezer.full_walks == walks
    gc.collect()  # so the frozen heap is unfrozen, for the next collection to walk
    gc.collect()
    assert freezer.full_walks == walks + 1
    assert gone() is None  # ...until a full walk frees it
    assert gc.get_freeze_count() >= len(kept)  # and what lives is frozen again
