"""The scheduler's Prometheus metrics (docs/metrics.md): what the farm is doing, kept as it
changes so that a scrape costs the number of series, never a walk of the queue.

Requests and boards are followed from the changes the engine publishes after each commit
(so they count only what is durable); live requests by state and priority are the core's
own tally; calls, dryad calls and commits are timed where they happen. Everything here
runs on the event loop's thread except the store writer's commit timing, which uses
prometheus-client's own (locked) histograms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from boruta.metrics import LoopHistograms
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from boruta_scheduler.core import Changes, Core
from boruta_scheduler.core.health import QUARANTINED
from boruta_scheduler.core.scheduler import RECOVERING
from boruta_scheduler.types import (
    HistoryEntry,
    RequestState,
    RequestView,
    WorkerState,
    WorkerView,
)

LIVE_STATES = (RequestState.WAITING, RequestState.IN_PROGRESS)
TERMINAL_STATES = tuple(s for s in RequestState if s not in LIVE_STATES)
# Seconds from submission to start: a second to a day.
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
# Batches of the engine merged into one transaction.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(slots=True)
class _Board:
    """What the metrics keep of one registered board."""

    state: WorkerState
    groups: frozenset[str]
    busy_seconds: float = 0.0
    running_since: float | None = None  # wall-clock time the current job started
    failures: int = 0
    # Quarantines and recoveries since the scheduler started; whether it is quarantined
    # now; whether it is on its way back from a heartbeat loss (FAILED -> PREPARE -> IDLE).
    quarantines: int = 0
    recoveries: int = 0
    quarantined: bool = False
    recovering: bool = False
    draining: bool = False  # finishing its job before going into MAINTENANCE


@dataclass(slots=True)
class _Tallies:
    finished: dict[tuple[str, str], int] = field(default_factory=dict)
    started: dict[str, int] = field(default_factory=dict)
    group_busy: dict[str, float] = field(default_factory=dict)


class FarmMetrics(Collector):
    """Requests, boards and the queue, from the engine's published changes and the core's
    tally. publish() goes into the engine's Publishers; collect() is the scrape."""

    def __init__(self, core: Callable[[], Core | None], clock: Callable[[], float] = time.time):
        self._core = core
        self._clock = clock
        self._boards: dict[str, _Board] = {}
        # Requests seen IN_PROGRESS: a request's first such view is its start (later ones are
        # its prolongs and tunnel port). At most one per board.
        self._running: set[int] = set()
        self._tallies = _Tallies()
        self.wait = LoopHistograms(
            "boruta_request_wait_seconds",
            "Time from a request's submission to its start, by priority and the group "
            "through which it got its board",
            ("priority", "group"),
            WAIT_BUCKETS,
        )

    def seed(self, core: Core, now: float) -> None:
        """Start from a restored core: its boards, and its running jobs (counted as busy
        from now: this process saw nothing before)."""
        for view in core.workers():
            self._boards[view.uuid] = _Board(
                view.state,
                view.groups,
                quarantined=view.health.quarantined,
                draining=bool(view.drain_reason),
            )
            if view.state is WorkerState.RUNNING:
                self._boards[view.uuid].running_since = now
                if view.request_id:
                    self._running.add(view.request_id)

    def publish(self, changes: Changes) -> None:
        """Fold in one committed batch; called by the engine in commit order."""
        for view in changes.requests:
            self._request(view)
        for entry in changes.history:
            board = self._boards.get(entry.worker_uuid)
            if board is None:
                continue
            if entry.from_state is WorkerState.RUNNING and board.running_since is not None:
                self._add_busy(board, entry.time - board.running_since)
                board.running_since = None
            if entry.to_state is WorkerState.RUNNING:
                board.running_since = entry.time
            elif entry.to_state is WorkerState.FAILED:
                board.failures += 1
            self._health(board, entry)
        for worker in changes.workers:
            self._worker(worker)
        for worker in changes.removed_workers:
            removed = self._boards.pop(worker.uuid, None)
            if removed is not None and removed.running_since is not None:
                self._add_busy(removed, self._clock() - removed.running_since)

    @staticmethod
    def _health(board: _Board, entry: HistoryEntry) -> None:
        """Count a quarantine, and a recovery once the board it brings back is IDLE."""
        came_from, went_to = entry.from_state, entry.to_state
        if (
            came_from is WorkerState.FAILED
            and went_to is WorkerState.MAINTENANCE
            and entry.reason.startswith(QUARANTINED)
        ):
            board.quarantines += 1
        if board.recovering and went_to is WorkerState.IDLE:
            board.recoveries += 1
        board.recovering = (
            came_from is WorkerState.FAILED
            and went_to is WorkerState.PREPARE
            and entry.reason == RECOVERING
        ) or (board.recovering and went_to is WorkerState.PREPARE)

    def _worker(self, view: WorkerView) -> None:
        board = self._boards.get(view.uuid)
        if board is None:
            # History of a new worker comes in the same batch, before its view: count it
            # from its view on.
            board = self._boards[view.uuid] = _Board(view.state, view.groups)
            if view.state is WorkerState.RUNNING:
                board.running_since = view.last_seen
        board.state = view.state
        board.groups = view.groups
        board.quarantined = view.health.quarantined
        board.draining = bool(view.drain_reason)

    def _request(self, view: RequestView) -> None:
        state = view.state
        if state is RequestState.WAITING:
            return
        if state is RequestState.IN_PROGRESS:
            if view.id in self._running or view.job is None:
                return
            self._running.add(view.id)
            priority = str(view.priority)
            started = self._tallies.started
            started[priority] = started.get(priority, 0) + 1
            board = self._boards.get(view.job.worker_uuid)
            shared = sorted(view.owner_groups & board.groups) if board is not None else []
            wait = max(0.0, view.job.started_at - view.created_at)
            self.wait.child(priority, shared[0] if shared else "").observe(wait)
            return
        self._running.discard(view.id)
        key = (state.name, str(view.priority))
        self._tallies.finished[key] = self._tallies.finished.get(key, 0) + 1

    def _add_busy(self, board: _Board, seconds: float) -> None:
        seconds = max(0.0, seconds)
        board.busy_seconds += seconds
        for group in board.groups:
            busy = self._tallies.group_busy
            busy[group] = busy.get(group, 0.0) + seconds

    def collect(self) -> Iterator[Any]:
        core = self._core()
        requests = GaugeMetricFamily(
            "boruta_requests",
            "Live requests (WAITING, IN_PROGRESS) by state and priority",
            labels=("state", "priority"),
        )
        depth = GaugeMetricFamily(
            "boruta_queue_depth", "Requests WAITING, whether ready to run yet or not"
        )
        if core is not None:
            tally = core.live_tally()
            for state in LIVE_STATES:
                for priority in sorted({p for s, p in tally if s is state}):
                    requests.add_metric([state.name, str(priority)], tally[state, priority])
            depth.add_metric([], core.waiting_count)
        yield requests
        yield depth
        finished = CounterMetricFamily(
            "boruta_requests_finished",
            "Requests that reached a terminal state since the scheduler started",
            labels=("state", "priority"),
        )
        for (state_name, level), count in sorted(self._tallies.finished.items()):
            finished.add_metric([state_name, level], count)
        yield finished
        started = CounterMetricFamily(
            "boruta_requests_started",
            "Requests whose job started since the scheduler started",
            labels=("priority",),
        )
        for level, count in sorted(self._tallies.started.items()):
            started.add_metric([level], count)
        yield started
        yield from self.wait.collect()
        yield from self._board_families()

    def _board_families(self) -> Iterator[Any]:
        now = self._clock()
        states = GaugeMetricFamily("boruta_boards", "Registered boards by state", labels=("state",))
        counts = dict.fromkeys(WorkerState, 0)
        busy = CounterMetricFamily(
            "boruta_board_busy_seconds",
            "Seconds each board spent RUNNING a job since the scheduler started",
            labels=("worker",),
        )
        failures = CounterMetricFamily(
            "boruta_board_failures",
            "Times each board went FAILED since the scheduler started",
            labels=("worker",),
        )
        quarantines = CounterMetricFamily(
            "boruta_board_quarantines",
            "Times each board was quarantined (put into MAINTENANCE after too many failures) "
            "since the scheduler started",
            labels=("worker",),
        )
        recoveries = CounterMetricFamily(
            "boruta_board_recoveries",
            "Times each board came back IDLE by itself after a heartbeat loss since the "
            "scheduler started",
            labels=("worker",),
        )
        quarantined = GaugeMetricFamily(
            "boruta_board_quarantined",
            "1 while a board is quarantined (until an admin puts it back into service)",
            labels=("worker",),
        )
        draining = GaugeMetricFamily(
            "boruta_board_draining",
            "1 while a board finishes its job before going into MAINTENANCE (an admin's "
            "SetState with after_job)",
            labels=("worker",),
        )
        group_busy = dict(self._tallies.group_busy)
        for uuid, board in sorted(self._boards.items()):
            counts[board.state] += 1
            running = now - board.running_since if board.running_since is not None else 0.0
            busy.add_metric([uuid], board.busy_seconds + max(0.0, running))
            failures.add_metric([uuid], board.failures)
            quarantines.add_metric([uuid], board.quarantines)
            recoveries.add_metric([uuid], board.recoveries)
            quarantined.add_metric([uuid], 1 if board.quarantined else 0)
            draining.add_metric([uuid], 1 if board.draining else 0)
            if running > 0:
                for group in board.groups:
                    group_busy[group] = group_busy.get(group, 0.0) + running
        for state, count in counts.items():
            states.add_metric([state.name], count)
        yield states
        yield busy
        yield failures
        yield quarantines
        yield recoveries
        yield quarantined
        yield draining
        groups = CounterMetricFamily(
            "boruta_group_busy_seconds",
            "Seconds the boards of each group spent RUNNING a job (a board in two groups "
            "counts in both) since the scheduler started",
            labels=("group",),
        )
        for group, seconds in sorted(group_busy.items()):
            groups.add_metric([group], seconds)
        yield groups

    def describe(self) -> Iterable[Any]:
        return []


class LeaderGauge(Collector):
    """boruta_leader: 1 while this scheduler leads (or runs alone), 0 as a standby."""

    def __init__(self) -> None:
        self.leading = False

    def collect(self) -> Iterator[Any]:
        gauge = GaugeMetricFamily(
            "boruta_leader",
            "1 while this scheduler serves (the leader, or alone on its store), 0 as a standby",
        )
        gauge.add_metric([], 1 if self.leading else 0)
        yield gauge

    def describe(self) -> Iterable[Any]:
        return []


class SchedulerMetrics:
    """Every metric of one scheduler process, in a registry of its own (never the global
    default one, so several schedulers in one test process keep theirs apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.leader = LeaderGauge()
        self.registry.register(self.leader)
        self.calls = LoopHistograms(
            "boruta_grpc_call_duration_seconds",
            "gRPC calls served, by service, method and status code, and how long they took "
            "(its _count is the number of calls)",
            ("service", "method", "code"),
        )
        self.registry.register(self.calls)
        self.dryad_calls = LoopHistograms(
            "boruta_dryad_call_duration_seconds",
            "Calls to dryads by kind (Prepare, PutInMaintenance, Healthcheck) and result "
            "(ok, or why it failed), and how long they took, retries included",
            ("kind", "result"),
        )
        self.registry.register(self.dryad_calls)
        self.commit_seconds = Histogram(
            "boruta_store_commit_duration_seconds",
            "Time one store transaction took (a group commit of one or more engine batches)",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.commit_batches = Histogram(
            "boruta_store_commit_batches",
            "Engine batches merged into one store transaction (group commit)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.farm: FarmMetrics | None = None

    def observe_commit(self, seconds: float, batches: int) -> None:
        """From the store writer's thread: one commit and how many batches it merged."""
        self.commit_seconds.observe(seconds)
        self.commit_batches.observe(batches)

    def follow(self, farm: FarmMetrics) -> None:
        """Serve the farm's figures from now on (a scheduler once it leads)."""
        self.farm = farm
        self.registry.register(farm)
