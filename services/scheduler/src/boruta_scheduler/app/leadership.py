"""Becoming and staying the leader of schedulers that share one PostgreSQL store (design
rule 10), through the lease row of store/leader.py.

A standby tries to take the lease every POLL_S and meanwhile keeps the row it read, to name
the leader to callers. A leader renews every renew seconds; it has lost once a renewal finds
a later epoch, once a commit is fenced (NotLeader), or once it could not renew for a whole
lease (the database may have given the lease away meanwhile). Then `lost` is set and the
process steps down (main.py).
"""

from __future__ import annotations

import asyncio
import logging
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

    async def keep(self) -> None:
        """Renew until the lease is lost; then set lost and return."""
        assert self.epoch is not None
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self._renew)
            try:
                if not await asyncio.to_thread(self._lease.renew, self.epoch):
                    return self.lose("another scheduler took the lease")
                renewed = time.monotonic()
            except StoreUnavailable as exc:
                # Until the lease has run out nobody can have taken over: keep trying.
                if time.monotonic() - renewed >= self._lease.lease:
                    return self.lose(f"could not renew the lease for a whole lease ({exc})")
                log.warning("lease renewal failed", extra={"error": str(exc)})

    def lose(self, why: str) -> None:
        if not self.lost.is_set():
            self.why_lost = why
            log.warning("stepping down", extra={"epoch": self.epoch, "why": why})
            self.lost.set()

    def fenced(self) -> None:
        """From the store's writer thread: a commit found a later epoch."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.lose, "a commit was fenced: another scheduler leads")

    async def release(self) -> None:
        """Hand the lease over at once (a clean stop), rather than after it runs out."""
        if self.epoch is not None and not self.lost.is_set():
            try:
                await asyncio.to_thread(self._lease.release, self.epoch)
            except StoreUnavailable as exc:
                log.warning("could not release the lease", extra={"error": str(exc)})
