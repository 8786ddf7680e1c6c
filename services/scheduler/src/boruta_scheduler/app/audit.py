"""The audit log: who did what to which request or worker, who was given access to which
board, and who was refused. Events ride in the engine's batches and commit in the same
transaction as the change they record: no extra writes, and never a change without its
event."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from boruta_scheduler.store import Store
from boruta_scheduler.types import AuditEvent, Identity

if TYPE_CHECKING:
    from boruta_scheduler.app.engine import Engine

log = logging.getLogger(__name__)

# Longest target and detail kept: they may quote what a caller sent.
MAX_TARGET = 200
MAX_DETAIL = 1000
# Refusals of one caller beyond its rate are summed up in one event per this many seconds.
SUMMARY_INTERVAL = 60.0

Caller = tuple[str, str]  # (user, role)
# Callers past the limiter's bound share this one allowance, so memory stays bounded
# whatever names callers make up.
OTHER_CALLERS: Caller = ("(other callers)", "")
MAX_CALLERS = 4096


def clip(text: str, limit: int) -> str:
    """The text, cut to at most limit characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    note = f"... ({len(text):,} characters)"
    return text[: max(0, limit - len(note))] + note


@dataclass(slots=True)
class _Allowance:
    """One caller's token bucket, and the refusals it left unrecorded since `since`."""

    tokens: float
    last: float
    suppressed: Counter[str] = field(default_factory=Counter)
    since: float = 0.0


@dataclass(frozen=True, slots=True)
class Suppressed:
    """Refusals of one caller that were counted instead of recorded, per call."""

    caller: Caller
    calls: Counter[str]
    since: float
    until: float

    @property
    def count(self) -> int:
        return sum(self.calls.values())


class RefusalLimiter:
    """Which refusals to record one by one: per caller, up to per_minute at once and then
    per_minute a minute (a token bucket); the rest are counted and handed out as one
    Suppressed per caller once SUMMARY_INTERVAL has passed since the first of them.
    Beyond max_callers callers at once, new ones share the allowance OTHER_CALLERS."""

    def __init__(
        self, per_minute: int, interval: float = SUMMARY_INTERVAL, max_callers: int = MAX_CALLERS
    ) -> None:
        if per_minute < 0:
            raise ValueError("the refusal audit rate must not be negative")
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._interval = interval
        self._max_callers = max_callers
        self._callers: dict[Caller, _Allowance] = {}
        self._sweep_at = min(1024, max_callers)
        self._full_until = float("-inf")

    def __len__(self) -> int:
        """How many callers it keeps an allowance for."""
        return len(self._callers)

    @property
    def pending(self) -> bool:
        """Whether some refusals wait to be summed up."""
        return any(a.suppressed for a in self._callers.values())

    def admit(self, caller: Caller, call: str, now: float) -> bool:
        """Whether to record this refusal; if not, it is counted."""
        allowance = self._callers.get(caller)
        if allowance is None:
            if len(self._callers) >= self._sweep_at and now >= self._full_until:
                self._sweep(now)
            if len(self._callers) >= self._max_callers:
                caller = OTHER_CALLERS
                allowance = self._callers.get(caller)
            if allowance is None:
                allowance = self._callers[caller] = _Allowance(self._capacity, now)
        allowance.tokens = min(
            self._capacity, allowance.tokens + max(0.0, now - allowance.last) * self._rate
        )
        allowance.last = now
        if allowance.tokens >= 1.0:
            allowance.tokens -= 1.0
            return True
        if not allowance.suppressed:
            allowance.since = now
        allowance.suppressed[call] += 1
        return False

    def due(self, now: float, *, everything: bool = False) -> list[Suppressed]:
        """Counts whose interval has passed (with everything: all counts), forgotten here."""
        out = []
        for caller, allowance in self._callers.items():
            if allowance.suppressed and (everything or now >= allowance.since + self._interval):
                out.append(Suppressed(caller, allowance.suppressed, allowance.since, now))
                allowance.suppressed = Counter()
        return out

    def _sweep(self, now: float) -> None:
        """Forget callers whose bucket has filled up again: a new one is the same."""
        self._callers = {
            caller: a
            for caller, a in self._callers.items()
            if a.suppressed or a.tokens + (now - a.last) * self._rate < self._capacity
        }
        self._sweep_at = min(self._max_callers, max(1024, 2 * len(self._callers)))
        # Still full: sweep again only a second later, not once per new caller.
        self._full_until = now + 1.0 if len(self._callers) >= self._max_callers else now


class ThrottledRefusals:
    """A RefusalLimiter on a clock whose summaries go to `write` when due, by a timer on
    the running event loop."""

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float],
        write: Callable[[list[Suppressed]], None],
    ) -> None:
        self._limiter = RefusalLimiter(per_minute)
        self._clock = clock
        self._write = write
        self._flush: asyncio.TimerHandle | None = None

    def admit(self, caller: Caller, call: str) -> bool:
        """Whether to record this refusal one by one; if not, it is counted."""
        if self._limiter.admit(caller, call, self._clock()):
            return True
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(SUMMARY_INTERVAL, self.flush)
        return False

    def flush(self, *, everything: bool = False) -> None:
        """Write the summaries that are due (all of them with everything, e.g. on stop)."""
        self._flush = None
        self._write(self._limiter.due(self._clock(), everything=everything))
        if self._limiter.pending and not everything:
            self._flush = asyncio.get_running_loop().call_later(SUMMARY_INTERVAL / 4, self.flush)

    def close(self) -> None:
        """Write every pending summary and stop the timer."""
        if self._flush is not None:
            self._flush.cancel()
        self.flush(everything=True)


class AuditLog:
    """Records events through the engine; admins read them back (newest first)."""

    def __init__(self, engine: Engine, store: Store, refusals_per_minute: int = 60) -> None:
        self._engine = engine
        self._store = store
        self._refusals = ThrottledRefusals(refusals_per_minute, engine.now, self._write)
        self._rate = refusals_per_minute

    def record(self, who: Identity, action: str, target: str, detail: str = "") -> None:
        """Call inside an engine command to commit with it; elsewhere it joins the next batch."""
        now = self._engine.now()
        self._engine.audit(
            AuditEvent(
                now,
                who.user,
                who.role.value,
                action,
                clip(target, MAX_TARGET),
                clip(detail, MAX_DETAIL),
            )
        )

    def refused(self, who: Identity, call: str, why: str) -> None:
        """Record a refused call, unless this caller is over its rate: then it is counted,
        and one event per caller and interval says how many were left out."""
        if self._refusals.admit((who.user, who.role.value), call):
            self.record(who, "refused", call, why)

    def close(self) -> None:
        """Write every pending summary and stop the timer; call before the engine stops."""
        self._refusals.close()

    def _write(self, summaries: list[Suppressed]) -> None:
        for summary in summaries:
            user, role = summary.caller
            calls = ", ".join(f"{call} {n}" for call, n in summary.calls.most_common())
            detail = (
                f"{summary.count} more refusals of {user} suppressed in "
                f"{summary.until - summary.since:.0f} s (more than {self._rate} a minute): "
                f"{calls}"
            )
            log.warning("refusals suppressed", extra={"caller": user, "count": summary.count})
            self._engine.audit(
                AuditEvent(
                    summary.until,
                    user,
                    role,
                    "refusals suppressed",
                    clip(", ".join(summary.calls), MAX_TARGET),
                    clip(detail, MAX_DETAIL),
                )
            )

    async def events(self, who: Identity, limit: int, before: int | None) -> list[AuditEvent]:
        # A batch of its own commits every event recorded so far, so reads see them
        # (while the store refuses writes, those wait, and the store has the rest).
        await self._engine.read(lambda core, now: None)
        return await asyncio.to_thread(self._store.audit, limit, before)
