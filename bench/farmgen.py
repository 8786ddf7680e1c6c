"""Synthetic farms for benchmarks: a mix of board types, features, groups and priorities,
with list-valued caps on some boards and alternatives and subsets in some requests."""

from __future__ import annotations

import random
from dataclasses import dataclass

BOARDS = [f"board{i}" for i in range(10)]
FEATURES = ["camera", "wifi", "hdmi", "usb3", "can"]
# A relay's circuits: a list-valued cap, of which requests ask a subset.
CIRCUITS = ["usb.pc.vcc", "handset.battery", "handset.usb", "sim"]
BOARD_ALTERNATIVES = ["board0|board1", "board2|board3", "board4|board5|board6"]
CIRCUIT_SUBSETS = ["usb.pc.vcc", "handset.battery", "usb.pc.vcc,handset.battery"]
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
        if rng.random() < 0.3:
            caps["circuits"] = ",".join(rng.sample(CIRCUITS, rng.randint(1, 3)))
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
        # Users ask for a few profiles, not for every combination: the cost of an event
        # grows with the number of distinct cap sets (docs/architecture.md), and this mix
        # keeps about 500 of them, so every scale holds them all.
        caps = {"board": rng.choice(BOARDS)}
        if rng.random() < 0.1:
            caps["board"] = rng.choice(BOARD_ALTERNATIVES)
        draw = rng.random()
        if draw < 0.3:
            caps[rng.choice(FEATURES)] = "yes"
        elif draw < 0.4:
            caps["circuits"] = rng.choice(CIRCUIT_SUBSETS)
        groups = GROUP_SETS[i % len(GROUP_SETS)]
        specs.append(RequestSpec(caps, f"user{i % 50}", groups, rng.randint(1, 16)))
    return specs
