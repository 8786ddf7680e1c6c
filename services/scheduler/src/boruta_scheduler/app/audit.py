"""The audit log: who did what to which request or worker, who was given access to which
board, and who was refused. Events ride in the engine's batches and commit in the same
transaction as the change they record: no extra writes, and never a change without its
event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from boruta_scheduler.app.refusals import Suppressed, ThrottledRefusals
from boruta_scheduler.store import Store
from boruta_scheduler.types import (
    AuditEvent,
    Identity,
    JobView,
    RequestView,
    WorkerState,
    WorkerView,
)

if TYPE_CHECKING:
    from boruta_scheduler.app.engine import Command, Engine
    from boruta_scheduler.core import Core

T = TypeVar("T")
# What an event says of what a command returned: its target and its detail.
Describe = Callable[[T], tuple[str, str]]

log = logging.getLogger(__name__)

# Longest target and detail kept: they may quote what a caller sent.
MAX_TARGET = 200
MAX_DETAIL = 1000
# How much of a new request's caps its event shows.
CAPS_SHOWN = 200


def clip(text: str, limit: int) -> str:
    """The text, cut to at most limit characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    note = f"... ({len(text):,} characters)"
    return text[: max(0, limit - len(note))] + note


class AuditLog:
    """Records events through the engine; admins read them back (newest first)."""

    def __init__(self, engine: Engine, store: Store, refusals_per_minute: int = 60) -> None:
        self._engine = engine
        self._store = store
        self._refusals = ThrottledRefusals(refusals_per_minute, engine.now, self._write)
        self._rate = refusals_per_minute

    def record(
        self, who: Identity, action: str, target: str, detail: str = "", at: float | None = None
    ) -> None:
        """Call inside an engine command to commit with it (at: the time it applies at);
        elsewhere it joins the next batch."""
        now = self._engine.now() if at is None else at
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

    def recorded(
        self, who: Identity, action: str, describe: Describe[T], command: Command[T]
    ) -> Command[T]:
        """The command, recording an event of what it did in the same batch (so in the
        same transaction); a command that fails records nothing."""

        def run(core: Core, now: float) -> T:
            result = command(core, now)
            target, detail = describe(result)
            self.record(who, action, target, detail, at=now)
            return result

        return run

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
        # Every event recorded so far is committed first, so reads see them (while the
        # store refuses writes, those wait, and the store has the rest).
        await self._engine.commit_audit()
        return await asyncio.to_thread(self._store.audit, limit, before)


# ------------------------------------------------------------ what each event says


def _caps_text(caps: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(caps.items())) or "(any)"


def request_created(view: RequestView) -> tuple[str, str]:
    """NewRequest: the request keeps its caps; its event needs only enough of them to
    recognize it."""
    if view.profiles:
        text = "; ".join(
            f"{p.name or index}: {_caps_text(p.caps)}" for index, p in enumerate(view.profiles)
        )
        what = f"profiles {clip(text, CAPS_SHOWN)}"
        if view.together:
            groups = "; ".join(
                f"{', '.join(c.profiles) or 'all'} on one {c.placement.name.lower()}"
                for c in view.together
            )
            what += f", together {clip(groups, CAPS_SHOWN)}"
    else:
        what = f"caps {clip(_caps_text(view.caps), CAPS_SHOWN)}"
    return f"request {view.id}", f"{what}, priority {view.priority}, {view.state.name}"


def request_closed(view: RequestView) -> tuple[str, str]:
    return f"request {view.id}", view.state.name


def request_updated(view: RequestView) -> tuple[str, str]:
    return f"request {view.id}", f"priority {view.priority}"


def access_prolonged(request_id: int) -> Describe[JobView]:
    return lambda job: (f"request {request_id}", f"prolonged {job.prolong_count} times")


def access_handed_out(view: RequestView) -> tuple[str, str]:
    """AcquireWorker: which workers, as which job users (never the keys)."""
    jobs = view.all_jobs
    assert jobs and all(job.access is not None for job in jobs)
    shown = ", ".join(
        f"worker {job.worker_uuid} as {job.access.username}"  # type: ignore[union-attr]
        for job in jobs
    )
    return f"request {view.id}", f"access to {shown}"


def worker_state_set(
    uuid: str, state: WorkerState, reason: str, after_job: bool = False
) -> Describe[WorkerView]:
    """What SetState did, from the board it left: a drain set (the board still RUNNING with
    a drain reason) or called off (IDLE on a board that stays RUNNING)."""

    def describe(view: WorkerView) -> tuple[str, str]:
        when = ""
        if state is WorkerState.MAINTENANCE and view.drain_reason:
            when = " after its job"
        elif state is WorkerState.IDLE and view.state is WorkerState.RUNNING:
            when = " (drain called off; its job goes on)"
        return f"worker {uuid}", f"{state.name}{when}: {reason}".rstrip(": ")

    return describe


def worker_groups_set(uuid: str, groups: frozenset[str]) -> Describe[object]:
    shown = ",".join(sorted(groups)) or "(none)"
    return lambda _: (f"worker {uuid}", shown)


def worker_deregistered(uuid: str) -> Describe[object]:
    return lambda _: (f"worker {uuid}", "")


def stack_created(name: str, workers: tuple[str, ...]) -> Describe[object]:
    return lambda _: (f"stack {name}", f"workers {','.join(workers)}")


def stack_deleted(name: str) -> Describe[object]:
    return lambda _: (f"stack {name}", "")
