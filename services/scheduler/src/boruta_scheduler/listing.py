"""Filtering, ordering and keyset paging of lists, shared by the stores and the worker list,
and the page tokens of every list."""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from boruta_scheduler.errors import InvalidArgument
from boruta_scheduler.types import (
    RequestState,
    RequestView,
    TokenRecord,
    WorkerState,
    WorkerView,
)

log = logging.getLogger(__name__)

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
class TokenQuery:
    """Which bearer tokens to list (one user's or everyone's, live ones or all), from after
    which id, and how many (None: as many as fit one reply). Tokens are listed by id."""

    user: str = ""
    active_only: bool = False
    limit: int | None = DEFAULT_PAGE_SIZE
    after: int = 0

    def matches(self, t: TokenRecord, now: float) -> bool:
        # Live as TokenAuthority.identify takes it: not revoked, and not past expires_at.
        return (not self.user or t.user == self.user) and (
            not self.active_only or (t.revoked_at is None and now <= t.expires_at)
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


class PageTokens:
    """The one page-token scheme of every list: the sort key to continue after, the list's
    name and a hash of its filter and order, signed with HMAC-SHA256. A token is refused
    (INVALID_ARGUMENT) if it was edited or forged, comes from another list, or from the same
    list with another filter or order. The key lives in a file so a restart keeps tokens good."""

    KEY_FILE = "page-token.key"

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def in_directory(cls, directory: str | Path) -> PageTokens:
        """Tokens signed with the key kept in directory, made on first use; if it cannot be
        kept there, a key of this process only (tokens then die with it)."""
        path = Path(directory) / cls.KEY_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as out:
                    out.write(secrets.token_hex(32))
            return cls(bytes.fromhex(path.read_text().strip()))
        except (OSError, ValueError) as exc:
            log.warning(
                "page-token key not kept; page tokens will not outlive this process",
                extra={"path": str(path), "error": str(exc)},
            )
            return cls(secrets.token_bytes(32))

    @staticmethod
    def scope(list_name: str, *parts: object) -> Scope:
        """What a token is bound to: the list and everything that selects or orders it
        (not the page size, which may change from page to page)."""
        return Scope(list_name, hashlib.sha256(repr(parts).encode()).hexdigest()[:16])

    def encode(self, scope: Scope, after: SortKey | None) -> str:
        """The token for the page after the key after; empty at the end of the list."""
        if after is None:
            return ""
        body = json.dumps([scope.list_name, scope.digest, *after], separators=(",", ":"))
        raw = body.encode()
        return f"{_b64(raw)}.{_b64(self._mac(raw))}"

    def decode(
        self,
        scope: Scope,
        token: str,
        first: tuple[type, ...] = (int, float, str),
        second: tuple[type, ...] = (int, str),
    ) -> SortKey | None:
        """The sort key a token continues after (None for no token); refuses tokens that
        are malformed, not signed here, of another list or query, or whose key parts are
        not of the list's types (first, second) or out of int64."""
        if not token:
            return None
        malformed = InvalidArgument(
            "page_token is malformed; pass a next_page_token unchanged, or none to start again"
        )
        body, dot, mac = token.partition(".")
        try:
            raw, signature = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError) as exc:
            raise malformed from exc
        if not dot or not hmac.compare_digest(signature, self._mac(raw)):
            raise InvalidArgument(
                "page_token was not issued by this scheduler or was altered; pass a "
                "next_page_token unchanged, or none to start again"
            )
        try:
            list_name, digest, key, tie = json.loads(raw)
        except (ValueError, TypeError) as exc:
            raise malformed from exc
        if list_name != scope.list_name:
            raise InvalidArgument(
                f"page_token belongs to {list_name}, not {scope.list_name}; start again without it"
            )
        if digest != scope.digest:
            raise InvalidArgument(
                "page_token belongs to a list with another filter or order; start again without it"
            )
        if not (_key_part(key, first) and _key_part(tie, second)):
            raise malformed
        return (key, tie)

    def _mac(self, raw: bytes) -> bytes:
        return hmac.new(self._key, raw, hashlib.sha256).digest()[:16]


@dataclass(frozen=True, slots=True)
class Scope:
    """What a page token is bound to: the list by name and a digest of its query."""

    list_name: str
    digest: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_part(value: object, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool) or not isinstance(value, kinds):
        return False
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    return not isinstance(value, float) or math.isfinite(value)
