"""Heartbeats of boards registered together spread over the interval, never later than it."""

from __future__ import annotations

import random

from boruta_dryad.agent import HEARTBEAT_JITTER, first_heartbeat_pause, heartbeat_pause

INTERVAL = 10.0


def test_boards_registered_together_heartbeat_spread_over_the_interval() -> None:
    rng = random.Random(7)
    pauses = [first_heartbeat_pause(INTERVAL, rng) for _ in range(1000)]
    assert all(0.0 <= p <= INTERVAL for p in pauses)
    # Every tenth of the interval gets some of the 1,000 boards' first heartbeats, and
    # none gets more than twice its share: no burst.
    tenths = [0] * 10
    for p in pauses:
        tenths[min(int(p / INTERVAL * 10), 9)] += 1
    assert all(0 < n < 200 for n in tenths), tenths


def test_later_heartbeats_come_up_to_the_jitter_early_never_late() -> None:
    rng = random.Random(7)
    pauses = [heartbeat_pause(INTERVAL, 0.01, rng) for _ in range(1000)]
    assert all(INTERVAL * (1 - HEARTBEAT_JITTER) <= p <= INTERVAL for p in pauses)
    assert len(set(pauses)) > 900  # not in step


def test_heartbeats_answered_late_together_spread_again() -> None:
    """A scheduler that stalled answers the heartbeats queued meanwhile at once: those
    boards must not go on heartbeating together."""
    rng = random.Random(7)
    late = INTERVAL * HEARTBEAT_JITTER * 2
    pauses = [heartbeat_pause(INTERVAL, late, rng) for _ in range(1000)]
    assert all(0.0 <= p <= INTERVAL for p in pauses)
    assert min(pauses) < INTERVAL * 0.1 and max(pauses) > INTERVAL * 0.9
