"""Why a waiting request waits (docs/api.md, "Pending reasons"), worked out from the core's
indexes over the request's candidate boards only.

A request's candidates are the registered boards it could use (the first MAX_SURVEYED,
least capable first, spread over its profiles). Everything here costs what those boards
cost: the requests that compete with it are those in the buckets the candidates would
serve (each bucket keeps its requests in serving order, so how many of them go first is a
bisection), never a walk of the whole queue or farm. What requests of one bucket share is
worked out once per Explainer, which is therefore only good while the core does not
change.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import islice

from boruta_scheduler.core.caps import Need
from boruta_scheduler.core.matching import match
from boruta_scheduler.core.model import Request, Worker
from boruta_scheduler.core.queue import Bucket, BucketBase, MultiBucket, RequestQueue
from boruta_scheduler.core.workers import WorkerIndex
from boruta_scheduler.types import PendingBoard, PendingCode, PendingReason, WorkerState

# Candidate boards looked at per request (shared among its profiles, at least as many per
# profile as it has profiles): what bounds the cost of a reason on a large farm.
MAX_SURVEYED = 256
# Boards a reason lists (the total is given beside them).
MAX_BOARDS_LISTED = 8

IN_SERVICE = frozenset({WorkerState.IDLE, WorkerState.RUNNING})
OUT_OF_SERVICE = frozenset({WorkerState.MAINTENANCE, WorkerState.FAILED, WorkerState.BUSY})

# Starts a request of several boards is expected by: (request, latest) -> time, math.inf
# when no set is expected to come free.
SetStart = Callable[[Request, bool], float]
# Whether registered boards that pass a test make a set of a bucket with co-located groups.
ColocatedSet = Callable[[MultiBucket, Callable[[Worker], bool]], bool]


@dataclass(slots=True)
class _Survey:
    """What every request of one bucket shares: its candidates and competitors."""

    needs: tuple[Need, ...]
    # Set when no registered set of boards could serve it: the code and message.
    never: tuple[PendingCode, str, int] | None = None
    boards: list[Worker] = field(default_factory=list)
    in_service: bool = False
    competing: list[BucketBase] = field(default_factory=list)
    shown: tuple[PendingBoard, ...] | None = None


def _stays_in_service(worker: Worker) -> bool:
    """In service and not draining (a draining board goes into maintenance after its job)."""
    return worker.state in IN_SERVICE and not worker.drain_reason


def _state_shown(worker: Worker) -> str:
    return f"{worker.state.name} (draining)" if worker.drain_reason else worker.state.name


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


class Explainer:
    """Pending reasons and queue positions of one moment of the core (now)."""

    def __init__(
        self,
        queue: RequestQueue,
        registered: WorkerIndex,
        requests: Mapping[int, Request],
        set_start: SetStart,
        now: float,
        colocated_set: ColocatedSet | None = None,
    ) -> None:
        self._now = now
        self._queue = queue
        self._registered = registered
        self._requests = requests
        self._set_start = set_start
        self._colocated_set = colocated_set
        self._surveys: dict[BucketBase, _Survey] = {}

    # ------------------------------------------------------------------ surveys

    def _survey(self, bucket: BucketBase) -> _Survey:
        survey = self._surveys.get(bucket)
        if survey is None:
            survey = self._surveys[bucket] = self._make_survey(bucket)
        return survey

    def _make_survey(self, bucket: BucketBase) -> _Survey:
        if isinstance(bucket, MultiBucket):
            needs = bucket.needs
        else:
            assert isinstance(bucket, Bucket)
            needs = (bucket.need,)
        survey = _Survey(needs)
        count = len(needs)
        per_profile = max(MAX_SURVEYED // count, count)
        candidates: list[list[Worker]] = []
        for index, need in enumerate(needs):
            found = list(islice(self._registered.capable(need, bucket.groups), per_profile))
            if not found and survey.never is None:
                survey.never = self._never(need, bucket.groups, index, count)
            candidates.append(found)
        survey.boards = list(dict.fromkeys(w for found in candidates for w in found))
        # Requests that could use one of its boards compete with it even while it can
        # never run: the count means the same for every request.
        survey.competing = self._competing(survey.boards)
        if survey.never is not None:
            return survey
        colocated = isinstance(bucket, MultiBucket) and bool(bucket.colocated)
        if colocated:
            assert isinstance(bucket, MultiBucket) and self._colocated_set is not None
            settled = not self._colocated_set(bucket, lambda w: True)
        else:
            settled = count > 1 and match([found[:count] for found in candidates]) is None
        if settled:
            where = " with each co-located group on one host or stack" if colocated else ""
            survey.never = (
                PendingCode.NO_MATCHING_BOARD,
                f"no set of {count} different registered boards serves its profiles (one "
                f"board each){where}; it waits until boards that make one register",
                -1,
            )
            return survey
        if colocated:
            assert isinstance(bucket, MultiBucket) and self._colocated_set is not None
            survey.in_service = self._colocated_set(bucket, _stays_in_service)
            return survey
        serving = [[w for w in found if _stays_in_service(w)][:count] for found in candidates]
        survey.in_service = match(serving) is not None
        return survey

    def _never(
        self, need: Need, groups: frozenset[str], index: int, count: int
    ) -> tuple[PendingCode, str, int]:
        """Why no registered board serves one profile: none has its caps, or none of those
        that have them is open to the owner's groups. ({profile} in the message is to be
        replaced by the profile's name.)"""
        what = "the caps it asks for" if count == 1 else "the caps of its profile {profile}"
        if self._registered.meeting(need) is None:
            return (
                PendingCode.NO_MATCHING_BOARD,
                f"no registered board has {what} (it was queued with accept_unsatisfiable); "
                "it waits until one registers",
                index if count > 1 else -1,
            )
        shown = ", ".join(sorted(groups)) or "none"
        return (
            PendingCode.NO_BOARD_IN_GROUPS,
            f"boards with {what} are registered, but none is open to its owner's groups "
            f"({shown}); an admin can give one of them a group of the owner "
            "(schedctl workers groups)",
            index if count > 1 else -1,
        )

    def _competing(self, boards: list[Worker]) -> list[BucketBase]:
        """The buckets of waiting requests that could use one of these boards; the walk
        stops once every bucket of the queue is found."""
        queue = self._queue
        everything = queue.bucket_count
        found: dict[BucketBase, None] = {}
        for worker in boards:
            if len(found) == everything:
                break
            for bucket in queue.buckets_servable_by(worker.items, worker.groups):
                found[bucket] = None
            for multi in queue.multis_servable_by(worker.items, worker.groups):
                found[multi] = None
        return list(found)

    # ------------------------------------------------------------------ answers

    def ahead(self, request: Request) -> int:
        """How many waiting requests the scheduler would serve before this one that could
        use a board it could use (among its first MAX_SURVEYED candidates)."""
        bucket = request.bucket
        assert bucket is not None
        ahead_in = self._queue.ahead_in
        return sum(ahead_in(b, request) for b in self._survey(bucket).competing)

    def reason(self, request: Request) -> PendingReason:
        """Why a waiting request waits: the first reason that applies, in PendingCode's
        order."""
        bucket = request.bucket
        assert bucket is not None
        survey = self._survey(bucket)
        ahead = self.ahead(request)
        total = len(survey.boards)

        def answer(
            code: PendingCode,
            message: str,
            reserved: tuple[str, ...] = (),
            starts: tuple[float, float] = (math.inf, math.inf),
        ) -> PendingReason:
            expected, latest = starts
            return PendingReason(
                code,
                message,
                requests_ahead=ahead,
                boards=self._shown(survey),
                boards_total=total,
                reserved=reserved,
                expected_start=0.0 if math.isinf(expected) else expected,
                latest_start=0.0 if math.isinf(latest) else latest,
            )

        if survey.never is not None:
            code, message, index = survey.never
            if index >= 0:
                name = request.profiles[index][0] or str(index)
                message = message.replace("{profile}", repr(name))
            return answer(code, message)
        if not request.ready:
            return answer(
                PendingCode.NOT_VALID_YET, "not valid yet: it is matched from its valid_after on"
            )
        if not survey.in_service:
            states = Counter(map(_state_shown, survey.boards))
            parts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
            what = "set of boards" if len(survey.needs) > 1 else "board"
            return answer(
                PendingCode.BOARDS_UNAVAILABLE,
                f"no {what} it could use is in service (IDLE or RUNNING, not draining): of "
                f"{_plural(total, 'board')} it could use, {parts}",
            )
        if ahead:
            return answer(
                PendingCode.HIGHER_PRIORITY,
                f"{_plural(ahead, 'waiting request')} that could use the same boards "
                f"{'goes' if ahead == 1 else 'go'} first (more important, or as important "
                "and older)",
            )
        if isinstance(bucket, MultiBucket):
            return answer(
                PendingCode.WAITING_FOR_SET,
                f"first in line for a set of {len(bucket.needs)} boards; "
                f"{len(request.reserved)} of them reserved for it, waiting for the others "
                "to come free",
                reserved=tuple(w.uuid for w in request.reserved),
                starts=(self._set_start(request, False), self._set_start(request, True)),
            )
        expected = latest = math.inf
        held = Counter[str]()
        for worker in survey.boards:
            times = self._frees(worker)
            if times is None:
                if worker.state in OUT_OF_SERVICE:
                    held["out of service"] += 1
                elif worker.drain_reason:
                    held["going into maintenance after its job"] += 1
                continue
            expected, latest = min(expected, times[0]), min(latest, times[1])
            held_by, collateral = self._holder(worker)
            if collateral:
                held["held as collateral"] += 1
            elif held_by:
                held["running a job"] += 1
            else:
                held["preparing" if worker.state is WorkerState.PREPARE else "idle"] += 1
        parts = ", ".join(f"{n} {what}" for what, n in sorted(held.items()))
        return answer(
            PendingCode.BOARDS_BUSY,
            f"first in line; every board it could use is taken ({parts})",
            starts=(expected, latest),
        )

    # ------------------------------------------------------------------- boards

    @staticmethod
    def _holder(worker: Worker) -> tuple[int, bool]:
        """The request holding the board and whether as collateral ((0, False): none)."""
        if worker.collateral_of:
            return worker.collateral_of, True
        if worker.state is WorkerState.RUNNING and worker.request_id:
            return worker.request_id, False
        return 0, False

    def _job_times(self, worker: Worker) -> tuple[float, float] | None:
        """When the job holding the board times out unless prolonged, and at the latest."""
        held_by, _ = self._holder(worker)
        holder = self._requests.get(held_by) if held_by else None
        if holder is None or not holder.jobs:
            return None
        job = holder.jobs[0]  # the jobs of a request share their times
        return job.timeout_at, job.max_timeout_at

    def _frees(self, worker: Worker) -> tuple[float, float] | None:
        """When the board is expected to be free, unless jobs are prolonged and at the latest
        (preparing ones: now, preparing not counted); None for a board out of service or
        going out of it after its job (draining)."""
        if worker.state in OUT_OF_SERVICE or worker.drain_reason:
            return None
        held_by, _ = self._holder(worker)
        if not held_by:
            return self._now, self._now
        return self._job_times(worker)

    def _shown(self, survey: _Survey) -> tuple[PendingBoard, ...]:
        """The boards a reason lists: those soonest free first, then out of service."""
        if survey.shown is None:

            def soonest(worker: Worker) -> tuple[float, str]:
                times = self._frees(worker)
                return (math.inf if times is None else times[0], worker.uuid)

            listed = sorted(survey.boards, key=soonest)[:MAX_BOARDS_LISTED]
            survey.shown = tuple(self._board(w) for w in listed)
        return survey.shown

    def _board(self, worker: Worker) -> PendingBoard:
        held_by, collateral = self._holder(worker)
        times = self._job_times(worker) if held_by and not worker.drain_reason else None
        reserved = worker.reserved_for
        return PendingBoard(
            uuid=worker.uuid,
            state=worker.state,
            held_by=held_by,
            collateral=collateral,
            reserved_for=0 if reserved is None else reserved.id,
            frees_at=0.0 if times is None else times[0],
            frees_at_latest=0.0 if times is None else times[1],
        )
