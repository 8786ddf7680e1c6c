"""Filtering, ordering and keyset paging of lists, shared by the stores and the worker list."""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from boruta_scheduler.errors import InvalidArgument
from boruta_scheduler.types import RequestState, RequestView, WorkerState, WorkerView

T = TypeVar("T")
SortKey = tuple[float | int | str, int | str]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Keys are stored as signed 64-bit integers; a larger one is no key of any list.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class RequestSort(enum.Enum):
    """Field that orders a request list; ties are ordered by id."""

    ID = "id"
    PRIORITY = "priority"
    STATE = "state"
    VALID_AFTER = "valid_after"
    DEADLINE = "deadline"
    UPDATED_AT = "updated_at"


class WorkerSort(enum.Enum):
    """Field that orders a worker list; ties are ordered by uuid."""

    UUID = "uuid"
    STATE = "state"
    REGISTERED_AT = "registered_at"
    LAST_SEEN = "last_seen"


@dataclass(frozen=True, slots=True)
class RequestQuery:
    """Which requests to list, in which order, and from where (after is a sort key)."""

    ids: frozenset[int] = frozenset()
    states: frozenset[RequestState] = frozenset()
    priorities: frozenset[int] = frozenset()
    owners: frozenset[str] = frozenset()
    sort: RequestSort = RequestSort.ID
    descending: bool = False
    limit: int = DEFAULT_PAGE_SIZE
    after: SortKey | None = None

    def matches(self, r: RequestView) -> bool:
        return (
            (not self.ids or r.id in self.ids)
            and (not self.states or r.state in self.states)
            and (not self.priorities or r.priority in self.priorities)
            and (not self.owners or r.owner in self.owners)
        )


@dataclass(frozen=True, slots=True)
class WorkerQuery:
    """Which workers to list, in which order, and from where (after is a sort key)."""

    uuids: frozenset[str] = frozenset()
    states: frozenset[WorkerState] = frozenset()
    groups: frozenset[str] = frozenset()
    caps: dict[str, str] = field(default_factory=dict)
    sort: WorkerSort = WorkerSort.UUID
    descending: bool = False
    limit: int = DEFAULT_PAGE_SIZE
    after: SortKey | None = None

    def matches(self, w: WorkerView) -> bool:
        return (
            (not self.uuids or w.uuid in self.uuids)
            and (not self.states or w.state in self.states)
            and (not self.groups or not self.groups.isdisjoint(w.groups))
            and all(w.caps.get(k) == v for k, v in self.caps.items())
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list; next_after is the sort key to continue from, or None at the end."""

    items: list[T]
    next_after: SortKey | None


def request_sort_key(sort: RequestSort, r: RequestView) -> SortKey:
    value: float | int | str = getattr(r, sort.value)
    return (int(value) if sort is RequestSort.STATE else value, r.id)


def worker_sort_key(sort: WorkerSort, w: WorkerView) -> SortKey:
    value: float | int | str = getattr(w, sort.value)
    return (int(value) if sort is WorkerSort.STATE else value, w.uuid)


def page_of(
    items: Iterable[T],
    key: Callable[[T], SortKey],
    *,
    descending: bool,
    after: SortKey | None,
    limit: int,
) -> Page[T]:
    """Sort items, skip up to and including after, and cut one page."""
    ordered: Sequence[T] = sorted(items, key=key, reverse=descending)
    if after is not None:
        if descending:
            ordered = [i for i in ordered if key(i) < after]
        else:
            ordered = [i for i in ordered if key(i) > after]
    chunk = list(ordered[: limit + 1])
    if len(chunk) > limit:
        return Page(chunk[:limit], key(chunk[limit - 1]))
    return Page(chunk, None)


def page_size(requested: int) -> int:
    """The page size to use for a requested one (0 means the default; large ones are capped)."""
    if requested <= 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def encode_token(scope: str, after: SortKey | None) -> str:
    """An opaque page token; scope ties it to the list's filter and order."""
    if after is None:
        return ""
    raw = json.dumps([scope, list(after)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(
    scope: str,
    token: str,
    first: tuple[type, ...] = (int, float, str),
    second: tuple[type, ...] = (int, str),
) -> SortKey | None:
    """The sort key a page token continues from; refuses tokens of another list, and keys
    of other types than the list's (first, second) or out of int64."""
    if not token:
        return None
    malformed = InvalidArgument("page_token is malformed; pass a next_page_token unchanged")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        token_scope, after = json.loads(raw)
        key, tie = after
    except (binascii.Error, ValueError, TypeError) as exc:
        raise malformed from exc
    if token_scope != scope:
        raise InvalidArgument(
            "page_token belongs to a list with another filter or order; start again without it"
        )
    if not (_key_part(key, first) and _key_part(tie, second)):
        raise malformed
    return (key, tie)


def _key_part(value: object, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool) or not isinstance(value, kinds):
        return False
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    return not isinstance(value, float) or math.isfinite(value)
