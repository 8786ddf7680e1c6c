"""Waiting requests, indexed so that a freed worker finds its best request without a scan.

Requests with the same caps and the same owner groups share a bucket; each bucket keeps a
heap of its ready requests ordered by (priority, id). A worker finds the buckets it can
serve through a pair index, so the cost depends on the number of distinct cap sets and
group sets, not on the number of waiting requests. A bucket is indexed under one pair its
requests require (any one will do: a worker that can serve the bucket holds them all), or,
if they require none outright, under one pair of each alternative of one of their caps
with alternatives (a worker that can serve it holds one of those): one entry, or one per
alternative, however many caps it has.

Requests of several profiles wait in buckets of their own (MultiBucket: the same profiles
and owner groups), indexed as above under pairs of each profile, in an index of their own,
so that a worker finds those it could serve a board of; one-profile requests never pay for
them.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Mapping
from typing import Generic, TypeVar

from sortedcontainers import SortedList

from boruta_scheduler.core.caps import Need, need_of
from boruta_scheduler.core.model import Request, groups_compatible
from boruta_scheduler.core.policy import caps_size
from boruta_scheduler.core.together import Group
from boruta_scheduler.types import CapPair, RequestState

T = TypeVar("T")
K = TypeVar("K")
B = TypeVar("B")
BucketT = TypeVar("BucketT", bound="BucketBase")
BucketKey = tuple[frozenset[CapPair], frozenset[str]]
MultiKey = tuple[tuple[frozenset[CapPair], ...], frozenset[str], tuple[Group, ...]]
HeapEntry = tuple[int, int, Request]


class Interner(Generic[T]):
    """Hands out one shared instance per value while some bucket holds it."""

    def __init__(self) -> None:
        self._shared: dict[T, T] = {}
        self._holders: dict[T, int] = {}

    def get(self, value: T) -> T:
        return self._shared.get(value, value)

    def hold(self, value: T) -> T:
        shared = self._shared.setdefault(value, value)
        self._holders[shared] = self._holders.get(shared, 0) + 1
        return shared

    def release(self, value: T) -> None:
        left = self._holders[value] - 1
        if left:
            self._holders[value] = left
        else:
            del self._holders[value]
            del self._shared[value]


class BucketBase:
    """Waiting requests that ask the same of the same workers, with a heap of the ready ones."""

    __slots__ = (
        "caps_bytes",
        "groups",
        "heap",
        "index_pairs",
        "order",
        "ready_count",
        "waiting",
    )

    def __init__(self, groups: frozenset[str], caps_bytes: int) -> None:
        self.groups = groups
        self.caps_bytes = caps_bytes
        # The pairs the queue indexes this bucket under (none for no caps).
        self.index_pairs: tuple[CapPair, ...] = ()
        self.waiting: set[Request] = set()
        # Every waiting request of the bucket, ready or not, in serving order: how many of
        # them go before a given request is a bisection (RequestQueue.ahead_in).
        self.order: SortedList[tuple[int, int]] = SortedList()
        # Lazy-deletion heap: entries whose request left, changed priority or is not ready
        # any more are dropped when they reach the top.
        self.heap: list[HeapEntry] = []
        self.ready_count = 0

    def _valid(self, entry: HeapEntry) -> bool:
        request = entry[2]
        return (
            request.state is RequestState.WAITING
            and request.ready
            and request.bucket is self
            and request.priority == entry[0]
        )

    def peek(self) -> Request | None:
        """The ready request this bucket would serve next, or None."""
        heap = self.heap
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        return heap[0][2] if heap else None

    def push(self, request: Request) -> None:
        heapq.heappush(self.heap, (request.priority, request.id, request))
        if len(self.heap) > 2 * self.ready_count + 32:
            self.heap = [entry for entry in self.heap if self._valid(entry)]
            heapq.heapify(self.heap)


class Bucket(BucketBase):
    """Waiting one-profile requests that share caps and owner groups."""

    __slots__ = ("choices", "key", "need", "required", "sig")

    def __init__(self, sig: frozenset[CapPair], groups: frozenset[str]) -> None:
        super().__init__(groups, caps_size(sig))
        self.sig = sig
        self.key: BucketKey = (sig, groups)
        self.need: Need = need_of(sig)
        # The need's parts, read in the hot loop of buckets_servable_by.
        self.required = self.need.required
        self.choices = self.need.choices


class MultiBucket(BucketBase):
    """Waiting requests of several profiles that share their profiles' caps (in order),
    owner groups and co-located groups of profiles."""

    __slots__ = ("colocated", "key", "needs", "sigs")

    def __init__(
        self,
        sigs: tuple[frozenset[CapPair], ...],
        groups: frozenset[str],
        colocated: tuple[Group, ...] = (),
    ) -> None:
        super().__init__(groups, sum(map(caps_size, sigs)))
        self.sigs = sigs
        self.colocated = colocated
        self.key: MultiKey = (sigs, groups, colocated)
        self.needs: tuple[Need, ...] = tuple(map(need_of, sigs))

    def serves(self, items: frozenset[CapPair], groups: frozenset[str]) -> bool:
        """Whether a worker with these pairs and groups could take one of its boards."""
        return groups_compatible(groups, self.groups) and any(
            need.met_by(items) for need in self.needs
        )


class RequestQueue:
    """All WAITING requests, ready or not, grouped into buckets.

    Two indexes find buckets for a worker: one of every bucket (what a worker could ever
    serve: orphans, pending reasons) and one of the buckets with a ready request (what a
    freed worker may take now), so that requests not valid yet cost a freed worker
    nothing. holders(pair) says how many registered workers hold a pair: a bucket is
    indexed under pairs few workers hold, so that few workers' events walk it."""

    def __init__(self, holders: Callable[[CapPair], int] | None = None) -> None:
        self._holders = holders or (lambda pair: 0)
        self._buckets: dict[BucketKey, Bucket] = {}
        self._by_pair: dict[CapPair, set[Bucket]] = {}
        self._no_caps: set[Bucket] = set()
        # Buckets indexed under more than one pair, which a worker may find twice.
        self._multi_indexed = 0
        # Requests of several profiles: their buckets and the index workers find them by.
        self._multis: dict[MultiKey, MultiBucket] = {}
        self._multi_by_pair: dict[CapPair, set[MultiBucket]] = {}
        self._multi_no_caps: set[MultiBucket] = set()
        # The buckets with a ready request, under the same pairs and by owner group.
        self._ready: ReadyIndex[Bucket] = ReadyIndex()
        self._ready_multis: ReadyIndex[MultiBucket] = ReadyIndex()
        self._sigs: Interner[frozenset[CapPair]] = Interner()
        self._groups: Interner[frozenset[str]] = Interner()
        self._per_owner: dict[str, int] = {}
        self._caps_bytes_per_owner: dict[str, int] = {}
        # Each owner's buckets, with how many of the owner's requests each holds: what a
        # freed worker walks grows with the number of buckets, which one user must not
        # be able to grow without bound (Policy.max_waiting_cap_sets_per_user).
        self._buckets_per_owner: dict[str, dict[BucketBase, int]] = {}
        self._size = 0
        # Buckets the lookups for a worker have looked at, ever: what tests of the cost
        # of an event count (tests/test_core_index.py).
        self.visits = 0

    def __len__(self) -> int:
        return self._size

    def waiting_of(self, owner: str) -> int:
        """How many waiting requests this owner has."""
        return self._per_owner.get(owner, 0)

    def caps_bytes_of(self, owner: str) -> int:
        """Bytes of caps this owner's waiting requests carry in all."""
        return self._caps_bytes_per_owner.get(owner, 0)

    def cap_sets_of(self, owner: str) -> int:
        """How many different buckets (caps or profiles, with owner groups) this owner's
        waiting requests are in."""
        return len(self._buckets_per_owner.get(owner, ()))

    def in_cap_set(
        self,
        owner: str,
        sigs: tuple[frozenset[CapPair], ...],
        groups: frozenset[str],
        colocated: tuple[Group, ...] = (),
    ) -> bool:
        """Whether owner has a waiting request in the bucket a request with these
        profiles' caps (one for a single-board request), groups and co-located groups
        would join."""
        bucket: BucketBase | None = (
            self._buckets.get((sigs[0], groups))
            if len(sigs) == 1
            else self._multis.get((sigs, groups, colocated))
        )
        return bucket is not None and bucket in self._buckets_per_owner.get(owner, ())

    @property
    def bucket_count(self) -> int:
        """How many buckets (one-board and several-board) there are."""
        return len(self._buckets) + len(self._multis)

    @staticmethod
    def ahead_in(bucket: BucketBase, request: Request) -> int:
        """How many waiting requests of the bucket come before this one in serving order."""
        return int(bucket.order.bisect_left((request.priority, request.id)))

    def intern(
        self, sig: frozenset[CapPair], groups: frozenset[str]
    ) -> tuple[frozenset[CapPair], frozenset[str]]:
        """Share one frozenset among requests with equal caps or groups, to save memory."""
        return self._sigs.get(sig), self._groups.get(groups)

    def intern_sig(self, sig: frozenset[CapPair]) -> frozenset[CapPair]:
        return self._sigs.get(sig)

    def add(self, request: Request) -> None:
        """Put a WAITING request into its bucket (not ready yet)."""
        self._place(request)

    def add_all(self, requests: list[Request]) -> None:
        """add() each request, ordering them all in one sort (a restore's many at once)."""
        keys: dict[BucketBase, list[tuple[int, int]]] = {}
        for request in requests:
            self._place(request, ordered=False)
            assert request.bucket is not None
            keys.setdefault(request.bucket, []).append((request.priority, request.id))
        for bucket, order in keys.items():
            bucket.order.update(order)

    def _place(self, request: Request, *, ordered: bool = True) -> None:
        if len(request.profiles) > 1:
            self._place_multi(request, ordered=ordered)
            return
        key = (request.sig, request.owner_groups)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = Bucket(self._sigs.hold(request.sig), self._groups.hold(request.owner_groups))
            self._buckets[key] = bucket
            bucket.index_pairs = self._index_pairs(bucket.need)
            self._multi_indexed += len(bucket.index_pairs) > 1
            if bucket.index_pairs:
                by_pair = self._by_pair
                for pair in bucket.index_pairs:
                    by_pair.setdefault(pair, set()).add(bucket)
            else:
                self._no_caps.add(bucket)
        self._count_in(request, bucket, ordered)

    def _place_multi(self, request: Request, *, ordered: bool) -> None:
        sigs = request.sigs
        key = (sigs, request.owner_groups, request.colocated)
        bucket = self._multis.get(key)
        if bucket is None:
            held = tuple(self._sigs.hold(sig) for sig in sigs)
            bucket = MultiBucket(held, self._groups.hold(request.owner_groups), request.colocated)
            self._multis[key] = bucket
            pairs: list[CapPair] = []
            for need in bucket.needs:
                found = self._index_pairs(need, self._multi_by_pair)
                if not found:
                    # A profile any worker meets: every worker must find the bucket.
                    pairs = []
                    break
                pairs.extend(found)
            bucket.index_pairs = tuple(dict.fromkeys(pairs))
            if bucket.index_pairs:
                for pair in bucket.index_pairs:
                    self._multi_by_pair.setdefault(pair, set()).add(bucket)
            else:
                self._multi_no_caps.add(bucket)
        self._count_in(request, bucket, ordered)

    def _count_in(self, request: Request, bucket: BucketBase, ordered: bool) -> None:
        bucket.waiting.add(request)
        if ordered:
            bucket.order.add((request.priority, request.id))
        request.bucket = bucket
        request.ready = False
        owner = request.owner
        self._per_owner[owner] = self._per_owner.get(owner, 0) + 1
        self._caps_bytes_per_owner[owner] = self.caps_bytes_of(owner) + bucket.caps_bytes
        held = self._buckets_per_owner.setdefault(owner, {})
        held[bucket] = held.get(bucket, 0) + 1
        self._size += 1

    def _index_pairs(
        self, need: Need, by_pair: Mapping[CapPair, Collection[BucketBase]] | None = None
    ) -> tuple[CapPair, ...]:
        """Pairs to index a new bucket under, one of which every worker that can serve it
        holds: those fewest registered workers hold (then fewest buckets are indexed
        under), so that few workers walk it and workers walk short lists. One required
        pair, or one pair per alternative of a choice if those are held by fewer."""
        if by_pair is None:
            by_pair = self._by_pair
        holders = self._holders

        def weight(pair: CapPair) -> tuple[int, int]:
            return holders(pair), len(by_pair.get(pair, ()))

        def rarest(pairs: frozenset[CapPair]) -> CapPair:
            return min(pairs, key=weight)

        best: tuple[CapPair, ...] = ()
        best_weight = (0, 0)
        if need.required:
            best = (rarest(need.required),)
            best_weight = weight(best[0])
        for choice in need.choices:
            pairs = tuple(dict.fromkeys(rarest(alternative) for alternative in choice))
            weights = [weight(pair) for pair in pairs]
            total = (sum(w[0] for w in weights), sum(w[1] for w in weights) + len(pairs))
            if not best or total < best_weight:
                best, best_weight = pairs, total
        return best

    def set_ready(self, request: Request, ready: bool) -> None:
        """Move a queued request into or out of its bucket's ready heap."""
        bucket = request.bucket
        assert bucket is not None
        if ready == request.ready:
            return
        request.ready = ready
        if ready:
            bucket.ready_count += 1
            bucket.push(request)
            if bucket.ready_count == 1:
                self._arm(bucket)
        else:
            self._unready(bucket)

    def _unready(self, bucket: BucketBase) -> None:
        bucket.ready_count -= 1
        if not bucket.ready_count:
            self._disarm(bucket)

    def _arm(self, bucket: BucketBase) -> None:
        """Index a bucket that has a ready request for the workers that look for one."""
        if isinstance(bucket, MultiBucket):
            self._ready_multis.add(bucket)
        else:
            assert isinstance(bucket, Bucket)
            self._ready.add(bucket)

    def _disarm(self, bucket: BucketBase) -> None:
        """Take a bucket without ready requests out of the ready index."""
        if isinstance(bucket, MultiBucket):
            self._ready_multis.remove(bucket)
        else:
            assert isinstance(bucket, Bucket)
            self._ready.remove(bucket)

    def reprioritize(self, request: Request, old_priority: int) -> None:
        """Re-order a request after its priority changed."""
        if request.bucket is None:
            return
        order = request.bucket.order
        order.remove((old_priority, request.id))
        order.add((request.priority, request.id))
        if request.ready:
            request.bucket.push(request)

    def remove(self, request: Request) -> None:
        """Take a request out of the queue (matched, closed, timed out or invalid)."""
        bucket = request.bucket
        if bucket is None:
            return
        if request.ready:
            request.ready = False
            self._unready(bucket)
        bucket.waiting.discard(request)
        bucket.order.remove((request.priority, request.id))
        request.bucket = None
        owner = request.owner
        left = self._per_owner[owner] - 1
        if left:
            self._per_owner[owner] = left
            self._caps_bytes_per_owner[owner] -= bucket.caps_bytes
        else:
            del self._per_owner[owner]
            del self._caps_bytes_per_owner[owner]
        held = self._buckets_per_owner[owner]
        if held[bucket] > 1:
            held[bucket] -= 1
        elif len(held) > 1:
            del held[bucket]
        else:
            del self._buckets_per_owner[owner]
        self._size -= 1
        if not bucket.waiting:
            if isinstance(bucket, MultiBucket):
                self._drop_multi(bucket)
                return
            assert isinstance(bucket, Bucket)
            del self._buckets[bucket.key]
            self._multi_indexed -= len(bucket.index_pairs) > 1
            for pair in bucket.index_pairs:
                _discard(self._by_pair, pair, bucket)
            if not bucket.index_pairs:
                self._no_caps.discard(bucket)
            self._sigs.release(bucket.sig)
            self._groups.release(bucket.groups)

    def _drop_multi(self, bucket: MultiBucket) -> None:
        del self._multis[bucket.key]
        for pair in bucket.index_pairs:
            _discard(self._multi_by_pair, pair, bucket)
        self._multi_no_caps.discard(bucket)
        for sig in bucket.sigs:
            self._sigs.release(sig)
        self._groups.release(bucket.groups)

    def multis_near(self, items: frozenset[CapPair], groups: frozenset[str]) -> list[MultiBucket]:
        """Buckets of several-profile requests with a ready request, indexed under one of
        these (key, item) pairs or under none, of owners a worker with these groups serves,
        each once: among them every one such a worker could take a board of now (check
        with MultiBucket.serves); none at the cost of one test when there are none."""
        if not self._multis:
            return []
        found = self._ready_multis.near(items, groups)
        self.visits += len(found)
        return list(dict.fromkeys(found))

    def multis_servable_by(
        self, items: frozenset[CapPair], groups: frozenset[str]
    ) -> list[MultiBucket]:
        """Buckets of several-profile requests (ready or not) a worker with these (key,
        item) pairs and groups could take a board of, each once."""
        if not self._multis:
            return []
        by_pair = self._multi_by_pair
        found = [b for pair in items for b in by_pair.get(pair, ())]
        found.extend(self._multi_no_caps)
        self.visits += len(found)
        return [b for b in dict.fromkeys(found) if b.serves(items, groups)]

    def _servable(
        self, found: list[Bucket], items: frozenset[CapPair], groups: frozenset[str]
    ) -> list[Bucket]:
        """The buckets found that a worker with these pairs and groups could serve, once."""
        self.visits += len(found)
        if self._multi_indexed or len(groups) > 1:
            found = list(dict.fromkeys(found))
        return [
            b
            for b in found
            if b.required <= items
            and groups_compatible(groups, b.groups)
            and (not b.choices or b.need.met_by(items))
        ]

    def buckets_servable_by(
        self, items: frozenset[CapPair], groups: frozenset[str]
    ) -> list[Bucket]:
        """Buckets whose requests (ready or not) a worker with these (key, item) pairs and
        groups could serve, each once."""
        by_pair = self._by_pair
        found = [b for pair in items for b in by_pair.get(pair, ())]
        found.extend(self._no_caps)
        return self._servable(found, items, groups)

    def ready_buckets_servable_by(
        self, items: frozenset[CapPair], groups: frozenset[str]
    ) -> list[Bucket]:
        """Buckets with a ready request that a worker with these (key, item) pairs and
        groups could serve, each once; only those of owners it serves are looked at."""
        return self._servable(self._ready.near(items, groups), items, groups)

    def best_for(self, items: frozenset[CapPair], groups: frozenset[str]) -> Request | None:
        """The ready request a worker with these (key, item) pairs and groups should serve
        next."""
        best: Request | None = None
        for bucket in self.ready_buckets_servable_by(items, groups):
            top = bucket.peek()
            if top is not None and (
                best is None or (top.priority, top.id) < (best.priority, best.id)
            ):
                best = top
        return best


class ReadyIndex(Generic[BucketT]):
    """Buckets with a ready request, under their index pairs (None: any board), all of them
    and by each owner group: a worker with groups serves only owners sharing one, so it
    looks only under its groups."""

    def __init__(self) -> None:
        self._all: dict[CapPair | None, set[BucketT]] = {}
        self._by_group: dict[tuple[CapPair | None, str], set[BucketT]] = {}

    @staticmethod
    def _keys(bucket: BucketT) -> tuple[CapPair | None, ...]:
        return bucket.index_pairs or (None,)

    def add(self, bucket: BucketT) -> None:
        for key in self._keys(bucket):
            self._all.setdefault(key, set()).add(bucket)
            for group in bucket.groups:
                self._by_group.setdefault((key, group), set()).add(bucket)

    def remove(self, bucket: BucketT) -> None:
        for key in self._keys(bucket):
            _discard(self._all, key, bucket)
            for group in bucket.groups:
                _discard(self._by_group, (key, group), bucket)

    def near(self, items: frozenset[CapPair], groups: frozenset[str]) -> list[BucketT]:
        """Buckets under one of these pairs or under none, of owners a worker with these
        groups serves (a bucket may come once per pair and group it is found under)."""
        keys = (*items, None)
        if not groups:
            everyone = self._all
            return [b for key in keys for b in everyone.get(key, ())]
        by_group = self._by_group
        return [b for key in keys for group in groups for b in by_group.get((key, group), ())]


def _discard(index: dict[K, set[B]], key: K, bucket: B) -> None:
    """Take a bucket out of one list of an index, and the list out once empty."""
    holders = index.get(key)
    if holders is not None:
        holders.discard(bucket)
        if not holders:
            del index[key]
