"""Synthetic farms for benchmarks: a mix of board types, features, groups and priorities."""

from __future__ import annotations

import random
from dataclasses import dataclass

BOARDS = [f"board{i}" for i in range(10)]
FEATURES = ["camera", "wifi", "hdmi", "usb3", "can"]
GROUP_SETS: list[frozenset[str]] = [
    frozenset(),
    frozenset({"team-a"}),
    frozenset({"team-b"}),
    frozenset({"team-a", "team-b"}),
]


@dataclass(frozen=True)
class WorkerSpec:
    uuid: str
    caps: dict[str, str]
    groups: frozenset[str]


@dataclass(frozen=True)
class RequestSpec:
    caps: dict[str, str]
    owner: str
    owner_groups: frozenset[str]
    priority: int


def worker_specs(count: int, seed: int = 1) -> list[WorkerSpec]:
    rng = random.Random(seed)
    specs = []
    for i in range(count):
        caps = {"board": BOARDS[i % len(BOARDS)]}
        for feature in FEATURES:
            if rng.random() < 0.3:
                caps[feature] = "yes"
        # One worker in five belongs to a team; the rest are open to all.
        groups = (
            frozenset({rng.choice(["team-a", "team-b"])}) if rng.random() < 0.2 else frozenset()
        )
        specs.append(WorkerSpec(f"w{i:06d}", caps, groups))
    return specs


def request_specs(count: int, seed: int = 2) -> list[RequestSpec]:
    rng = random.Random(seed)
    specs = []
    for i in range(count):
        caps = {"board": rng.choice(BOARDS)}
        if rng.random() < 0.3:
            caps[rng.choice(FEATURES)] = "yes"
        groups = GROUP_SETS[i % len(GROUP_SETS)]
        specs.append(RequestSpec(caps, f"user{i % 50}", groups, rng.randint(1, 16)))
    return specs
