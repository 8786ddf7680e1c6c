"""Cost of one scheduling event in the pure core when some of the requests of several
boards keep their boards on one host: `python -m bench.together_bench` (writes its section
of docs/benchmarks.md).

multi_bench's farm, queue and events, with the workers eight to a host (dryad address)
and a third of the requests of several boards co-located on one host (half of them every
board, half the first two). A set with a group is found place by place: the hosts of the
candidates of one of the group's profiles, a matching against each host's boards
(core/together.py); its expected start (for backfill) is a bisection over the times its
candidates come free.
"""

from __future__ import annotations

import datetime
import os

from bench.machine import machine
from bench.multi_bench import MULTI_SHARE, run, table
from bench.report import replace_section

HEADING = "## Core: cost of one event with co-located sets"
HOST_SIZE = 8
COLOCATED = 1 / 3
TARGET_US = 1000.0


def render(results: list[dict[str, object]], when: str) -> list[str]:
    return [
        HEADING,
        "",
        f"Measured {when} on {machine()}; load average {os.getloadavg()[0]:.1f} at the end.",
        "`bench/together_bench.py`: the section above's farm and events, with the workers",
        f"{HOST_SIZE} to a host and {COLOCATED:.0%} of the requests of several boards (which are",
        f"{MULTI_SHARE:.0%} of all) co-located on one host, half every board, half the first two",
        "(docs/api.md, co-location). Times in microseconds; the target is a p99 under",
        f"{TARGET_US / 1000:g} ms, flat across the scales.",
        "",
        *table(results),
        "",
    ]


def main() -> None:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = run(HOST_SIZE, COLOCATED)
    replace_section(HEADING, render(results, when), before="## Memory per waiting request")
    print("\n".join(render(results, when)))


if __name__ == "__main__":
    main()
