"""Following the leader among several schedulers, shared by the client and the dryad: a
list of addresses, the one called now, and where to go after an UNAVAILABLE answer.

A standby scheduler answers every call UNAVAILABLE with the leader's address (for the same
kind of port the call came in on) in the trailing metadata key LEADER_KEY, empty when it
knows no leader. A caller then goes to that address, even one not in its list; without
one it tries the next address of its list, after a short backoff.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

# Trailing metadata of a standby's UNAVAILABLE answer: the leader's address, or "".
LEADER_KEY = "boruta-leader"
# Backoff between attempts after an UNAVAILABLE answer, in seconds.
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0
# Options of a channel to a scheduler: gRPC's own reconnect backoff (1 s, growing to 120 s)
# would make calls fail at once for that long after the scheduler came back; the caller's
# backoff paces the attempts instead.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def parse_schedulers(value: str | Iterable[str]) -> tuple[str, ...]:
    """Addresses from a comma-separated text or a list of them, blanks dropped, in order,
    each once."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(dict.fromkeys(a.strip() for a in items if a.strip()))


def leader_of(trailing: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The leader's address a standby named in an answer's trailing metadata, or ""."""
    for key, value in trailing or ():
        if key == LEADER_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


class SchedulerList:
    """The scheduler addresses a caller knows and the one it calls now (the first at start)."""

    def __init__(self, addresses: Iterable[str]) -> None:
        self.addresses = parse_schedulers(addresses)
        if not self.addresses:
            raise ValueError("no scheduler address given")
        self.current = self.addresses[0]

    def failed(self, address: str, leader: str = "") -> bool:
        """address answered UNAVAILABLE, naming leader (or not): move on to the leader, else
        to the next address of the list. True if the leader was named and is another
        address, so that it is worth calling at once."""
        if address != self.current:
            return False  # a concurrent call already moved on
        if leader and leader != address:
            self.current = leader
            return True
        if address in self.addresses:
            after = self.addresses.index(address) + 1
            self.current = self.addresses[after % len(self.addresses)]
        else:  # a leader we were sent to, now gone: start over with the list
            self.current = self.addresses[0]
        return False


class Backoff:
    """Growing, jittered pauses between attempts; reset() after a success."""

    def __init__(self, first: float = BACKOFF_FIRST, most: float = BACKOFF_MAX) -> None:
        self._first = first
        self._most = most
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._most)
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._next = self._first
