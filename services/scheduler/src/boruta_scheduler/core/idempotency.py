"""Idempotency keys of NewRequest: which request a key made, and whether a retry asks the same."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from boruta_scheduler.errors import IdempotencyKeyReused, InvalidArgument, Unavailable, shown
from boruta_scheduler.types import Colocation, RequestView

MAX_KEY_CHARS = 128
# How long the core remembers the key of a request after it finished, in seconds. A retry
# looks the key up in the store first; this covers a request that was created, not yet
# committed when the store was read, and finished before the retry reached the core.
FINISHED_KEPT = 600.0
# A retry whose store look-up is older than this cannot rely on the core's memory.
LOOKUP_FRESH = FINISHED_KEPT / 2

OwnerKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A NewRequest's key, the hash of its arguments, and when its store look-up began."""

    key: str
    arguments_hash: str
    looked_up_at: float


def check_key(key: str) -> None:
    if len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise InvalidArgument(
            f"idempotency_key {shown(key)} must be at most {MAX_KEY_CHARS} printable "
            "characters; a random UUID is a good key"
        )


def arguments_hash(
    caps: Mapping[str, str],
    priority: int,
    valid_after: float | None,
    deadline: float | None,
    accept_unsatisfiable: bool,
    no_wait: bool,
    job_timeout: float,
    profiles: Sequence[tuple[str, Mapping[str, str]]] = (),
    together: Sequence[Colocation] = (),
) -> str:
    """A hash of NewRequest's arguments as sent (unset times stay unset), so that a retry
    is recognised however much later it comes."""
    arguments: list[object] = [
        sorted(caps.items()),
        priority,
        valid_after,
        deadline,
        accept_unsatisfiable,
        no_wait,
        job_timeout,
    ]
    if profiles:
        # Only when given, so that the hashes of requests of caps stay as they were.
        arguments.append([[name, sorted(p.items())] for name, p in profiles])
    if together:
        arguments.append([[list(c.profiles), int(c.placement)] for c in together])
    text = json.dumps(arguments, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def same_arguments(view: RequestView, owner: str, idem: Idempotency) -> RequestView:
    """The request a key made, if the retry asks the same; else IdempotencyKeyReused."""
    if view.arguments_hash != idem.arguments_hash:
        raise IdempotencyKeyReused(
            f"{owner} already used idempotency_key {shown(idem.key)} for request {view.id}, "
            "with other arguments; use a new key for a new request, or repeat the first "
            "call's arguments exactly"
        )
    return view


class KeyMemory:
    """The keys of live requests, and those of requests finished in the last FINISHED_KEPT
    seconds with their final views."""

    def __init__(self) -> None:
        self._live: dict[OwnerKey, int] = {}
        self._finished: dict[OwnerKey, RequestView] = {}
        self._finished_order: deque[tuple[float, OwnerKey]] = deque()

    def add(self, owner: str, key: str, request_id: int) -> None:
        self._live[(owner, key)] = request_id

    def finished(self, view: RequestView, now: float) -> None:
        """A keyed request ended: remember its final view for a while."""
        owner_key = (view.owner, view.idempotency_key)
        self._live.pop(owner_key, None)
        self._finished[owner_key] = view
        self._finished_order.append((now, owner_key))
        self._forget_before(now - FINISHED_KEPT)

    def find(self, owner: str, idem: Idempotency, now: float) -> int | RequestView | None:
        """The live request's id, the finished request's view, or None if the key is new
        (UNAVAILABLE if the look-up is too old to tell)."""
        self._forget_before(now - FINISHED_KEPT)
        owner_key = (owner, idem.key)
        live = self._live.get(owner_key)
        if live is not None:
            return live
        view = self._finished.get(owner_key)
        if view is not None:
            return view
        if now - idem.looked_up_at > LOOKUP_FRESH:
            raise Unavailable(
                "the scheduler took too long to look up the idempotency key; retry the call"
            )
        return None

    def _forget_before(self, limit: float) -> None:
        order = self._finished_order
        while order and order[0][0] < limit:
            self._finished.pop(order.popleft()[1], None)
