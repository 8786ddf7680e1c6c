"""How long schedctl and `import boruta_client` take to start, each in a fresh process:
`python -m bench.startup_bench` (writes its section of docs/benchmarks.md).

A plaintext scheduler serves the one command that calls it (`requests list`); the others
never connect. Each figure is the median wall time of RUNS processes. With
`--before VENV/bin` the same commands of another installation (an older checkout's venv)
run too, each beside this one's, so that both columns meet the same machine load.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.grpc_bench import SCHEDULER_READY, scheduler_command, spawn
from bench.machine import measured
from bench.report import replace_section

RUNS = 11
HEADING = "## schedctl start-up"
# What the heavy libraries are: loaded only by the commands that need them.
HEAVY = ("paramiko", "invoke", "cryptography", "grpc", "google")
# Each command as a program in a venv's bin directory and its arguments.
COMMANDS = {
    "python -c pass": ("python", "-c", "pass"),
    "python -c 'import boruta_client'": ("python", "-c", "import boruta_client"),
    "schedctl --help": ("schedctl", "--help"),
    "schedctl requests list": ("schedctl", "requests", "list"),
}
# schedctl --help as the installed script runs it, in the probe's interpreter.
HELP = "sys.argv = ['schedctl', '--help']\nfrom schedctl.main import main\nmain()"
PROBES = {"import boruta_client": "import boruta_client", "schedctl --help": HELP}
# Before start-up was made lazy (commit 4197c3b, its venv given as --before), measured in
# one run with the lazy code, each process beside one of its: median wall seconds, modules.
BEFORE = {
    "python -c pass": 0.02,
    "python -c 'import boruta_client'": 0.65,
    "schedctl --help": 0.75,
    "schedctl requests list": 0.75,
}
BEFORE_MODULES = {
    "import boruta_client": "522 (paramiko 38, invoke 45, cryptography 56, grpc 24, google 34)",
    "schedctl --help": "549 (paramiko 38, invoke 45, cryptography 56, grpc 24, google 34)",
}
BEFORE_WHEN = "2026-12-03 12:41 UTC"

Figures = dict[str, float]
# Modules in sys.modules after a probe: in all, and per heavy library.
Loaded = tuple[int, dict[str, int]]


@dataclass(frozen=True)
class Result:
    seconds: Figures
    modules: dict[str, Loaded]
    # The --before installation's, measured in the same run.
    before: tuple[Figures, dict[str, Loaded]] | None = None


def wall_seconds(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=120)
    return time.perf_counter() - start


def medians(bins: list[Path], env: dict[str, str]) -> list[Figures]:
    """Median wall time of each command for each installation, their runs interleaved."""
    times: list[dict[str, list[float]]] = [{name: [] for name in COMMANDS} for _ in bins]
    for _ in range(RUNS):
        for name, (program, *args) in COMMANDS.items():
            for at, bin_dir in zip(times, bins, strict=True):
                at[name].append(wall_seconds([str(bin_dir / program), *args], env))
    return [{name: statistics.median(runs) for name, runs in at.items()} for at in times]


def modules_after(code: str, bin_dir: Path, env: dict[str, str]) -> Loaded:
    """Modules in sys.modules once code has run in bin_dir's python (it may exit), in all and
    per heavy library."""
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('\\nloaded', len(sys.modules),"
        f" *[sum(m.split('.')[0] == r for m in sys.modules) for r in {HEAVY!r}]))\n"
        f"{code}\n"
    )
    out = subprocess.run(
        [bin_dir / "python", "-c", probe], env=env, check=True, capture_output=True, text=True
    ).stdout
    counts = [int(n) for n in out.rpartition("\nloaded ")[2].split()]
    return counts[0], dict(zip(HEAVY, counts[1:], strict=True))


def run(before: Path | None = None) -> Result:
    """Start-up times of each command (and of before's, if given), and the modules loaded."""
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        workdir = Path(tmp)
        scheduler = spawn(scheduler_command(workdir), SCHEDULER_READY, workdir / "sched.log")
        try:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("BORUTA_")},
                "BORUTA_SCHEDULER": scheduler.address,
                "BORUTA_USER": "bench",
                "HOME": str(workdir),
                "XDG_CONFIG_HOME": str(workdir / "config"),
            }
            bins = [Path(sys.executable).parent, *([before] if before else [])]
            seconds = medians(bins, env)
            modules = [
                {name: modules_after(code, bin_dir, env) for name, code in PROBES.items()}
                for bin_dir in bins
            ]
        finally:
            scheduler.stop()
    return Result(seconds[0], modules[0], (seconds[1], modules[1]) if before else None)


def counted(modules: Loaded | str) -> str:
    """Modules loaded, in all and per heavy library; a stored figure as it is."""
    if isinstance(modules, str):
        return modules
    total, heavy = modules
    return f"{total:,} ({', '.join(f'{lib} {count}' for lib, count in heavy.items())})"


def render(result: Result, when: str) -> list[str]:
    """This benchmark's section of docs/benchmarks.md."""
    before: Figures = BEFORE
    before_modules: dict[str, Loaded | str] = {**BEFORE_MODULES}
    if result.before is not None:
        before, before_modules = result.before[0], {**result.before[1]}
    rows = [
        f"| `{name}` | {before[name]:.2f} | {value:.2f} |" for name, value in result.seconds.items()
    ]
    loaded = [
        f"| `{name}` | {counted(before_modules[name])} | {counted(found)} |"
        for name, found in result.modules.items()
    ]
    measured_before = (
        "in this run, each process beside one of the code's now"
        if result.before is not None
        else f"on {BEFORE_WHEN}, each process beside one of the lazy code's"
    )
    return [
        *measured(HEADING, when),
        "",
        f"`bench/startup_bench.py`: median wall time of {RUNS} fresh processes each;",
        "`requests list` asks a plaintext scheduler on loopback with an empty queue.",
        "Before: the code before start-up was made lazy (commit 4197c3b), measured",
        f"{measured_before}.",
        "",
        "| command | before (s) | now (s) |",
        "|---|---|---|",
        *rows,
        "",
        "Modules loaded, in all and of the heavy libraries (google is protobuf):",
        "",
        "| what | before | now |",
        "|---|---|---|",
        *loaded,
        "",
        "The package loads each public name from its module on first use; schedctl loads the",
        "client (gRPC, asyncio, the generated code) when a command first calls the scheduler,",
        "PyYAML for `-o yaml`, paramiko (which loads invoke) when it opens SSH to a board, and",
        "cryptography when it needs the name in its certificate (`--mine` over TLS) or",
        "`schedctl pki` issues one. `tests/test_import_rules.py` and",
        "`tests/test_schedctl_e2e.py` count the modules, so that they do not come back.",
        "`tests/test_schedctl_e2e.py`, whose tests run",
        "schedctl as a subprocess for nearly every step, took 123 s before and 92 s after",
        "(one run each, load average 6). Single runs on this shared 2-core machine move by",
        "10-20%.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--before", type=Path, help="bin directory of another venv to measure beside this one"
    )
    args = parser.parse_args()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = render(run(args.before), when)
    # A blank line more: the section replaced runs up to the next heading.
    replace_section(HEADING, [*lines, ""], before="## Reading the figures")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
