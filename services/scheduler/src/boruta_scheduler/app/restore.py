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
