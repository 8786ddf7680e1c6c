"""Becoming and staying the leader of schedulers that share one PostgreSQL store (design
rule 10), through the lease row of store/leader.py.

A standby tries to take the lease every POLL_S and meanwhile keeps the row it read, to name
the leader to callers. A leader renews every renew seconds, from a thread of its own (a
busy event loop must not cost the lead); it has lost once a renewal finds a later epoch,
once a commit is fenced (NotLeader), or once it could not renew for a whole lease (the
database may have given the lease away meanwhile). Then `lost` is set and the process
steps down (main.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING

from boruta_scheduler.errors import StoreUnavailable

if TYPE_CHECKING:  # psycopg only where a PostgreSQL store is used
    from boruta_scheduler.store.leader import Candidate, LeaderInfo, LeaderLease

log = logging.getLogger(__name__)

# How often a standby tries to take the lease: a few tenths of a second of the takeover
# budget, one single-row UPDATE each.
POLL_S = 0.1


class Leadership:
    """The lease as one scheduler sees it: epoch once leading, the known leader before."""

    def __init__(self, lease: LeaderLease, renew: float) -> None:
        self._lease = lease
        self._renew = renew
        self.epoch: int | None = None
        self.known: LeaderInfo | None = None
        self.lost = asyncio.Event()
        self.why_lost = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unreachable = False
        self._stopping = threading.Event()
        self._keeper: threading.Thread | None = None

    def leader_address(self, tokens: bool) -> str:
        """The live leader's address of the kind asked (token port or not), or ""."""
        known = self.known
        if known is None or not known.live:
            return ""
        return known.token_address if tokens else known.address

    async def acquire(self, me: Candidate) -> int:
        """Wait until the lease is ours (me: who we are, where clients find us); returns
        our epoch."""
        while True:
            epoch = await self.try_acquire(me)
            if epoch is not None:
                return epoch
            await asyncio.sleep(POLL_S)

    async def try_acquire(self, me: Candidate) -> int | None:
        """Take the lease if it has run out (our epoch), else read who holds it (None)."""
        self._loop = asyncio.get_running_loop()
        try:
            epoch = await asyncio.to_thread(self._lease.acquire, me)
            if epoch is not None:
                self.epoch = epoch
                log.info("leading", extra={"epoch": epoch, "holder": me.holder})
                return epoch
            known = await asyncio.to_thread(self._lease.current)
            if self.known is None or known.holder != self.known.holder:
                log.info("following", extra={"leader": known.holder, "epoch": known.epoch})
            self.known = known
            self._unreachable = False
        except StoreUnavailable as exc:
            self.known = None
            if not self._unreachable:  # once per outage, not every poll
                log.warning("cannot reach the lease", extra={"error": str(exc)})
            self._unreachable = True
        return None

    def keep(self) -> None:
        """Renew from a thread of our own until the lease is lost (then set lost) or stop()
        is called: a busy or blocked event loop (a long restore) must not cost the lead."""
        assert self.epoch is not None and self._loop is not None
        self._keeper = threading.Thread(
            target=self._renewing, args=(self.epoch, self._loop), name="boruta-lease", daemon=True
        )
        self._keeper.start()

    def _renewing(self, epoch: int, loop: asyncio.AbstractEventLoop) -> None:
        renewed = time.monotonic()
        while not self._stopping.wait(self._renew):
            try:
                if not self._lease.renew(epoch):
                    return self._lose_from_thread(loop, "another scheduler took the lease")
                renewed = time.monotonic()
            except StoreUnavailable as exc:
                # Until the lease has run out nobody can have taken over: keep trying.
                if time.monotonic() - renewed >= self._lease.lease:
                    why = f"could not renew the lease for a whole lease ({exc})"
                    return self._lose_from_thread(loop, why)
                log.warning("lease renewal failed", extra={"error": str(exc)})

    def _lose_from_thread(self, loop: asyncio.AbstractEventLoop, why: str) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(self.lose, why)

    def stop(self) -> None:
        """Stop renewing (the lease then runs out, unless released)."""
        self._stopping.set()
        if self._keeper is not None:
            self._keeper.join()

    def lose(self, why: str) -> None:
        if not self.lost.is_set():
            self.why_lost = why
            log.warning("stepping down", extra={"epoch": self.epoch, "why": why})
            self.lost.set()

    def fenced(self) -> None:
        """From the store's writer thread: a commit found a later epoch."""
        if self._loop is not None:
            self._lose_from_thread(self._loop, "a commit was fenced: another scheduler leads")

    async def release(self) -> None:
        """Hand the lease over at once (a clean stop), rather than after it runs out."""
        if self.epoch is not None and not self.lost.is_set():
            try:
                await asyncio.to_thread(self._lease.release, self.epoch)
            except StoreUnavailable as exc:
                log.warning("could not release the lease", extra={"error": str(exc)})
