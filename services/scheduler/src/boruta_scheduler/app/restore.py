"""Rebuilding the core from the store, at start and after a failed commit, and keeping
what was rebuilt out of the way of the cyclic garbage collector."""

from __future__ import annotations

import gc

from boruta_scheduler.core import Core, Policy, Snapshot
from boruta_scheduler.store import Store


def restore_core(
    store: Store, now: float, policy: Policy | None = None, snapshot: Snapshot | None = None
) -> Core:
    """Load and restore in one go, on the caller's thread (the store may read requests as
    they are restored), or restore the snapshot given (a standby's warm copy). The cyclic
    collector is paused meanwhile: restoring allocates and keeps, and each full collection
    would walk the growing heap again for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return Core.restore(store.load() if snapshot is None else snapshot, now, policy)
    finally:
        if enabled:
            gc.enable()


def freeze_heap(*, collect: bool = False) -> None:
    """Leave what lives now (the restored core above all) out of later collections: a full
    collection walks every tracked object, which with 100,000 waiting requests stalls every
    call for a third of a second. Objects frozen are still freed when their last reference
    goes; only cycles among them wait for the next unfreeze. With collect, what was frozen
    before (an old core) is collected first."""
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
    SurvivorFreezer.baseline, SurvivorFreezer.walk_all = gc.get_freeze_count(), False


# The heap frozen may grow to this many times what the last walk of all of it left (and
# at least by FROZEN_SLACK objects, some 10 MB: a farm of 1,000 boards registering adds
# about 45,000) before a full collection walks all of it again.
FROZEN_GROWTH = 2.0
FROZEN_SLACK = 100_000


class SurvivorFreezer:
    """Freezes what survives each full collection, so the next one walks only what came
    since: the farm's workers and indexes, built after the start's freeze, would otherwise
    be walked at every full collection (about every few seconds under load, tens of
    milliseconds each for 1,000 boards, with every call held meanwhile).

    A frozen object is still freed when its last reference goes; only a reference cycle
    among frozen objects (an asyncio task in flight at the freeze, say) waits for a walk.
    So once the frozen heap has grown FROZEN_GROWTH times since the last walk of all of
    it, it is unfrozen, and the next full collection walks (and frees the cycles of) all
    of it: memory lost to frozen cycles stays bounded, and such walks grow rarer as the
    heap grows. One per process, shared by the servers in it (tests run several)."""

    _installed = 0
    baseline = 0  # objects frozen after the last walk of all of them (or at install)
    walk_all = False  # the heap is unfrozen: the next full collection walks all of it
    freezes = 0
    full_walks = 0

    @classmethod
    def install(cls) -> None:
        if cls._installed == 0:
            cls.baseline, cls.walk_all = gc.get_freeze_count(), False
            gc.callbacks.append(cls._after_collection)
        cls._installed += 1

    @classmethod
    def uninstall(cls) -> None:
        cls._installed -= 1
        if cls._installed == 0:
            gc.callbacks.remove(cls._after_collection)

    @classmethod
    def _after_collection(cls, phase: str, info: dict[str, int]) -> None:
        if phase != "stop" or info["generation"] != 2:
            return
        if cls.walk_all:
            cls.walk_all = False
            gc.freeze()
            cls.baseline = gc.get_freeze_count()
        elif gc.get_freeze_count() > max(cls.baseline * FROZEN_GROWTH, cls.baseline + FROZEN_SLACK):
            gc.unfreeze()
            cls.walk_all = True
            cls.full_walks += 1
            return
        else:
            gc.freeze()
        cls.freezes += 1
