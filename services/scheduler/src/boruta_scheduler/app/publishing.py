"""Applied batches waiting for their commit: each is published once it and every batch
before it is durable, in batch order, so nobody hears of a change before it is stored."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from boruta_scheduler.core import Changes, Core
from boruta_scheduler.types import AuditEvent

T = TypeVar("T")


@dataclass(slots=True)
class Pending(Generic[T]):
    """A queued command and the future its caller awaits (None: nobody waits)."""

    command: Callable[[Core, float], T]
    future: asyncio.Future[T] | None
    # Releases what a result holds outside the core (e.g. a watch's subscription) when
    # the result is thrown away because its batch was lost.
    discard: Callable[[T], None] | None = None
    # When the engine received it (its clock): what it is applied at.
    received: float = -math.inf


# A command's result or the BorutaError it raised, for its caller once the batch is durable.
Reply = tuple[Pending[Any], Any, BaseException | None]


@dataclass(slots=True)
class Batch:
    commit: asyncio.Future[None] | None  # the commit to wait for, if any
    changes: Changes
    replies: list[Reply]
    # Audit events recorded outside any command (e.g. access handed out, refusals): facts
    # that stand even if the batch is lost, so they go with the next one then.
    carried: list[AuditEvent]


class PublishQueue:
    """Batches applied but not yet published, oldest first. A batch goes to publish once
    its commit succeeded; a failed commit goes to store_failed and stops the queue there."""

    def __init__(
        self,
        publish: Callable[[Changes, list[Reply]], None],
        store_failed: Callable[[BaseException], None],
    ) -> None:
        self._publish = publish
        self._store_failed = store_failed
        self._batches: deque[Batch] = deque()
        self.last_commit: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._batches)

    def add(
        self,
        changes: Changes,
        replies: list[Reply],
        carried: list[AuditEvent],
        commit: asyncio.Future[None] | None,
    ) -> None:
        """Queue a batch behind its commit, or, if it committed nothing, behind the last
        commit still on its way (published at once if there is none)."""
        if commit is not None:
            self.last_commit = commit
            commit.add_done_callback(self._publish_ready)
        else:
            last = self.last_commit
            commit = last if last is not None and not last.done() else None
        self._batches.append(Batch(commit, changes, replies, carried))
        if commit is None:
            self._publish_ready()

    def lose(self) -> list[Batch]:
        """Take every batch out unpublished, oldest first: a commit failed, and each was
        built on it. Their commits' errors count as handled."""
        batches, self._batches = self._batches, deque()
        self.last_commit = None
        for batch in batches:
            if batch.commit is not None:
                batch.commit.add_done_callback(_seen)
        return list(batches)

    def fail(self, error: BaseException) -> None:
        """Raise error in every caller of a queued batch: the engine stopped for good."""
        for batch in self._batches:
            for pending, _, _ in batch.replies:
                if pending.future is not None and not pending.future.done():
                    pending.future.set_exception(error)
        self._batches.clear()

    def _publish_ready(self, _: object = None) -> None:
        while self._batches:
            batch = self._batches[0]
            commit = batch.commit
            if commit is not None:
                if not commit.done():
                    return
                error = None if commit.cancelled() else commit.exception()
                if error is not None:
                    self._store_failed(error)
                    return
            self._batches.popleft()
            self._publish(batch.changes, batch.replies)


def _seen(future: asyncio.Future[Any]) -> None:
    """Mark a lost commit's error as handled, so asyncio does not log it as forgotten."""
    if not future.cancelled():
        future.exception()
