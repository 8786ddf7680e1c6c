"""A store outage: the store refuses writes. What callers, admins and the audit log hear
of it; the engine does the recovery."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from boruta_scheduler.errors import BorutaError, InternalError, StoreUnavailable
from boruta_scheduler.types import AuditEvent

log = logging.getLogger(__name__)

# Backoff between attempts to write to a store that refused a commit, in seconds.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0
# Who the audit log names for what the scheduler did by itself.
SCHEDULER_ACTOR = "boruta-scheduler"


@dataclass(slots=True)
class Outage:
    """The store refuses writes: why, since when, and whether reads may use the core yet."""

    cause: str  # for callers, e.g. "disk full"
    detail: str  # for admins: with the file and the store's own words
    since: float
    refused: int = 0
    rebuilt: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def begin(cls, error: BaseException, now: float) -> Outage:
        """The outage a failed commit starts, logged for admins."""
        cause, detail = cause_of(error)
        log.error(
            "the store refuses writes; refusing them too until it accepts them again, "
            "answering reads meanwhile",
            extra={"cause": detail},
        )
        return cls(cause, detail, now)

    def error(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"the scheduler cannot store changes now ({self.cause}); nothing of this call "
            "was kept. It keeps answering reads and retries by itself: retry later"
        )

    def still_refused(self, error: BaseException) -> None:
        """Another attempt failed: keep its cause, and tell admins when the cause changed."""
        cause, detail = cause_of(error)
        if detail != self.detail:
            log.warning("the store still refuses writes", extra={"cause": detail})
        self.cause, self.detail = cause, detail

    def event(self, now: float) -> AuditEvent:
        """The admins' record of the outage, committed as the write that ends it."""
        return AuditEvent(
            now,
            SCHEDULER_ACTOR,
            "scheduler",
            "StoreOutage",
            "store",
            f"refused writes for {now - self.since:.0f} s ({self.detail}); "
            f"{self.refused} calls were answered UNAVAILABLE",
        )

    def ended(self, now: float) -> None:
        log.warning(
            "the store accepts writes again",
            extra={
                "seconds": round(now - self.since, 1),
                "cause": self.detail,
                "refused_calls": self.refused,
            },
        )


def cause_of(error: BaseException) -> tuple[str, str]:
    """(for callers, for admins): why the store refused. Anything but StoreUnavailable
    is a bug, logged with its traceback under an error id."""
    if isinstance(error, StoreUnavailable):
        return error.cause, str(error)
    if isinstance(error, BorutaError):
        return str(error), str(error)
    internal = str(InternalError.logged(log, "the store failed", error))
    return internal, internal
