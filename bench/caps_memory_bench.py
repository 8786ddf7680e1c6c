"""Memory the core holds per waiting request whose caps no other request shares.

Each request arrives as a serialized NewRequestRequest and is parsed inside the measured
window, as the gRPC layer would: its keys and values are fresh strings, and whatever the
core keeps of them counts. `python -m bench.caps_memory_bench` measures and rewrites its
section of docs/benchmarks.md (`python -m bench` rewrites the whole file).
"""

from __future__ import annotations

import datetime
import random
import string
from collections.abc import Callable

from boruta.v1 import requests_pb2
from boruta_scheduler.core import Core, Policy

from bench.core_bench import traced_bytes
from bench.machine import machine
from bench.report import replace_section

HEADING = "## Memory per waiting request with unique caps"
T0 = 1_800_000_000.0
COUNT = 2_000
POLICY = Policy(
    default_deadline=1e9,
    max_waiting_per_user=10**9,
    max_waiting_caps_bytes_per_user=10**12,  # one user queues everything here
)
# The core before keys and values were interned and each bucket was indexed under one
# pair (commit e1a0175), measured the same way on the same machine.
BEFORE = {"largest": 26_695, "one_unique": 4_528}
BEFORE_WHEN = "2026-12-02"

Shape = Callable[[random.Random], dict[str, str]]

# The largest caps the policy allows: 32 keys of 64 characters (the same for every
# request) with values of 255 random characters.
_LONG_KEYS = [f"feature-{i:02d}-".ljust(64, "k") for i in range(32)]
# A typical farm: a board type and features shared by many requests, plus one cap that
# tells this request apart (a serial number, a build id).
_COMMON = {f"feature-{i}": "yes" * 10 for i in range(8)}


def _text(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=length))


def largest(rng: random.Random) -> dict[str, str]:
    return {key: _text(rng, 255) for key in _LONG_KEYS}


def one_unique(rng: random.Random) -> dict[str, str]:
    return {**_COMMON, "board": "board-type-" + str(rng.randrange(10)), "serial": _text(rng, 32)}


SHAPES: dict[str, tuple[str, Shape]] = {
    "largest": ("32 caps, 64-character keys, unique 255-character values", largest),
    "one_unique": (
        "10 caps, 9 shared by many requests and one unique 32-character value",
        one_unique,
    ),
}


def bytes_per_request(shape: Shape, count: int = COUNT) -> float:
    """Bytes traced per waiting request: the parsed caps and what the core builds of them."""
    rng = random.Random(5)
    wire = [
        requests_pb2.NewRequestRequest(caps=shape(rng)).SerializeToString() for _ in range(count)
    ]
    core = Core(POLICY)
    parse = requests_pb2.NewRequestRequest.FromString

    def queue_all() -> None:
        for data in wire:
            caps = dict(parse(data).caps)
            core.new_request(T0, "user", frozenset(), caps, accept_unsatisfiable=True)
        core.drain()

    held = traced_bytes(queue_all)
    assert core.waiting_count == count
    return held / count


def run() -> dict[str, float]:
    return {name: bytes_per_request(shape) for name, (_, shape) in SHAPES.items()}


def render(result: dict[str, float], when: str) -> list[str]:
    """This benchmark's section of docs/benchmarks.md."""
    lines = [
        HEADING,
        "",
        f"Measured {when} on {machine()}.",
        f"`bench/caps_memory_bench.py`: tracemalloc over {COUNT:,} waiting requests, each",
        "parsed from its NewRequest message inside the measured window (so its strings",
        "count). Before: the core as of commit e1a0175, measured the same way on",
        f"{BEFORE_WHEN}.",
        "",
        "| caps of each request | bytes per request | before |",
        "|---|---|---|",
    ]
    for name, (label, _) in SHAPES.items():
        lines.append(f"| {label} | {result[name]:,.0f} | {BEFORE[name]:,} |")
    lines += [
        "",
        "Keys and values are interned (a value that many requests share is kept once) and",
        "each group of equal waiting requests is indexed under one of its caps instead of",
        "all of them. What is left of the largest shape is mostly the unique values",
        "themselves: 32 x 255 characters.",
        "",
    ]
    return lines


def update_report(result: dict[str, float], when: str) -> None:
    """Replace this benchmark's section of the report (or add it)."""
    replace_section(HEADING, render(result, when))


def main() -> None:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    result = run()
    update_report(result, when)
    for name, value in result.items():
        print(f"{name}: {value:,.0f} bytes per waiting request")


if __name__ == "__main__":
    main()
