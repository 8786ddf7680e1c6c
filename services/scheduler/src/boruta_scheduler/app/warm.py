"""A standby's warm copy of the live state (design rule 10, issue 11): loaded once, then kept
up to date from the store's change numbers, so that taking over reads only what changed
since the last poll instead of every live request.

The copy holds what Store.load would give, decoded (live requests, every worker and token,
the id counter) and the change number it is as of. A Follower task polls every POLL_S; at
takeover, after the lease is ours (the lease UPDATE waited for the old leader's commit in
flight, and nothing commits under its epoch after), one last read brings the copy up to
date and the core is restored from it. Whenever the copy cannot be trusted (the purge
took a request it had not seen finish, a read or an apply failed) it is dropped and loaded
again; at takeover, the new leader then loads the store cold, as a restart does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from boruta_scheduler.core import Snapshot
from boruta_scheduler.errors import StoreUnavailable
from boruta_scheduler.store.base import ChangedSince
from boruta_scheduler.types import RequestView, StackView, TokenRecord, WorkerView

log = logging.getLogger(__name__)

# How often a standby reads what changed: a takeover then has at most this much to catch up
# with (it reads the rest itself), and each poll is a few indexed reads.
POLL_S = 0.1


class FollowableStore(Protocol):
    """A store that numbers its changes in commit order (PostgreSQL), so that a standby can
    follow it."""

    def live_state(self) -> tuple[Snapshot, int]:
        """What load() gives, as lists, and the change number it is as of."""
        ...

    def changes_since(self, since: int) -> ChangedSince:
        """Every change committed after the change number since, as of one snapshot."""
        ...


class Gap(Exception):
    """The copy missed something it cannot recover from the changes: load it again."""


class WarmCopy:
    """The live state as of change number seq, decoded, kept by id."""

    def __init__(self, snapshot: Snapshot, seq: int) -> None:
        self.requests: dict[int, RequestView] = {r.id: r for r in snapshot.requests}
        self.workers: dict[str, WorkerView] = {w.uuid: w for w in snapshot.workers}
        self.tokens: dict[int, TokenRecord] = {t.id: t for t in snapshot.tokens}
        self.stacks: dict[str, StackView] = {s.name: s for s in snapshot.stacks}
        self.last_request_id = snapshot.last_request_id
        self.last_token_id = snapshot.last_token_id
        self.seq = seq

    def apply(self, changed: ChangedSince) -> None:
        """Bring the copy to changed.seq; raises Gap (changing nothing) if it cannot."""
        if changed.since != self.seq:
            raise Gap(f"changes since {changed.since} applied to a copy as of {self.seq}")
        if changed.gap:
            raise Gap(changed.gap)
        # Rows read are as they stand now; a tombstone of a key that has a row again is of
        # an earlier deletion (the row came back later), so tombstones go first.
        for uuid in changed.removed_workers:
            self.workers.pop(uuid, None)
        for worker in changed.workers:
            self.workers[worker.uuid] = worker
        for token_id in changed.removed_tokens:
            self.tokens.pop(token_id, None)
        for token in changed.tokens:
            self.tokens[token.id] = token
        for name in changed.removed_stacks:
            self.stacks.pop(name, None)
        for stack in changed.stacks:
            self.stacks[stack.name] = stack
        for request in changed.requests:
            if request.state.is_terminal:
                self.requests.pop(request.id, None)
            else:
                self.requests[request.id] = request
        self.last_request_id = changed.last_request_id
        self.last_token_id = changed.last_token_id
        self.seq = changed.seq

    def snapshot(self) -> Snapshot:
        """The copy as Store.load gives it: requests and tokens by id, workers by UUID,
        stacks by name."""
        requests = self.requests
        return Snapshot(
            [requests[i] for i in sorted(requests)],
            [self.workers[u] for u in sorted(self.workers)],
            self.last_request_id,
            [self.tokens[i] for i in sorted(self.tokens)],
            [self.stacks[name] for name in sorted(self.stacks)],
            self.last_token_id,
        )


class Follower:
    """Keeps a WarmCopy of store on the event loop's behalf: reads run on a thread, and the
    copy changes only on the loop, between reads."""

    def __init__(self, store: FollowableStore, poll: float = POLL_S) -> None:
        self._store = store
        self._poll = poll
        self.copy: WarmCopy | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unreachable = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="boruta-follow")

    async def _follow(self) -> None:
        while not self._stopping.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._poll)

    async def step(self) -> None:
        """Load the copy, or bring it up to date; never raises."""
        try:
            if self.copy is None:
                started = time.monotonic()
                snapshot, seq = await asyncio.to_thread(self._store.live_state)
                self.copy = WarmCopy(snapshot, seq)
                log.info(
                    "warm copy loaded",
                    extra={
                        "seq": seq,
                        "live_requests": len(self.copy.requests),
                        "workers": len(self.copy.workers),
                        "seconds": round(time.monotonic() - started, 3),
                    },
                )
            else:
                changed = await asyncio.to_thread(self._store.changes_since, self.copy.seq)
                self.copy.apply(changed)
            if self._unreachable:
                log.info("following the store again")
            self._unreachable = False
        except Gap as exc:
            log.warning("warm copy dropped, loading it again", extra={"why": str(exc)})
            self.copy = None
        except StoreUnavailable as exc:
            # The copy stays good as of its number: the next read catches up.
            if not self._unreachable:
                log.warning("cannot read the store's changes", extra={"error": str(exc)})
            self._unreachable = True
        except Exception:
            log.exception("warm copy dropped after an error, loading it again")
            self.copy = None

    async def stop(self) -> None:
        """Stop following, once the read in progress (if any) is done."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def takeover(self) -> Snapshot | None:
        """Once the lease is ours: the live state from the copy brought up to date, or None
        when there is no copy to trust (then the caller loads the store). The copy is
        handed over: the follower keeps nothing of it."""
        await self.stop()
        copy, self.copy = self.copy, None
        if copy is None:
            log.info("no warm copy to take over from: loading the store")
            return None
        try:
            changed = await asyncio.to_thread(self._store.changes_since, copy.seq)
            copy.apply(changed)
        except (Gap, StoreUnavailable) as exc:
            log.warning("warm copy unusable, loading the store", extra={"why": str(exc)})
            return None
        except Exception:
            log.exception("warm copy unusable after an error, loading the store")
            return None
        log.info(
            "taking over from the warm copy",
            extra={
                "seq": copy.seq,
                "rows_read": changed.rows,
                "live_requests": len(copy.requests),
                "workers": len(copy.workers),
            },
        )
        return copy.snapshot()
