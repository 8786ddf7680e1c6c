"""Typed values the client returns: frozen dataclasses, enums and UTC datetimes."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta


class RequestState(enum.Enum):
    """Where a request is in its life; WAITING and IN_PROGRESS are live, the rest terminal."""

    WAITING = 1
    IN_PROGRESS = 2
    CANCELLED = 3
    TIMEOUT = 4
    INVALID = 5
    DONE = 6
    FAILED = 7

    @property
    def live(self) -> bool:
        return self in (RequestState.WAITING, RequestState.IN_PROGRESS)


class WorkerState(enum.Enum):
    """Where a worker (one board) is in its life."""

    MAINTENANCE = 1
    IDLE = 2
    RUNNING = 3
    FAILED = 4
    PREPARE = 5
    BUSY = 6


class FailureKind(enum.Enum):
    """What made a worker FAILED."""

    UNSPECIFIED = 0  # not known
    HEARTBEAT = 1  # its dryad went silent for longer than the heartbeat timeout
    DRYAD_CALL = 2  # a call to its dryad (Prepare, Healthcheck, PutInMaintenance) failed
    REPORTED = 3  # its dryad reported it failed (a local check failed)
    OTHER = 4  # something else the scheduler found wrong


@dataclass(frozen=True, slots=True)
class WorkerFailure:
    """One time a worker entered FAILED."""

    time: datetime
    reason: str
    kind: FailureKind


class PendingCode(enum.Enum):
    """Why a WAITING request waits; when several apply, the first of this list."""

    NO_MATCHING_BOARD = 1  # no registered board (or set of boards) has the caps
    NO_BOARD_IN_GROUPS = 2  # boards with the caps exist, none open to the owner's groups
    NOT_VALID_YET = 3  # its valid_after has not come
    BOARDS_UNAVAILABLE = 4  # no board it could use is IDLE or RUNNING
    HIGHER_PRIORITY = 5  # requests that could use the same boards go first
    WAITING_FOR_SET = 6  # first in line, a request of several boards waits for a set
    BOARDS_BUSY = 7  # first in line, every board it could use is taken
    UNKNOWN = 0  # a code this client does not know (a newer scheduler)


class RequestSort(enum.Enum):
    """Fields a request list can be sorted by."""

    ID = 1
    PRIORITY = 2
    STATE = 3
    VALID_AFTER = 4
    DEADLINE = 5
    UPDATED_AT = 6


class UsageBy(enum.Enum):
    """What usage is summed by: the requests' owner, or the group that granted each board."""

    USER = 1
    GROUP = 2


class WorkerSort(enum.Enum):
    """Fields a worker list can be sorted by."""

    UUID = 1
    STATE = 2
    REGISTERED_AT = 3
    LAST_SEEN = 4


@dataclass(frozen=True, slots=True)
class Job:
    """The job of a matched request: its worker and how long it may run."""

    worker_uuid: str
    started_at: datetime
    timeout_at: datetime
    max_timeout_at: datetime
    prolong_count: int


@dataclass(frozen=True, slots=True)
class Profile:
    """One board a request asks for: the name its owner gave it ("": none) and its caps."""

    name: str
    caps: Mapping[str, str]


# Boards to ask for in one request: caps per name ({"dut": {...}, "relay": {...}}), in
# order, or a sequence of caps for unnamed boards.
Profiles = Mapping[str, Mapping[str, str]] | Sequence[Mapping[str, str]]


class Placement(enum.Enum):
    """Where the boards of a co-located group must be: on one host (one dryad process) or
    in one stack."""

    HOST = 1
    STACK = 2


@dataclass(frozen=True, slots=True)
class Colocation:
    """Profiles of a request whose boards must share one place: their names (empty: every
    profile of the request)."""

    profiles: tuple[str, ...]
    placement: Placement


# Co-located groups to ask for: "host" or "stack" (every board of the request), the
# schedctl syntax ("host:dut,relay;stack:a,b"), or Colocation values.
Together = str | Sequence[Colocation]


@dataclass(frozen=True, slots=True)
class PendingBoard:
    """A board a waiting request could use: who holds it and when it comes free (None: no
    job holds it)."""

    uuid: str
    state: WorkerState
    held_by: int | None = None  # the request running on it or holding it as collateral
    collateral: bool = False
    reserved_for: int | None = None  # the request of several boards it is kept for
    frees_at: datetime | None = None  # the job's timeout, unless prolonged
    frees_at_latest: datetime | None = None  # the job's max_timeout_at


@dataclass(frozen=True, slots=True)
class PendingReason:
    """Why a WAITING request waits (docs/api.md, "Pending reasons")."""

    code: PendingCode
    message: str
    requests_ahead: int
    boards: tuple[PendingBoard, ...] = ()
    boards_total: int = 0
    reserved: tuple[str, ...] = ()
    # When it should start if no job is prolonged, and at the latest; None: no estimate.
    expected_start: datetime | None = None
    latest_start: datetime | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the scheduler knows it (queue_position only from get_request; the
    pending reason from get_request and list_requests, for a waiting request)."""

    id: int
    priority: int
    owner: str
    owner_groups: frozenset[str]
    caps: Mapping[str, str]
    valid_after: datetime
    deadline: datetime
    state: RequestState
    reason: str
    created_at: datetime
    updated_at: datetime
    job: Job | None = None
    queue_position: int | None = None
    # The job timeout the request asked for; None: the scheduler's.
    job_timeout: timedelta | None = None
    # A request made with profiles: every profile, and once matched one job per profile
    # (job is jobs[0]); both empty for a request of caps alone.
    profiles: tuple[Profile, ...] = ()
    jobs: tuple[Job, ...] = ()
    pending_reason: PendingReason | None = None
    # Groups of profiles whose boards share one host or stack, as asked for.
    together: tuple[Colocation, ...] = ()


@dataclass(frozen=True, slots=True)
class Access:
    """How to log in to a job's board over SSH; private_key_pem is secret. host_keys are the
    board's SSH host keys (OpenSSH public key lines), empty when its dryad reported none."""

    host: str
    port: int
    username: str
    private_key_pem: str = field(repr=False)
    host_keys: tuple[str, ...] = ()

    @property
    def known_hosts_name(self) -> str:
        """The host as OpenSSH's known_hosts names it: [host]:port unless the port is 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def known_hosts(self) -> str:
        """known_hosts lines for the board, one per host key ("" when there are none)."""
        return "".join(f"{self.known_hosts_name} {key}\n" for key in self.host_keys)


@dataclass(frozen=True, slots=True)
class AcquiredBoard:
    """The access to, and the job of, one profile's board."""

    name: str
    access: Access
    job: Job


@dataclass(frozen=True, slots=True)
class Acquired:
    """What AcquireWorker returns: the access and the job (the first profile's), and for a
    request made with profiles each board's, in profile order."""

    access: Access
    job: Job
    boards: tuple[AcquiredBoard, ...] = ()


@dataclass(frozen=True, slots=True)
class HostStatus:
    """Resource usage of a board's host, from its latest heartbeat."""

    load_1m: float
    memory_total_bytes: int
    memory_available_bytes: int
    disk_free_bytes: int
    uptime: timedelta


@dataclass(frozen=True, slots=True)
class Worker:
    """A worker (one board) as the scheduler knows it."""

    uuid: str
    state: WorkerState
    groups: frozenset[str]
    caps: Mapping[str, str]
    dryad_address: str
    ssh_address: str
    reason: str
    request_id: int | None
    registered_at: datetime
    last_seen: datetime
    jobs_done: int
    failures: int
    dryad_version: str
    host_status: HostStatus | None = None
    # Its stack ("" for none), and the request holding it as collateral (None for none).
    stack: str = ""
    collateral_of: int | None = None
    # Its latest failures, newest first; failures per day over the last week; and whether
    # the scheduler quarantined it (MAINTENANCE after too many failures, until an admin
    # sets it IDLE).
    recent_failures: tuple[WorkerFailure, ...] = ()
    failures_per_day: float = 0.0
    quarantined: bool = False
    # Non-empty while it is draining: RUNNING, it takes no new job and goes into
    # MAINTENANCE with this reason when its job ends (set_worker_state with after_job).
    drain_reason: str = ""


@dataclass(frozen=True, slots=True)
class Stack:
    """Workers wired together (admins make stacks): while a request runs on one of them,
    holder, the others are its collateral and no other request is given them."""

    name: str
    worker_uuids: tuple[str, ...]
    created_at: datetime
    holder: int | None = None


@dataclass(frozen=True, slots=True)
class AllocatedBoard:
    """One board a running request holds for one profile: its worker, host (the dryad's
    address) and stack ("": none)."""

    profile: str
    worker_uuid: str
    dryad_address: str
    stack: str


@dataclass(frozen=True, slots=True)
class Allocation:
    """What a running request holds: a board per profile, and the collateral of their
    stacks (worker UUIDs)."""

    request_id: int
    owner: str
    boards: tuple[AllocatedBoard, ...]
    collateral: tuple[str, ...]
    started_at: datetime
    timeout_at: datetime


@dataclass(frozen=True, slots=True)
class WorkerChange:
    """One change of a worker seen by a watch; removed means it was deregistered."""

    worker: Worker
    removed: bool = False


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One state change of a worker; from_state is None for its first registration."""

    time: datetime
    from_state: WorkerState | None
    to_state: WorkerState
    reason: str


@dataclass(frozen=True, slots=True)
class Caller:
    """Who the scheduler takes this client to be (from its certificate or token)."""

    user: str
    groups: frozenset[str]
    admin: bool
    # The bearer token's id; None when the client came with a certificate.
    token_id: int | None


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token as admins see it; never its secret."""

    id: int
    user: str
    groups: frozenset[str]
    admin: bool
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    issued_by: str
    description: str


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token and its secret, shown this once."""

    token: Token
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One thing someone did, or was refused, as the audit log keeps it."""

    id: int
    time: datetime
    actor: str
    role: str
    action: str
    target: str
    detail: str


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """One owner's or group's usage over a period (docs/api.md, "Usage")."""

    key: str  # the owner, or the group ("(open)": boards with no group; "(none)": unstarted)
    board_time: timedelta  # job time inside the period, summed over boards
    jobs: int  # jobs (one per board) that started in the period
    requests: int  # requests that started in the period
    wait_time: timedelta  # their waits (created to started), summed
    max_wait: timedelta
    unstarted: int  # requests that ended in the period without starting
    unstarted_wait_time: timedelta  # their waits (created to ended), summed

    @property
    def mean_wait(self) -> timedelta:
        """The mean wait of the requests that started (zero if none did)."""
        return self.wait_time / self.requests if self.requests else timedelta(0)


@dataclass(frozen=True, slots=True)
class Usage:
    """Usage over [since, until), one entry per owner or group with any, by key."""

    since: datetime
    until: datetime
    by: UsageBy
    totals: tuple[UsageTotals, ...]
