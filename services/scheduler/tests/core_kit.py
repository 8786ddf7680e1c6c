"""Helpers for unit tests of the pure core: a farm of workers driven without any dryad."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from boruta_scheduler.core import Changes, Core, DryadCall, DryadCallKind, Policy
from boruta_scheduler.types import Access, FailedChecks, RequestState, WorkerState

T0 = 1_700_000_000.0
# What a dryad says of a board whose sshd is down, as the scheduler words a failed check.
SSHD_DOWN = "failing checks: sshd: cannot reach sshd at 127.0.0.1:22: connection refused"


def caps_of(uuid: str, **caps: str) -> dict[str, str]:
    return {"UUID": uuid, **caps}


def caps_match(board: Mapping[str, str], asked: Mapping[str, str]) -> bool:
    """docs/api.md's rule read literally, on the strings, as a reference for the core's
    indexes: for every asked key, the `,`-items of some `|`-alternative are all among the
    board value's `,`-items (spaces around a board's items do not count; a value without
    a comma is its only item)."""
    for key, value in asked.items():
        if key not in board:
            return False
        have = board[key]
        have_items = {i.strip() for i in have.split(",")} - {""} if "," in have else {have}
        if not any(set(alt.split(",")) <= have_items for alt in value.split("|")):
            return False
    return True


class CoreKit:
    """A core plus the bookkeeping a test needs: pending dryad calls and a clock."""

    def __init__(
        self, policy: Policy | None = None, key: Callable[[int], str] = lambda n: f"KEY-{n}"
    ) -> None:
        self.core = Core(policy)
        self.key = key
        self.now = T0
        self.pending: list[DryadCall] = []
        self.changes: list[Changes] = []
        self.keys = 0
        self.silent: set[str] = set()

    def drain(self) -> Changes:
        changes = self.core.drain()
        self.pending.extend(changes.calls)
        self.changes.append(changes)
        return changes

    def add_worker(
        self,
        uuid: str,
        caps: Mapping[str, str] | None = None,
        groups: frozenset[str] = frozenset(),
        *,
        idle: bool = True,
        host: str = "",
    ) -> None:
        """Register a worker (its dryad on host, if given, else on a host of its own)."""
        self.core.register(
            self.now,
            caps_of(uuid, **(caps or {})),
            f"{host or uuid + '.lab'}:7175",
            f"{uuid}.lab:22",
            instance_id="i1",
        )
        if groups:
            self.core.set_groups(self.now, uuid, groups)
        if idle:
            self.core.set_state(self.now, uuid, WorkerState.IDLE)
            self.answer_calls()

    def answer_calls(self, *, fail: bool | DryadCallKind = False) -> None:
        """Let every dryad call made so far succeed, or fail (all, or those of one kind);
        failing HEALTHCHECK also fails the checks that Prepare calls run first."""
        self.drain()
        while self.pending:
            call = self.pending.pop(0)
            if fail is True or fail == call.kind:
                self.core.dryad_call_failed(self.now, call, "connection refused")
            elif fail is DryadCallKind.HEALTHCHECK and call.healthcheck_first:
                self.core.dryad_call_succeeded(self.now, call, FailedChecks(SSHD_DOWN))
            elif call.kind is DryadCallKind.PREPARE:
                self.keys += 1
                access = Access(
                    f"job{self.keys}", self.key(self.keys), (f"ssh-ed25519 HOST{self.keys}",)
                )
                self.core.dryad_call_succeeded(self.now, call, access)
            else:
                self.core.dryad_call_succeeded(self.now, call)
            self.drain()

    def advance(self, seconds: float, *, heartbeats: bool = True) -> None:
        """Move the clock, firing timers on the way; live dryads heartbeat as they should."""
        step = self.core.policy.heartbeat_timeout / 3 if heartbeats else seconds
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            if heartbeats:
                for worker in self.core.workers():
                    if worker.uuid not in self.silent:
                        self.core.heartbeat(self.now, worker.uuid)
            self.core.tick(self.now)
        self.drain()


def state_of(kit: CoreKit, request_id: int) -> RequestState:
    """The state a request was last drained in (terminal ones are gone from the core)."""
    for changes in reversed([*kit.changes, kit.drain()]):
        for view in reversed(changes.requests):
            if view.id == request_id:
                return view.state
    raise AssertionError(f"request {request_id} never changed")
