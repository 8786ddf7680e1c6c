"""How long schedctl and `import boruta_client` take to start, each in a fresh process:
`python -m bench.startup_bench` (writes its section of docs/benchmarks.md).

A plaintext scheduler serves the one command that calls it (`requests list`); the others
never connect. Each figure is the median wall time of RUNS processes, started one by one.
"""

from __future__ import annotations

import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.grpc_bench import SCHEDULER_READY, scheduler_command, spawn
from bench.machine import measured
from bench.report import replace_section

RUNS = 11
HEADING = "## schedctl start-up"
SCHEDCTL = str(Path(sys.executable).with_name("schedctl"))
# What the heavy libraries are: loaded only by the commands that need them.
HEAVY = ("paramiko", "invoke", "cryptography", "grpc", "google")
# Before start-up was made lazy (commit 4197c3b), measured the same way on the same machine,
# each run beside one of the lazy code's (load average 5.7): median wall seconds.
BEFORE = {
    "python -c pass": 0.02,
    "python -c 'import boruta_client'": 0.49,
    "schedctl --help": 0.53,
    "schedctl requests list": 0.57,
}
BEFORE_MODULES = {
    "import boruta_client": "522 (paramiko 38, invoke 45, cryptography 56, grpc 24, google 34)",
    "schedctl --help": "549 (paramiko 38, invoke 45, cryptography 56, grpc 24, google 34)",
}
BEFORE_WHEN = "2026-12-03 12:35 UTC"
# schedctl --help as the installed script runs it, in the probe's interpreter.
HELP = "sys.argv = ['schedctl', '--help']\nfrom schedctl.main import main\nmain()"


def median_seconds(args: list[str], env: dict[str, str]) -> float:
    """Median wall time of RUNS processes running args, each to its end."""
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(args, env=env, check=True, capture_output=True, timeout=120)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def modules_after(code: str, env: dict[str, str]) -> tuple[int, dict[str, int]]:
    """Modules in sys.modules once code has run (it may exit), in all and per heavy library."""
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('\\nloaded', len(sys.modules),"
        f" *[sum(m.split('.')[0] == r for m in sys.modules) for r in {HEAVY!r}]))\n"
        f"{code}\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True
    ).stdout
    counts = [int(n) for n in out.rpartition("\nloaded ")[2].split()]
    return counts[0], dict(zip(HEAVY, counts[1:], strict=True))


def run() -> dict[str, object]:
    """Start-up times of each command, and what importing the library loads."""
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
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "python -c 'import boruta_client'": [sys.executable, "-c", "import boruta_client"],
                "schedctl --help": [SCHEDCTL, "--help"],
                "schedctl requests list": [SCHEDCTL, "requests", "list"],
            }
            seconds = {name: median_seconds(args, env) for name, args in commands.items()}
            modules = {
                "import boruta_client": modules_after("import boruta_client", env),
                "schedctl --help": modules_after(HELP, env),
            }
        finally:
            scheduler.stop()
    return {"seconds": seconds, "modules": modules}


def render(result: dict[str, object], when: str) -> list[str]:
    """This benchmark's section of docs/benchmarks.md."""
    seconds, modules = result["seconds"], result["modules"]
    assert isinstance(seconds, dict) and isinstance(modules, dict)
    rows = [f"| `{name}` | {BEFORE[name]:.2f} | {value:.2f} |" for name, value in seconds.items()]
    loaded = [
        f"| `{name}` | {BEFORE_MODULES[name]} | {total:,} "
        f"({', '.join(f'{lib} {count}' for lib, count in heavy.items())}) |"
        for name, (total, heavy) in modules.items()
    ]
    return [
        *measured(HEADING, when),
        "",
        f"`bench/startup_bench.py`: median wall time of {RUNS} fresh processes each, run one",
        "after another; `requests list` asks a plaintext scheduler on loopback with an",
        f"empty queue. Before: the code before start-up was made lazy, on {BEFORE_WHEN}.",
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
        "cryptography when it reads its certificate (a TLS context) or `schedctl pki` issues",
        "one. `tests/test_import_rules.py` and `tests/test_schedctl_e2e.py` count the modules,",
        "so that they do not come back.",
        "`tests/test_schedctl_e2e.py`, whose tests run schedctl as a subprocess for nearly",
        "every step, took 123 s before and 92 s after (one run each, load average 6). Single",
        "runs on this shared 2-core machine move by 10-20%.",
        "",
    ]


def main() -> None:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    result = run()
    lines = render(result, when)
    replace_section(HEADING, lines, before="## Reading the figures")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
