"""What the core hands out: changed records to store and publish, and dryad calls to make."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from boruta_scheduler.core.model import Request, Worker
from boruta_scheduler.types import (
    AuditEvent,
    HistoryEntry,
    JobUsage,
    RequestView,
    StackView,
    TokenRecord,
    WorkerView,
)


class DryadCallKind(enum.Enum):
    """Which Dryad RPC the scheduler should make."""

    PREPARE = "Prepare"
    PUT_IN_MAINTENANCE = "PutInMaintenance"
    HEALTHCHECK = "Healthcheck"


@dataclass(frozen=True, slots=True)
class DryadCall:
    """A request to call a worker's dryad; the result comes back as a core command."""

    op_id: int
    worker_uuid: str
    kind: DryadCallKind
    address: str
    message: str = ""
    # Prepare only: the dryad runs the board's health checks first and prepares only a
    # healthy board, so that no Healthcheck call of its own is needed.
    healthcheck_first: bool = False


@dataclass(frozen=True, slots=True)
class OpenTunnel:
    """Open a job's tunnel to the board's SSH address, on port if it is free (0: any);
    index is the job's profile (0 for a request of one board)."""

    request_id: int
    ssh_address: str
    port: int = 0
    index: int = 0


@dataclass(frozen=True, slots=True)
class CloseTunnel:
    """Close a job's tunnel and cut its open connections."""

    request_id: int
    index: int = 0


TunnelCall = OpenTunnel | CloseTunnel


# One empty set for every batch without rebuildable workers (most), not one each.
NO_WORKERS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Changes:
    """Everything that changed since the last drain, in the order it happened."""

    requests: list[RequestView] = field(default_factory=list)
    workers: list[WorkerView] = field(default_factory=list)
    removed_workers: list[WorkerView] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    last_seen: dict[str, float] = field(default_factory=dict)
    calls: list[DryadCall] = field(default_factory=list)
    tunnels: list[TunnelCall] = field(default_factory=list)
    last_request_id: int = 0
    # Requests (by id) among `requests` whose only change is a fact a restart rebuilds (the
    # port their tunnel opened on): published like the rest, but no reason for a commit.
    rebuildable: set[int] = field(default_factory=set)
    # Workers (by UUID) among `workers` whose only change is one a restart rebuilds (IDLE
    # once Prepare answered: a restart prepares a board in PREPARE again), and how many of
    # `history` are their entries: published like the rest, but no reason for a commit.
    rebuildable_workers: frozenset[str] = NO_WORKERS
    rebuildable_history: int = 0
    # Who did what, added by the engine: it commits with the changes it records.
    audit: list[AuditEvent] = field(default_factory=list)
    # Tokens issued or revoked, each as it is now, and the ids of tokens purged (a tuple:
    # the empty one is shared by every batch, which most purge nothing).
    tokens: list[TokenRecord] = field(default_factory=list)
    removed_tokens: tuple[int, ...] = ()
    # Stacks deleted (by name) and stacks created: a store deletes first, then creates.
    stacks: list[StackView] = field(default_factory=list)
    removed_stacks: list[str] = field(default_factory=list)
    # Usage records of jobs that started or ended, and of requests that ended unstarted.
    usage: list[JobUsage] = field(default_factory=list)

    @property
    def durable(self) -> bool:
        """Whether anything here must reach the store before callers hear of it."""
        return bool(
            len(self.requests) > len(self.rebuildable)
            or len(self.workers) > len(self.rebuildable_workers)
            or len(self.history) > self.rebuildable_history
            or self.removed_workers
            or self.last_seen
            or self.audit
            or self.tokens
            or self.removed_tokens
            or self.stacks
            or self.removed_stacks
            or self.usage
        )


def merge(batches: list[Changes]) -> Changes:
    """One Changes equal to applying the batches in order (later views win)."""
    if len(batches) == 1:
        return batches[0]
    merged = Changes()
    removed_tokens: list[int] = []
    stacks: dict[str, StackView] = {}
    for changes in batches:
        merged.requests.extend(changes.requests)
        merged.workers.extend(changes.workers)
        merged.removed_workers.extend(changes.removed_workers)
        merged.history.extend(changes.history)
        merged.last_seen.update(changes.last_seen)
        merged.calls.extend(changes.calls)
        merged.tunnels.extend(changes.tunnels)
        merged.audit.extend(changes.audit)
        merged.tokens.extend(changes.tokens)
        removed_tokens.extend(changes.removed_tokens)
        merged.usage.extend(changes.usage)
        # Within a batch deletions come first; a later batch's undoes an earlier creation.
        for name in changes.removed_stacks:
            stacks.pop(name, None)
            merged.removed_stacks.append(name)
        for stack in changes.stacks:
            stacks[stack.name] = stack
    return Changes(
        requests=merged.requests,
        workers=merged.workers,
        removed_workers=merged.removed_workers,
        history=merged.history,
        last_seen=merged.last_seen,
        calls=merged.calls,
        tunnels=merged.tunnels,
        last_request_id=max(c.last_request_id for c in batches),
        audit=merged.audit,
        tokens=merged.tokens,
        removed_tokens=tuple(removed_tokens),
        stacks=list(stacks.values()),
        removed_stacks=merged.removed_stacks,
        usage=merged.usage,
    )


class Outbox:
    """Collects dirty records; views are taken only at drain, once per record."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._requests: dict[int, Request] = {}
        self._rebuildable: dict[int, Request] = {}
        self._workers: dict[str, Worker] = {}
        self._rebuildable_workers: dict[str, Worker] = {}
        self._removed: list[WorkerView] = []
        self._history: list[HistoryEntry] = []
        self._seen: dict[str, float] = {}
        self._calls: list[DryadCall] = []
        self._tunnels: list[TunnelCall] = []
        self._tokens: dict[int, TokenRecord] = {}
        self._removed_tokens: list[int] = []
        self._stacks: dict[str, StackView] = {}
        self._removed_stacks: list[str] = []
        self._usage: list[JobUsage] = []

    def request(self, request: Request) -> None:
        self._requests[request.id] = request

    def rebuildable(self, request: Request) -> None:
        """The request changed only in what a restart rebuilds (see Changes.rebuildable)."""
        self._rebuildable[request.id] = request

    def worker(self, worker: Worker) -> None:
        self._workers[worker.uuid] = worker

    def rebuildable_worker(self, worker: Worker) -> None:
        """The worker changed only in what a restart rebuilds (see
        Changes.rebuildable_workers)."""
        self._rebuildable_workers[worker.uuid] = worker

    def removed(self, worker: Worker) -> None:
        self._workers.pop(worker.uuid, None)
        self._rebuildable_workers.pop(worker.uuid, None)
        self._seen.pop(worker.uuid, None)
        self._removed.append(worker.view())

    def history(self, entry: HistoryEntry) -> None:
        self._history.append(entry)

    def seen(self, worker: Worker) -> None:
        self._seen[worker.uuid] = worker.last_seen

    def call(self, call: DryadCall) -> None:
        self._calls.append(call)

    def tunnel(self, call: TunnelCall) -> None:
        self._tunnels.append(call)

    def token(self, record: TokenRecord) -> None:
        self._tokens[record.id] = record

    def removed_token(self, token_id: int) -> None:
        self._tokens.pop(token_id, None)
        self._removed_tokens.append(token_id)

    def stack(self, view: StackView) -> None:
        self._stacks[view.name] = view

    def removed_stack(self, name: str) -> None:
        self._stacks.pop(name, None)
        self._removed_stacks.append(name)

    def usage(self, record: JobUsage) -> None:
        self._usage.append(record)

    def drain(self, last_request_id: int) -> Changes:
        workers = [w.view() for w in self._workers.values()]
        rebuildable_workers: frozenset[str] = NO_WORKERS
        rebuildable_history = 0
        if self._rebuildable_workers:
            rebuildable_workers = frozenset(
                uuid for uuid in self._rebuildable_workers if uuid not in self._workers
            )
            workers.extend(self._rebuildable_workers[uuid].view() for uuid in rebuildable_workers)
            rebuildable_history = sum(
                1 for h in self._history if h.worker_uuid in rebuildable_workers
            )
        seen = {
            u: t
            for u, t in self._seen.items()
            if u not in self._workers and u not in rebuildable_workers
        }
        requests = [r.view() for r in self._requests.values()]
        rebuildable = set()
        for request_id, request in self._rebuildable.items():
            if request_id not in self._requests:
                rebuildable.add(request_id)
                requests.append(request.view())
        changes = Changes(
            requests=requests,
            workers=workers,
            removed_workers=self._removed,
            history=self._history,
            last_seen=seen,
            calls=self._calls,
            tunnels=self._tunnels,
            last_request_id=last_request_id,
            rebuildable=rebuildable,
            rebuildable_workers=rebuildable_workers,
            rebuildable_history=rebuildable_history,
            tokens=list(self._tokens.values()),
            removed_tokens=tuple(self._removed_tokens),
            stacks=list(self._stacks.values()),
            removed_stacks=self._removed_stacks,
            usage=self._usage,
        )
        self._reset()
        return changes
