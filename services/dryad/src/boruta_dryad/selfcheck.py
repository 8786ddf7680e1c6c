"""The dryad's own watch over its boards: the health checks every checks.interval while a
board is in service, and SetFail after checks.fail_after failing rounds in a row, so that a
board that breaks between jobs is taken out before a user gets it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from boruta_dryad.health import Check, run_checks

if TYPE_CHECKING:
    from boruta_dryad.agent import SchedulerLink
    from boruta_dryad.metrics import DryadMetrics
    from boruta_dryad.servicer import Board

log = logging.getLogger(__name__)

# The longest reason sent: the scheduler keeps reasons of up to 1024 characters.
MAX_REASON = 900


def failure_reason(checks: Sequence[Check], rounds: int) -> str:
    """What SetFail says: every failing check with its detail."""
    failing = "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok)
    return f"local checks failed {rounds} times in a row: {failing}"[:MAX_REASON]


class FailCounter:
    """Failing rounds in a row of one board; says when to report it (pure, tested alone)."""

    def __init__(self, fail_after: int) -> None:
        self.fail_after = fail_after
        self.failing = 0

    def round(self, healthy: bool) -> bool:
        """Count one round; True when the board must be reported failed now (the count
        starts again after a report, or after a healthy round)."""
        if healthy:
            self.failing = 0
            return False
        self.failing += 1
        if self.failing >= self.fail_after:
            self.failing = 0
            return True
        return False


class SelfChecks:
    """One task per board that checks it while the scheduler says it is in service."""

    def __init__(
        self,
        boards: Mapping[str, Board],
        link: SchedulerLink,
        metrics: DryadMetrics | None = None,
        run: Callable[[Board], Awaitable[list[Check]]] | None = None,
    ) -> None:
        self._boards = boards
        self._link = link
        self._metrics = metrics
        self._run = run or (lambda board: run_checks(board.config, board.backend))
        self._tasks: list[asyncio.Task[None]] = []
        # Reports sent per board, for tests and logs.
        self.reported: dict[str, int] = dict.fromkeys(boards, 0)

    def start(self) -> None:
        for uuid, board in self._boards.items():
            if board.config.checks.interval > 0:
                self._tasks.append(asyncio.create_task(self._watch(uuid, board)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _watch(self, uuid: str, board: Board) -> None:
        checks_config = board.config.checks
        counter = FailCounter(checks_config.fail_after)
        while True:
            await asyncio.sleep(checks_config.interval)
            if not self._link.in_service(uuid):
                counter.failing = 0
                continue
            epoch = self._link.check_epoch(uuid)
            try:
                checks = await self._run(board)
            except Exception as exc:  # a bug in a check must not end the watch
                log.error("local checks could not run", extra={"worker": uuid, "error": str(exc)})
                continue
            if self._link.check_epoch(uuid) != epoch:
                # Begun before the board left or entered service, or before a Prepare ran
                # the checks anew: a board fixed meanwhile must not be failed by it.
                counter.failing = 0
                log.info("local checks superseded", extra={"worker": uuid})
                continue
            if self._metrics is not None:
                self._metrics.checked(uuid, checks)
            healthy = all(c.ok for c in checks)
            if not counter.round(healthy):
                if not healthy:
                    log.warning(
                        "local checks failed",
                        extra={"worker": uuid, "failing": counter.failing},
                    )
                continue
            reason = failure_reason(checks, checks_config.fail_after)
            try:
                await self._link.set_fail(uuid, reason)
            except Exception as exc:  # the scheduler away: the next rounds report again
                log.error("cannot report a failed board", extra={"worker": uuid, "error": str(exc)})
                continue
            self.reported[uuid] += 1
            log.warning("reported the board failed", extra={"worker": uuid, "reason": reason})
