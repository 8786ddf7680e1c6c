"""Helpers for tests of job users: the host-wide parts a dryad shares among its boards."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager

from boruta_dryad.cgroups import JobCgroups, detect
from boruta_dryad.config import DEFAULT_JOB_UIDS
from boruta_dryad.uids import UidAllocator, UidRange
from boruta_dryad.users import JobHost


@contextmanager
def job_host() -> Iterator[JobHost]:
    """What a dryad of its own would have: a fresh id, the host's job uids (shared with
    every dryad here, as in production) and its own job cgroups; the cgroups go afterwards."""
    identity = uuidlib.uuid4().hex
    cgroups = JobCgroups.open(detect(), identity)
    try:
        yield JobHost(identity, UidAllocator(UidRange.parse(DEFAULT_JOB_UIDS)), cgroups)
    finally:
        for name in cgroups.leftovers():
            cgroups.path(name).rmdir()
        cgroups.close()
