"""Leases: queue for a board, wait, keep the job alive while the block runs, give it back."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from boruta_client.errors import (
    BorutaError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    WrongRequestState,
)
from boruta_client.ssh import BoardSSH
from boruta_client.types import Access, Acquired, Job, Request, RequestState

if TYPE_CHECKING:
    from boruta_client.client import Client

log = logging.getLogger(__name__)

# Prolong when this share of the job's first time slice is left (at most MAX_LEAD).
LEAD_SHARE = 1 / 3
MAX_LEAD = timedelta(seconds=60)
# The job timeout a lease asks for while it prolongs by itself: the board of a client that
# died (kill -9, a machine gone) comes free this long after its last prolong at the latest,
# instead of after the scheduler's job_timeout (an hour by default). The price: a live
# client that cannot reach the scheduler for longer than its prolong lead loses its board.
LEASE_JOB_TIMEOUT = timedelta(minutes=5)


def lease_job_timeout(asked: timedelta | None, auto_prolong: bool) -> timedelta | None:
    """The job timeout a lease asks for: the one given, else LEASE_JOB_TIMEOUT when it
    prolongs by itself, else the scheduler's (None), since nobody would prolong a short one."""
    if asked is not None:
        return asked
    return LEASE_JOB_TIMEOUT if auto_prolong else None


def prolong_lead(job: Job, now: datetime) -> timedelta:
    """How long before the job's timeout the lease prolongs it: a share of the time left
    now, which right after a prolong is the scheduler's prolong step, so the lead never
    outgrows the step (that would prolong again at once, and use up the prolong limit)."""
    left = job.timeout_at - now
    return max(min(left * LEAD_SHARE, MAX_LEAD), timedelta(milliseconds=200))


def next_prolong_delay(job: Job, now: datetime, lead: timedelta, moved: bool) -> float:
    """Seconds to sleep before the next ProlongAccess; 0 when it is due."""
    delay = (job.timeout_at - now - lead).total_seconds()
    if not moved:
        # The last prolong changed nothing (the scheduler allows no more yet): back off.
        delay = max(delay, lead.total_seconds() / 2)
    return max(delay, 0.0)


def should_retry_prolong(error: BorutaError) -> bool:
    """A scheduler that is unreachable or slow may answer in time; a limit reached, a job
    that ended or a refusal will not change."""
    final = (FailedPrecondition, NotFound, InvalidArgument, PermissionDenied, Unauthenticated)
    return not isinstance(error, final)


class Board:
    """A board leased for a job: its access, its current job and a lazy SSH connection."""

    def __init__(self, request: Request, acquired: Acquired) -> None:
        self.request = request
        self.access: Access = acquired.access
        self.job: Job = acquired.job
        self.prolong_error: BorutaError | None = None
        self._ssh: BoardSSH | None = None

    @property
    def worker_uuid(self) -> str:
        return self.job.worker_uuid

    @property
    def ssh(self) -> BoardSSH:
        """The SSH connection to the board, opened on first use."""
        if self._ssh is None:
            self._ssh = BoardSSH(self.access)
        return self._ssh

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None


class Lease:
    """``with client.lease(caps) as board:`` queues, waits, keeps the job alive with
    ProlongAccess while the block runs, and closes the request on any way out."""

    def __init__(
        self,
        client: Client,
        caps: Mapping[str, str],
        *,
        priority: int = 0,
        valid_after: datetime | None = None,
        deadline: datetime | None = None,
        wait_timeout: float | None = None,
        no_wait: bool = False,
        accept_unsatisfiable: bool = False,
        on_wait: Callable[[Request], None] | None = None,
        auto_prolong: bool = True,
        existing: int | None = None,
        job_timeout: timedelta | None = None,
    ) -> None:
        self._client = client
        # An existing request is attached to, not created, and left open on exit.
        self._existing = existing
        self._caps = dict(caps)
        self._new = dict(
            priority=priority,
            valid_after=valid_after,
            deadline=deadline,
            accept_unsatisfiable=accept_unsatisfiable,
            no_wait=no_wait,
            job_timeout=lease_job_timeout(job_timeout, auto_prolong),
        )
        self._wait_timeout = wait_timeout
        self._on_wait = on_wait
        self._auto_prolong = auto_prolong
        self.request: Request | None = None
        self.board: Board | None = None
        self._stop = threading.Event()
        self._prolonger: threading.Thread | None = None

    def __enter__(self) -> Board:
        client = self._client
        if self._existing is not None:
            self.request = request = client.get_request(self._existing)
        else:
            # Ctrl-C while NewRequest is in flight must not leave a request nobody closes.
            created, interrupt = client._new_request_shielded(self._caps, **self._new)
            self.request = request = created
            if interrupt is not None:
                self._give_back()
                raise interrupt
        try:
            if self._on_wait is not None and request.state is RequestState.WAITING:
                self._on_wait(client.get_request(request.id))
            acquired = client.acquire_worker(
                request.id, timeout=self._wait_timeout, on_wait=self._on_wait
            )
            self.board = Board(request, acquired)
            if self._auto_prolong:
                self._prolonger = threading.Thread(
                    target=self._keep_alive, name=f"boruta-prolong-{request.id}", daemon=True
                )
                self._prolonger.start()
        except BaseException:
            self._give_back()
            raise
        return self.board

    def __exit__(self, *exc: object) -> None:
        self._give_back()

    def _give_back(self) -> None:
        self._stop.set()
        if self._prolonger is not None:
            self._prolonger.join()
        if self.board is not None:
            self.board.close()
        if self.request is not None and self._existing is None:
            # It may have ended on its own (timeout, failure) or been closed elsewhere.
            with contextlib.suppress(WrongRequestState, NotFound):
                self.request = self._client.close_request(self.request.id)

    def _keep_alive(self) -> None:
        board = self.board
        assert board is not None
        lead = prolong_lead(board.job, datetime.now(UTC))
        moved = True
        while True:
            delay = next_prolong_delay(board.job, datetime.now(UTC), lead, moved)
            if self._stop.wait(delay):
                return
            try:
                job = self._client.prolong_access(board.request.id)
            except BorutaError as error:
                if not should_retry_prolong(error):
                    board.prolong_error = error
                    log.warning(
                        "job not prolonged",
                        extra={"request": board.request.id, "why": str(error)},
                    )
                    return
                if self._stop.wait(1.0):
                    return
                continue
            moved = job.timeout_at > board.job.timeout_at
            board.job = job
            if moved:
                lead = prolong_lead(job, datetime.now(UTC))
