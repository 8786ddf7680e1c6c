"""What survives a full collection is frozen, and a cycle frozen by mistake is freed later.

Each case runs in an interpreter of its own: unfreezing and collecting the whole heap in
the test process would also finalize what earlier tests left frozen there (a grpc.aio
poller of a closed event loop, whose finalizer waits for its thread for ever).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SETUP = """
import gc
import weakref

from boruta_scheduler.app import restore
from boruta_scheduler.app.restore import SurvivorFreezer


class Node:
    def __init__(self):
        self.other = None


restore.FROZEN_SLACK = 1000
restore.FROZEN_GROWTH = 1.0  # the bound: 1,000 more than walked
SurvivorFreezer.install()
for _ in range(3):  # past the first walk of the heap, frozen after it
    gc.collect()
freezer = SurvivorFreezer
"""


def run_alone(case: str) -> None:
    """Run the case's statements after SETUP in a new interpreter; its asserts must hold."""
    done = subprocess.run(
        [sys.executable, "-c", SETUP + textwrap.dedent(case)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_survivors_of_a_full_collection_are_left_out_of_the_next() -> None:
    run_alone(
        """
        before = gc.get_freeze_count()
        kept = [Node() for _ in range(500)]
        gc.collect()
        assert gc.get_freeze_count() >= before + len(kept)
        walked = {id(o) for o in gc.get_objects()}
        assert not any(id(node) in walked for node in kept)  # not walked again
        """
    )


def test_a_frozen_cycle_is_freed_once_the_frozen_heap_has_grown_enough() -> None:
    run_alone(
        """
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
        """
    )


def test_a_failing_case_fails() -> None:
    """run_alone reports a case whose assert does not hold."""
    try:
        run_alone("assert gc.get_freeze_count() < 0, 'as expected'")
    except AssertionError as error:
        assert "as expected" in str(error)
    else:
        raise AssertionError("run_alone passed a failing case")
