"""Refusals counted per caller: the first ones of each caller are let through one by one
(to the audit log, to the log), the rest summed up once a minute, so that whoever can
reach a port cannot write an event or a line per call."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# Refusals of one caller beyond its rate are summed up in one event per this many seconds.
SUMMARY_INTERVAL = 60.0

Caller = tuple[str, str]  # (user, role)
# Callers past the limiter's bound share this one allowance, so memory stays bounded
# whatever names callers make up.
OTHER_CALLERS: Caller = ("(other callers)", "")
MAX_CALLERS = 4096


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
