"""Operations of the scheduler in domain terms, for the gRPC servicers (and tests) to call.

Writes go through the engine (durable before they return); request reads go to the
store, which holds exactly what has been committed; worker reads ask the core.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from boruta_scheduler.app import audit as events
from boruta_scheduler.app.audit import AuditLog
from boruta_scheduler.app.authz import (
    as_owner,
    check_dryad,
    check_dryad_hosts,
    check_id,
    check_owner,
    own_query,
    own_usage,
)
from boruta_scheduler.app.engine import Engine
from boruta_scheduler.app.watch import Subscription, WatchHub, WorkerEvent
from boruta_scheduler.core import Core
from boruta_scheduler.core.idempotency import (
    Idempotency,
    arguments_hash,
    check_key,
    same_arguments,
)
from boruta_scheduler.errors import (
    DeadlineExceeded,
    InvalidArgument,
    PermissionDenied,
    RequestNotFound,
    ResourceExhausted,
    StoreUnavailable,
    Unavailable,
    WrongRequestState,
)
from boruta_scheduler.listing import (
    Page,
    RequestQuery,
    WorkerQuery,
    page_of,
    worker_sort_key,
)
from boruta_scheduler.store import HistoryPage, Store
from boruta_scheduler.types import (
    Allocation,
    Colocation,
    HostStatus,
    Identity,
    JobView,
    PendingReason,
    RequestState,
    RequestView,
    Role,
    StackView,
    UsageBy,
    UsageQuery,
    UsageTotals,
    WorkerState,
    WorkerView,
)

T = TypeVar("T")

# Waiting requests whose pending reasons one engine read works out (ListRequests, the
# dashboard): what bounds how long one page holds the engine.
REASONS_PER_READ = 25

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """What the service tells dryads and how long it lets calls wait."""

    heartbeat_interval: float = 10.0
    public_host: str = "127.0.0.1"
    # Watches are streams held open in memory: one caller may not hold more than this.
    max_watches_per_user: int = 32
    # How long finished requests are kept (0: for ever), to explain where old ones went.
    retention: float = 0.0


class SchedulerService:
    """The scheduler's use cases; identity is passed in, never read from request fields."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        hub: WatchHub,
        settings: ServiceSettings | None = None,
        readers: ThreadPoolExecutor | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.audit = audit or AuditLog(engine, store)
        # Checks again, before a secret is handed out, that the caller's credential still
        # holds (set when tokens are in use).
        self.revalidate: Callable[[Identity], None] = lambda who: None
        self.engine = engine
        self.store = store
        self.hub = hub
        self.settings = settings or ServiceSettings()
        self._readers = readers or ThreadPoolExecutor(4, thread_name_prefix="store-reader")

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    def _check_watches(self, who: Identity) -> None:
        limit = self.settings.max_watches_per_user
        if self.hub.open_of(who.user) >= limit:
            raise ResourceExhausted(
                f"{who.user} already has {limit} watches open, the most allowed; close one"
            )

    def _missing(self, request_id: int) -> RequestNotFound:
        """Not found in the store: an id that was given out belonged to a purged request."""
        retention = self.settings.retention
        if retention > 0 and request_id <= self.engine.core.last_request_id:
            days = f"{retention / 86400:g}"
            return RequestNotFound(
                request_id, f"finished requests are deleted {days} days after they end"
            )
        return RequestNotFound(request_id)

    async def _explain_missing(self, who: Identity, error: RequestNotFound) -> Exception:
        """A request the core no longer holds may be terminal in the store: say which state."""
        view = await self._read(self.store.get_request, error.request_id)
        if view is None:
            return self._missing(error.request_id)
        try:
            check_owner(who, view)
        except PermissionDenied as denied:
            return denied
        detail = f" ({view.reason})" if view.reason else ""
        return WrongRequestState(f"request {view.id} is {view.state.name}{detail}")

    # -------------------------------------------------------------------- requests

    async def new_request(
        self,
        who: Identity,
        caps: Mapping[str, str],
        *,
        priority: int = 0,
        valid_after: float | None = None,
        deadline: float | None = None,
        accept_unsatisfiable: bool = False,
        no_wait: bool = False,
        job_timeout: float = 0.0,
        idempotency_key: str = "",
        profiles: Sequence[tuple[str, Mapping[str, str]]] = (),
        together: Sequence[Colocation] = (),
    ) -> RequestView:
        """Queue a request (of caps, or of profiles: one board each, maybe co-located
        groups of them); with an idempotency
        key the owner used before, return the request it made instead
        (IdempotencyKeyReused if this call asks otherwise)."""
        idem: Idempotency | None = None
        core = self.engine.core
        if idempotency_key:
            check_key(idempotency_key)
            idem = Idempotency(
                idempotency_key,
                arguments_hash(
                    caps,
                    priority,
                    valid_after,
                    deadline,
                    accept_unsatisfiable,
                    no_wait,
                    job_timeout,
                    profiles,
                    together,
                ),
                self.engine.now(),
            )
            # Requests committed before now are in the store, whatever state they are in;
            # the core knows those created since (see KeyMemory).
            stored = await self._read(self.store.find_request, who.user, idempotency_key)
            if stored is not None:
                return same_arguments(stored, who.user, idem)
        # The core converts the caps (the message's own map) once; the event reads them
        # from the request it made.
        create = self.audit.recorded(
            who,
            "NewRequest",
            events.request_created,
            lambda core, now: core.new_request(
                now,
                who.user,
                who.groups,
                caps,
                priority=priority,
                valid_after=valid_after,
                deadline=deadline,
                accept_unsatisfiable=accept_unsatisfiable,
                no_wait=no_wait,
                privileged=who.role is Role.ADMIN,
                job_timeout=job_timeout,
                idempotency=idem,
                profiles=profiles,
                together=together,
            ),
        )
        if idem is None:
            return await self.engine.execute(create)

        def create_once(current: Core, now: float) -> RequestView:
            assert idem is not None
            if current is not core:
                # The core was rebuilt from the store since the look-up: what the look-up
                # missed may have been forgotten with the old core.
                raise Unavailable("the scheduler recovered while this call waited; retry it")
            found = current.keyed_request(now, who.user, idem)
            return found if found is not None else create(current, now)

        return await self.engine.execute(create_once)

    async def close_request(self, who: Identity, request_id: int) -> RequestView:
        check_id(request_id)
        try:
            return await self.engine.execute(
                self.audit.recorded(
                    who,
                    "CloseRequest",
                    events.request_closed,
                    as_owner(
                        who, request_id, lambda core, now: core.close_request(now, request_id)
                    ),
                )
            )
        except RequestNotFound as exc:
            raise await self._explain_missing(who, exc) from None

    async def update_request(
        self,
        who: Identity,
        request_id: int,
        *,
        priority: int | None = None,
        valid_after: float | None = None,
        deadline: float | None = None,
    ) -> RequestView:
        check_id(request_id)
        try:
            return await self.engine.execute(
                self.audit.recorded(
                    who,
                    "UpdateRequest",
                    events.request_updated,
                    as_owner(
                        who,
                        request_id,
                        lambda core, now: core.update_request(
                            now,
                            request_id,
                            priority=priority,
                            valid_after=valid_after,
                            deadline=deadline,
                            privileged=who.role is Role.ADMIN,
                        ),
                    ),
                )
            )
        except RequestNotFound as exc:
            raise await self._explain_missing(who, exc) from None

    async def get_request(self, who: Identity, request_id: int) -> RequestView:
        check_id(request_id)
        view = await self._read(self.store.get_request, request_id)
        if view is None:
            raise self._missing(request_id)
        check_owner(who, view)
        return view

    async def request_info(
        self, who: Identity, request_id: int
    ) -> tuple[RequestView, PendingReason | None]:
        """The request and, while it waits, why (its queue position is the reason's
        requests_ahead): both read in one engine command, so of one moment, and answered
        once that moment is committed. (The store alone may be a batch behind the core's
        queue.)"""
        check_id(request_id)

        def live(core: Core, now: float) -> tuple[RequestView | None, PendingReason | None]:
            view = core.live_request(request_id)
            if view is not None:
                check_owner(who, view)
            return view, core.pending_reason(now, request_id)

        view, reason = await self.engine.read(live)
        if view is None:  # terminal (committed, since the read was) or unknown
            return await self.get_request(who, request_id), None
        return view, reason

    async def pending_reasons(
        self, who: Identity, views: Sequence[RequestView]
    ) -> dict[int, PendingReason]:
        """Why each of these requests that still waits waits, by id: engine reads of at
        most REASONS_PER_READ requests each, so that a long page never holds the engine
        for long (each read is of one moment; the page's requests may be of several)."""
        for view in views:
            check_owner(who, view)
        waiting = [v.id for v in views if v.state is RequestState.WAITING]
        reasons: dict[int, PendingReason] = {}
        for start in range(0, len(waiting), REASONS_PER_READ):
            chunk = waiting[start : start + REASONS_PER_READ]

            def explain(core: Core, now: float, chunk: list[int] = chunk) -> None:
                explainer = core.explainer(now)
                for request_id in chunk:
                    reason = core.pending_reason(now, request_id, explainer)
                    if reason is not None:
                        reasons[request_id] = reason

            await self.engine.read(explain)
        return reasons

    async def live_requests(
        self, who: Identity, limit: int
    ) -> tuple[list[tuple[RequestView, PendingReason | None]], int]:
        """The first limit live requests who may see (as ListRequests shows them): running
        ones by id, then waiting ones in serving order (priority, then age), each waiting
        one with why it waits; and how many there are in all."""
        query = own_query(who, RequestQuery())

        def live(core: Core, now: float) -> list[RequestView]:
            return [view for view in core.live_requests() if query.matches(view)]

        found = await self.engine.read(live)

        def order(view: RequestView) -> tuple[int, int, int]:
            if view.state is RequestState.IN_PROGRESS:
                return (0, 0, view.id)
            return (1, view.priority, view.id)

        shown = sorted(found, key=order)[:limit]
        reasons = await self.pending_reasons(who, shown)
        return [(view, reasons.get(view.id)) for view in shown], len(found)

    async def list_requests(self, who: Identity, query: RequestQuery) -> Page[RequestView]:
        return await self._read(self.store.list_requests, own_query(who, query))

    async def usage(
        self,
        who: Identity,
        since: float | None,
        until: float | None = None,
        by: UsageBy = UsageBy.USER,
        owner: str = "",
    ) -> tuple[UsageQuery, list[UsageTotals]]:
        """Usage over [since, until) (until None: now), by user or group, from the store's
        usage records; users see their own only. Returns the query as summed."""
        owner = own_usage(who, owner)
        now = self.engine.now()
        if since is None:
            raise InvalidArgument("since is required: give the start of the period")
        if until is None:
            until = now
        if since > now:
            raise InvalidArgument(
                f"since is {since - now:.0f} s in the future; give a start before now"
            )
        if until <= since:
            raise InvalidArgument(
                "until must be after since; give an end after the start, or none for now"
            )
        query = UsageQuery(since, until, now, by, owner)
        return query, await self._read(self.store.usage, query)

    async def acquire_worker(
        self, who: Identity, request_id: int, timeout: float | None
    ) -> RequestView:
        """Wait until the request runs; returns it with its job's access."""
        check_id(request_id)
        try:
            view = await self.engine.wait_for_job(
                request_id, timeout, lambda live: check_owner(who, live)
            )
        except RequestNotFound as exc:
            raise await self._explain_missing(who, exc) from None
        except TimeoutError:
            raise DeadlineExceeded(
                f"request {request_id} was still WAITING when the call's deadline passed; "
                "call AcquireWorker again to keep waiting"
            ) from None
        if view.state is not RequestState.IN_PROGRESS:
            detail = f" ({view.reason})" if view.reason else ""
            raise WrongRequestState(f"request {request_id} is {view.state.name}{detail}")
        self.revalidate(who)
        self.audit.record(who, "AcquireWorker", *events.access_handed_out(view))
        return view

    async def prolong_access(
        self, who: Identity, request_id: int, seen_count: int | None = None
    ) -> JobView:
        check_id(request_id)
        try:
            return await self.engine.execute(
                self.audit.recorded(
                    who,
                    "ProlongAccess",
                    events.access_prolonged(request_id),
                    as_owner(
                        who,
                        request_id,
                        lambda core, now: core.prolong_access(now, request_id, seen_count),
                    ),
                )
            )
        except RequestNotFound as exc:
            raise await self._explain_missing(who, exc) from None

    async def watch_requests(
        self, who: Identity, query: RequestQuery, include_current: bool
    ) -> tuple[list[RequestView], Subscription[RequestView]]:
        """Subscribe, atomically with a snapshot of the live requests that pass the query."""
        query = own_query(who, query)
        self._check_watches(who)

        def subscribe(
            core: Core, now: float
        ) -> tuple[list[RequestView], Subscription[RequestView]]:
            sub = self.hub.watch_requests(query.matches, who.user)
            current = (
                [v for v in core.live_requests() if query.matches(v)] if include_current else []
            )
            return sorted(current, key=lambda v: v.id), sub

        return await self.engine.read(subscribe, _close_subscription)

    # --------------------------------------------------------------------- workers

    async def list_workers(self, who: Identity, query: WorkerQuery) -> Page[WorkerView]:
        views = await self.engine.read(lambda core, now: core.workers())
        return page_of(
            (w for w in views if query.matches(w)),
            lambda w: worker_sort_key(query.sort, w),
            descending=query.descending,
            after=query.after,
            limit=query.limit,
        )

    async def get_worker(self, who: Identity, uuid: str) -> WorkerView:
        return await self.engine.read(lambda core, now: core.worker(uuid))

    async def worker_history(
        self, who: Identity, uuid: str, limit: int, before: int | None
    ) -> HistoryPage:
        await self.get_worker(who, uuid)
        await self.engine.commit_history()
        return await self._read(self.store.worker_history, uuid, limit, before)

    async def set_state(
        self, who: Identity, uuid: str, state: WorkerState, reason: str, after_job: bool = False
    ) -> WorkerView:
        """An admin's SetState; with after_job, a RUNNING worker goes into maintenance when
        its job ends."""
        return await self.engine.execute(
            self.audit.recorded(
                who,
                "SetState",
                events.worker_state_set(uuid, state, reason, after_job),
                lambda core, now: core.set_state(now, uuid, state, reason, after_job=after_job),
            )
        )

    async def set_groups(self, who: Identity, uuid: str, groups: frozenset[str]) -> WorkerView:
        return await self.engine.execute(
            self.audit.recorded(
                who,
                "SetGroups",
                events.worker_groups_set(uuid, groups),
                lambda core, now: core.set_groups(now, uuid, groups),
            )
        )

    async def deregister(self, who: Identity, uuid: str) -> None:
        await self.engine.execute(
            self.audit.recorded(
                who,
                "Deregister",
                events.worker_deregistered(uuid),
                lambda core, now: core.deregister(now, uuid),
            )
        )

    async def create_stack(self, who: Identity, name: str, workers: tuple[str, ...]) -> StackView:
        return await self.engine.execute(
            self.audit.recorded(
                who,
                "CreateStack",
                events.stack_created(name, workers),
                lambda core, now: core.create_stack(now, name, workers),
            )
        )

    async def list_stacks(self, who: Identity) -> list[StackView]:
        return await self.engine.read(lambda core, now: core.stacks())

    async def list_allocations(self, who: Identity) -> list[Allocation]:
        return await self.engine.read(lambda core, now: core.allocations())

    async def delete_stack(self, who: Identity, name: str) -> None:
        await self.engine.execute(
            self.audit.recorded(
                who,
                "DeleteStack",
                events.stack_deleted(name),
                lambda core, now: core.delete_stack(now, name),
            )
        )

    async def watch_workers(
        self, who: Identity, query: WorkerQuery, include_current: bool
    ) -> tuple[list[WorkerView], Subscription[WorkerEvent]]:
        """Subscribe, atomically with a snapshot of the workers that pass the query."""

        def accepts(event: WorkerEvent) -> bool:
            return query.matches(event.view)

        self._check_watches(who)

        def subscribe(core: Core, now: float) -> tuple[list[WorkerView], Subscription[WorkerEvent]]:
            sub = self.hub.watch_workers(accepts, who.user)
            current = [w for w in core.workers() if query.matches(w)] if include_current else []
            return sorted(current, key=lambda w: w.uuid), sub

        return await self.engine.read(subscribe, _close_subscription)

    # ------------------------------------------------------------------ superviser

    async def register(
        self,
        who: Identity,
        caps: Mapping[str, str],
        dryad_address: str,
        ssh_address: str,
        instance_id: str,
        dryad_version: str,
    ) -> tuple[WorkerView, tuple[str, ...] | None]:
        """The worker as registered, and the job users its dryad may keep (see heartbeat)."""
        caps = dict(caps)
        check_dryad(who, caps.get("UUID", ""))
        check_dryad_hosts(who, {"dryad_address": dryad_address, "ssh_address": ssh_address})

        def command(core: Core, now: float) -> tuple[WorkerView, tuple[str, ...] | None]:
            view = core.register(
                now,
                caps,
                dryad_address,
                ssh_address,
                instance_id=instance_id,
                dryad_version=dryad_version,
            )
            return view, core.live_job_users(view.uuid)

        return await self.engine.execute(command)

    async def heartbeat(
        self, who: Identity, uuid: str, status: HostStatus | None
    ) -> tuple[tuple[str, ...] | None, WorkerState | None]:
        """Note the dryad is alive; return the worker's job users it may keep (None: no
        verdict now) and its state (None: not known now), decided in the same step, so in
        order with every state change."""
        check_dryad(who, uuid)

        def command(core: Core, now: float) -> tuple[tuple[str, ...] | None, WorkerState]:
            state = core.heartbeat(now, uuid, status)
            return core.live_job_users(uuid), state

        if self.engine.outage is None:
            try:
                return await self.engine.execute(command)
            except StoreUnavailable:
                pass
        # While the store refuses writes no timer runs, and after it the engine counts
        # silence from its recovery: hearing the dryad is all a heartbeat must do now, and
        # an error would only send it to register again. No verdict on its job users: the
        # next heartbeat after the recovery gives one.
        await self.engine.read(lambda core, now: core.worker(uuid))
        return None, None

    async def set_fail(
        self, who: Identity, uuid: str, reason: str, *, local_checks: bool = False
    ) -> None:
        check_dryad(who, uuid)
        taken = await self.engine.execute(
            lambda core, now: core.set_fail(now, uuid, reason, local_checks=local_checks)
        )
        if not taken:
            log.info(
                "report of local checks dropped: a Prepare is running them",
                extra={"worker": uuid, "reason": reason},
            )


def _close_subscription(result: tuple[object, Subscription[Any]]) -> None:
    result[1].close()
