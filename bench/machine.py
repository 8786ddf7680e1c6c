"""The machine a benchmark ran on, for the report."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Callable
from typing import TypeVar

import grpc

Results = TypeVar("Results")


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, grpcio {grpc.__version__}"
    )


def measured(heading: str, when: str) -> list[str]:
    """A section's first lines: its heading, when and where it was measured, under what load."""
    return [
        heading,
        "",
        f"Measured {when} on {machine()}; load average {os.getloadavg()[0]:.1f} at the end.",
    ]


def print_report(run: Callable[[], Results], render: Callable[[Results, str], list[str]]) -> None:
    """Run one benchmark and print its section of docs/benchmarks.md, dated, with the machine."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = run()
    print(f"Measured {when} on {machine()}.\n")
    print("\n".join(render(results, when)))
